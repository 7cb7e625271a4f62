from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.timeout(90)
def test_demo_runs_a_real_service_and_summarises():
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "fluxus",
            "demo",
            "--duration",
            "1.5",
            "--seed",
            "7",
            "--failure-rate",
            "0.5",
        ],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )

    assert 0 == result.returncode, result.stderr
    out = result.stdout
    assert "retry      attempt 1 failed (HTTP Error 503" in out
    served, failed = map(
        int, re.search(r"(\d+) requests, (\d+) answered 503", out).groups()
    )
    calls, ok, retries = map(
        int, re.search(r"(\d+) calls, (\d+) succeeded .*?, (\d+) retries", out).groups()
    )
    assert failed > 0
    assert served == calls + retries
    assert ok >= calls - failed


def test_demo_rejects_bad_options():
    result = subprocess.run(
        [sys.executable, "-m", "fluxus", "demo", "--failure-rate", "2"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 2 == result.returncode
    assert "--failure-rate" in result.stderr
