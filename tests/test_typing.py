"""mypy --strict sees the original parameters and return types."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_mypy_strict_accepts_the_typing_checks():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            str(HERE / "typing" / "check_decorators.py"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=290,
    )
    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_mypy_rejects_a_wrong_call(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import fluxus\n"
        "@fluxus.retry()\n"
        "def f(x: int) -> int:\n"
        "    return x\n"
        "f('not an int')\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(bad)],
        capture_output=True,
        text=True,
        check=False,
        timeout=290,
    )
    assert 1 == result.returncode
    assert 'incompatible type "str"; expected "int"' in result.stdout
