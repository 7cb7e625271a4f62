from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from fluxus import _demo
from fluxus.__main__ import main
from fluxus._redis import mask_password
from fluxus.sinks import JsonlFile


def numbers(pattern, text):
    return [int(n) for n in re.search(pattern, text).groups()]


@pytest.mark.timeout(90)
def test_demo_end_to_end_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-W",
            "error",
            "-m",
            "fluxus",
            "demo",
            "--duration",
            "4",
            "--seed",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
        cwd=tmp_path,
        # The demo keeps its letters in a new temporary folder for the user
        # to replay: make that folder one pytest cleans up.
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )

    assert 0 == result.returncode, result.stderr
    out = result.stdout
    for phase in ("healthy", "slow", "down", "throttling"):
        assert f"service is {phase}" in out
    assert "circuit closed -> open" in out
    (retries,) = numbers(r"retry\s+(\d+) retries", out)
    (changes, refused) = numbers(r"(\d+) state changes, (\d+) calls refused", out)
    (kept,) = numbers(r"dead letter\s+(\d+) failed calls kept", out)
    (throttled,) = numbers(r"rate limit\s+(\d+) calls throttled", out)
    assert retries > 0
    assert changes >= 1
    assert throttled > 0  # the clients rush past the burst now and then
    path = re.search(r"kept in (\S+)", out).group(1)
    assert tmp_path == Path(path).parent.parent
    assert kept == len(list(JsonlFile(path).letters()))
    assert kept >= refused
    assert "fluxus's own rejections" in out
    assert "should_dlq=lambda e: not fluxus.is_rejection(e)" in out

    command = re.search(r"python -m fluxus (dlq replay .+)", out).group(1)
    argv = shlex.split(command)
    replayed = subprocess.run(
        [sys.executable, "-m", "fluxus", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert (0, f"replayed {kept}, failed 0 (kept), skipped 0 (kept)\n") == (
        replayed.returncode,
        replayed.stdout,
    ), replayed.stderr
    assert [] == list(JsonlFile(path).letters())
    (answered,) = numbers(r"fallback\s+(\d+) failed calls answered", out)
    assert kept == answered  # every failure kept AND answered from the cache
    (_, limit) = numbers(
        r"bulkhead\s+(\d+) calls refused, at most (\d+) ran at once", out
    )
    assert 2 == limit
    (backups, won) = numbers(
        r"hedge\s+(\d+) backup calls raced stragglers, (\d+) won", out
    )
    assert won <= backups


@pytest.mark.timeout(60)
def test_demo_in_process_keeps_letters_where_it_says(tmp_path):
    out = io.StringIO()
    assert 0 == _demo.run(duration=2.0, seed=1, out=out, directory=tmp_path)

    text = out.getvalue()
    assert f"kept in {tmp_path / 'dead-letters.jsonl'}" in text
    assert "state in memory" in text


@pytest.mark.timeout(60)
def test_demo_shares_state_through_redis(redis_url, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert 0 == main(["demo", "--duration", "1.5", "--redis", redis_url])
    out = capsys.readouterr().out
    assert f"kept in {tmp_path}{os.sep}fluxus-demo-" in out
    assert "state in Redis at redis://127.0.0.1:" in out


def test_the_redis_password_is_never_shown():
    assert "redis://:***@db:6379/0" == mask_password("redis://:s3cret@db:6379/0")
    assert "redis://db:6379/0" == mask_password("redis://db:6379/0")


@pytest.mark.parametrize(
    ("args", "param"),
    [(["--duration", "0"], "--duration"), (["--duration", "x"], "--duration")],
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
