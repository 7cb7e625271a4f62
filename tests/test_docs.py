"""Every Python block of the README and of docs/ runs as written.

Each docs page runs in an interpreter of its own, its blocks in order in one
namespace (a page builds on its earlier blocks); each README block runs
alone in a fresh interpreter, as a reader pasting it would. Pages run in a
temporary directory (the files they write land there) with warnings as
errors; a page that talks to Redis finds the tests' loopback redis-server
in ``FLUXUS_REDIS_URL``, as the page says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_docs_runner.py"
PAGES = sorted((ROOT / "docs").rglob("*.rst"))


def _run(
    page: Path, tmp_path: Path, request: pytest.FixtureRequest, *flags: str
) -> None:
    env = dict(os.environ)
    if "FLUXUS_REDIS_URL" in page.read_text(encoding="utf-8"):
        env["FLUXUS_REDIS_URL"] = request.getfixturevalue("redis_url")
    env.pop("FLUXUS_STORAGE_URI", None)
    done = subprocess.run(
        [sys.executable, str(RUNNER), str(page), *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_docs_pages_exist():
    names = {page.relative_to(ROOT / "docs").as_posix() for page in PAGES}
    assert {"index.rst", "tutorial.rst", "design.rst"} <= names
    assert any(name.startswith("policies/") for name in names)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_docs_page_runs(page: Path, tmp_path: Path, request: pytest.FixtureRequest):
    _run(page, tmp_path, request)


@pytest.mark.timeout(300)
def test_readme_blocks_run_alone(tmp_path: Path, request: pytest.FixtureRequest):
    _run(ROOT / "README.rst", tmp_path, request, "--fresh")


def test_a_failing_block_fails_the_page(tmp_path: Path, request: pytest.FixtureRequest):
    page = tmp_path / "broken.rst"
    page.write_text(
        "Title\n=====\n\n.. code-block:: python\n\n   x = 1\n\n"
        ".. code-block:: python\n\n   assert x == 2\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match=r"broken.rst:8: this block failed"):
        _run(page, tmp_path, request)


def test_a_configuration_block_is_compiled_not_run(
    tmp_path: Path, request: pytest.FixtureRequest
):
    page = tmp_path / "settings.rst"
    page.write_text(
        "Title\n=====\n\n.. code-block:: python\n   :class: configuration\n\n"
        "   from a_project_not_here import settings\n   APPS = [..., 'x']\n",
        encoding="utf-8",
    )
    _run(page, tmp_path, request)
    _run(page, tmp_path, request, "--fresh")
    page.write_text(
        "Title\n=====\n\n.. code-block:: python\n   :class: configuration\n\n"
        "   APPS = [\n",
        encoding="utf-8",
    )
    with pytest.raises(AssertionError, match=r"settings.rst:4: this block"):
        _run(page, tmp_path, request)
    with pytest.raises(AssertionError, match=r"settings.rst:4: this block"):
        _run(page, tmp_path, request, "--fresh")


def test_readme_gives_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    commands = [
        line.strip()
        for line in readme.splitlines()
        if line.strip().startswith("python3 -m venv")
    ]
    assert len(commands) == 2
    assert commands[0].endswith("python -m fluxus demo")
    assert commands[1] in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
