from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from fluxus import _demo
from fluxus.__main__ import main


@pytest.mark.timeout(60)
def test_demo_runs_a_real_service_and_summarises():
    out = io.StringIO()
    assert 0 == _demo.run(duration=1.0, failure_rate=0.5, seed=7, out=out)

    text = out.getvalue()
    assert "retry      attempt 1 failed (HTTP Error 503" in text
    served, failed = map(
        int, re.search(r"(\d+) requests, (\d+) answered 503", text).groups()
    )
    calls, ok, retries = map(
        int,
        re.search(r"(\d+) calls, (\d+) succeeded .*?, (\d+) retries", text).groups(),
    )
    assert failed > 0
    assert served == calls + retries
    assert ok >= calls - failed


@pytest.mark.timeout(60)
def test_command_line_runs_the_demo(capsys):
    assert 0 == main(["demo", "--duration", "0.3", "--failure-rate", "0"])
    assert "0 answered 503" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "param"),
    [
        (["--failure-rate", "2"], "--failure-rate"),
        (["--duration", "0"], "--duration"),
    ],
)
def test_demo_rejects_bad_options(args, param):
    result = subprocess.run(
        [sys.executable, "-m", "fluxus", "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 2 == result.returncode
    assert param in result.stderr
