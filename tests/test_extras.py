"""A missing extra is one ImportError naming it, raised on import.

Each case runs in a fresh interpreter in which the third-party package is
made unimportable (``sys.modules[name] = None``), never by uninstalling it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import fluxus
import pytest
from fluxus._extras import PACKAGES, missing_extra, require

PROGRAM = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
import fluxus  # never needs an extra
try:
    import {module}
except ImportError as exc:
    print(type(exc).__name__, exc)
    print(type(exc.__cause__).__name__)
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("module", "blocked", "message"),
    [
        (
            "fluxus.contrib.flask",
            ["flask"],
            "fluxus.contrib.flask needs Flask: pip install 'fluxus[flask]'",
        ),
        (
            "fluxus.contrib.flask",
            ["werkzeug"],
            "fluxus.contrib.flask needs Flask: pip install 'fluxus[flask]'",
        ),
        (
            "fluxus.contrib.django",
            ["django"],
            "fluxus.contrib.django needs Django: pip install 'fluxus[django]'",
        ),
        (
            "fluxus.contrib.django",
            ["asgiref"],
            "fluxus.contrib.django needs Django: pip install 'fluxus[django]'",
        ),
        (
            "fluxus.contrib.starlette",
            ["starlette"],
            "fluxus.contrib.starlette needs Starlette: pip install 'fluxus[fastapi]'",
        ),
        (
            "fluxus.instrumentation.prometheus",
            ["prometheus_client"],
            (
                "fluxus.instrumentation.prometheus needs prometheus-client: "
                "pip install 'fluxus[prometheus]'"
            ),
        ),
        (
            "fluxus.instrumentation.otel",
            ["opentelemetry"],
            (
                "fluxus.instrumentation.otel needs opentelemetry-api: "
                "pip install 'fluxus[otel]'"
            ),
        ),
    ],
)
def test_importing_an_integration_without_its_extra_names_the_extra(
    module, blocked, message
):
    done = subprocess.run(
        [sys.executable, "-c", PROGRAM.format(module=module, blocked=blocked)],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )

    assert [f"ImportError {message}", "ModuleNotFoundError"] == (
        done.stdout.splitlines()
    ), done.stderr


def test_each_integration_imports_with_its_extra():
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import fluxus.contrib.django, fluxus.contrib.flask
                import fluxus.contrib.starlette
                import fluxus.instrumentation.otel, fluxus.instrumentation.prometheus
                """
            ),
        ],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )

    assert (0, "") == (done.returncode, done.stderr)


def test_require_returns_the_module():
    assert fluxus is require("fluxus", "redis", "a Redis storage")


def test_require_names_the_extra_and_keeps_the_cause():
    with pytest.raises(ImportError) as caught:
        require("fluxus_has_no_such_module", "redis", "a Redis rate limit storage")

    assert "a Redis rate limit storage needs redis: pip install 'fluxus[redis]'" == str(
        caught.value
    )
    assert isinstance(caught.value.__cause__, ModuleNotFoundError)


def test_every_extra_declared_in_the_project_is_known():
    import tomllib
    from pathlib import Path

    project = tomllib.loads(
        (Path(__file__).parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    )["project"]
    declared = set(project["optional-dependencies"])
    helpers = {"test", "typing", "lint", "bench", "docs"}

    assert set(PACKAGES) - {"trio"} <= declared
    assert declared - helpers - {"trio"} <= set(PACKAGES)
    assert str(missing_extra("x", "otel")).endswith("pip install 'fluxus[otel]'")
