"""fluxus.contrib.django as an installed app: system checks and ``fluxus_dlq``."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import fluxus
import pytest

import _django_project  # noqa: F401 - configures Django first

# isort: split
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test.utils import override_settings

pytestmark = pytest.mark.timeout(60)

OURS = "fluxus.contrib.django.FluxusMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check() -> str:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("check", stdout=out, stderr=err)
    except SystemCheckError as exc:
        return str(exc)
    return out.getvalue() + err.getvalue()


def test_the_project_passes_its_checks() -> None:
    assert "no issues" in check()


@pytest.mark.parametrize(
    ("setting", "value", "code"),
    [
        ("FLUXUS_STORAGE_URI", "redis//typo", "fluxus.E001"),
        ("FLUXUS_STORAGE_URI", "nosuch://host", "fluxus.E001"),
        ("FLUXUS_STORAGE_URI", 6379, "fluxus.E001"),
        ("FLUXUS_TRUSTED_PROXIES", ["10.0.0.1/8"], "fluxus.E002"),
        ("FLUXUS_RESOLVE_USER", "yes", "fluxus.E003"),
    ],
)
def test_a_bad_setting_is_flagged_by_check(
    setting: str, value: object, code: str
) -> None:
    with override_settings(**{setting: value}):
        report = check()
    assert code in report
    shown = value[0] if isinstance(value, list) else value
    assert repr(shown) in report


def test_resolve_user_needs_the_middleware_after_authentication() -> None:
    with override_settings(FLUXUS_RESOLVE_USER=True, MIDDLEWARE=[OURS, AUTH]):
        wrong = check()
    assert "fluxus.E004" in wrong
    assert "comes after it" in wrong
    with override_settings(FLUXUS_RESOLVE_USER=True, MIDDLEWARE=[OURS]):
        missing = check()
    assert "fluxus.E004" in missing
    assert "is missing" in missing
    with override_settings(
        FLUXUS_RESOLVE_USER=True, MIDDLEWARE=[AUTH, "no.such.Middleware", OURS]
    ):
        assert "fluxus.E004" not in check()


def test_a_project_without_the_middleware_is_warned() -> None:
    with override_settings(MIDDLEWARE=[]):
        report = check()
    assert "fluxus.W001" in report


def store_with_one_letter(tmp_path: Path) -> Path:
    sink = fluxus.sinks.JsonlFile(tmp_path / "failed.jsonl")

    @fluxus.dead_letter(sink)
    def submit(order: int) -> None:
        raise ConnectionError(order)

    with pytest.raises(ConnectionError):
        submit(42)
    return tmp_path / "failed.jsonl"


def test_fluxus_dlq_through_call_command(tmp_path: Path) -> None:
    store = store_with_one_letter(tmp_path)
    out = io.StringIO()
    call_command("fluxus_dlq", "list", str(store), stdout=out)
    assert "submit" in out.getvalue()
    assert "ConnectionError" in out.getvalue()
    out = io.StringIO()
    call_command("fluxus_dlq", "list", str(store), "--json", stdout=out)
    assert '"function"' in out.getvalue()
    with pytest.raises(CommandError, match="status 2"):
        call_command(
            "fluxus_dlq",
            "list",
            str(tmp_path / "missing" / "x.db"),
            stderr=io.StringIO(),
        )
    with pytest.raises(CommandError, match="invalid choice"):
        call_command("fluxus_dlq", "frobnicate", str(store))


# Three Django processes, each importing Django and fluxus: on a busy machine
# each can take well over the suite's 60 s default spread over three.
@pytest.mark.timeout(240)
def test_fluxus_dlq_through_manage_py(tmp_path: Path) -> None:
    store = store_with_one_letter(tmp_path)
    (tmp_path / "dlq_settings.py").write_text(
        "SECRET_KEY = 'x'\nINSTALLED_APPS = ['fluxus.contrib.django']\nUSE_TZ = True\n"
    )
    (tmp_path / "manage.py").write_text(
        "import sys\nfrom django.core.management import execute_from_command_line\n"
        "execute_from_command_line(sys.argv)\n"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dlq_settings",
        "PYTHONPATH": str(tmp_path),
    }

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "fluxus_dlq", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    listed = manage("list", str(store))
    assert listed.returncode == 0, listed.stderr
    assert "submit" in listed.stdout
    helped = manage("--help")
    assert helped.returncode == 0
    for subcommand in ("list", "show", "replay", "purge"):
        assert subcommand in helped.stdout
    assert "manage.py fluxus_dlq" in helped.stdout
    purged = manage("purge", str(store), "--yes")
    assert purged.returncode == 0, purged.stderr
    assert manage("list", str(store)).stdout.strip().endswith("0 letters") or (
        "submit" not in manage("list", str(store)).stdout
    )
    bad = manage("list", str(tmp_path / "missing" / "x.db"))
    assert bad.returncode == 2
    assert "error:" in bad.stderr
