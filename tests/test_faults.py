"""Faults in the real parts: Redis dies and comes back, disks fill up or turn read-only.

The policies keep the behaviour they were configured with (fail open or
closed), recover on their own, and let through no exception the docs do not
name; a dead letter that cannot be written is reported through
``on_handler_error`` while the caller sees its own exception, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fluxus
import pytest

from _faults import RedisServer, _free_port, only_captured_events
from _figures import record

# -- Redis killed and restarted -------------------------------------------------


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_every_storage_reports_an_outage_once_however_many_retries_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One rule: failed retries after the retry interval report nothing."""
    monkeypatch.setattr(fluxus._rate_limit._configured, "STORAGE_RETRY_INTERVAL", 0.02)
    dead = f"redis://127.0.0.1:{_free_port()}/0"
    name = f"retries-{uuid.uuid4().hex[:8]}"
    breaker = fluxus.circuit_breaker(
        name=name,
        storage=fluxus.CircuitRedisStorage(dead, timeout=0.2, retry_interval=0.02),
    )
    limiter = fluxus.rate_limit(10, storage=dead, name=name)
    call = fluxus.stack(limiter, breaker)(lambda: "ok")
    with only_captured_events() as events:
        outcomes = []
        for _ in range(4):
            outcomes.append(call())
            time.sleep(0.05)  # past the retry interval: the next call asks again
    kinds = Counter(type(e).__name__ for e in events)

    assert ["ok"] * 4 == outcomes
    assert (1, 1) == (
        kinds["RateLimitStorageUnavailable"],
        kinds["CircuitStorageUnavailable"],
    )


class Boom(Exception):
    """The protected function's own failure."""


def _stack(url: str, *, fail_open: bool) -> tuple[Any, Any]:
    name = f"outage-{uuid.uuid4().hex[:8]}"
    breaker = fluxus.circuit_breaker(
        3,
        60,
        name=name,
        storage=fluxus.CircuitRedisStorage(
            url, fail_open=fail_open, timeout=1.0, retry_interval=0.05
        ),
    )
    limiter = fluxus.rate_limit(10_000, storage=url, name=name, fail_open=fail_open)
    return fluxus.stack(limiter, breaker), breaker


def _run(call: Any, is_async: bool, *, fail: bool = False) -> str:
    """Call once; return the outcome's name. Anything undocumented escapes."""
    try:
        if is_async:
            asyncio.run(call(fail))
        else:
            call(fail)
    except (Boom, fluxus.CircuitOpenError, fluxus.RateLimitExceeded) as exc:
        return type(exc).__name__
    return "result"


@pytest.mark.redis
@pytest.mark.timeout(60)
@pytest.mark.parametrize("fail_open", [True, False], ids=["fail-open", "fail-closed"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_redis_killed_and_restarted_mid_run(
    tmp_path: Path, fail_open: bool, is_async: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How long a limiter leaves an unreachable storage alone (1 s by default).
    monkeypatch.setattr(fluxus._rate_limit._configured, "STORAGE_RETRY_INTERVAL", 0.05)
    with RedisServer(tmp_path) as server, only_captured_events() as events:
        policies, breaker = _stack(server.url, fail_open=fail_open)

        if is_async:

            async def work(fail: bool) -> None:
                await asyncio.sleep(0)
                if fail:
                    raise Boom

            call = policies(work)
        else:

            def work_sync(fail: bool) -> None:
                if fail:
                    raise Boom

            call = policies(work_sync)

        before = Counter(_run(call, is_async) for _ in range(20))
        server.kill()
        started = time.monotonic()
        during = Counter(_run(call, is_async) for _ in range(20))
        outage = time.monotonic() - started
        server.start()  # same port: the clients reconnect on their own
        time.sleep(0.1)  # past retry_interval: the next call asks Redis again
        after = Counter(_run(call, is_async) for _ in range(20))
        # Redis is back: the shared circuit works again, opening on failures.
        opened = [_run(call, is_async, fail=True) for _ in range(4)]
        state = breaker.state

    assert {"result": 20} == before
    if fail_open:
        assert {"result": 20} == during
    else:
        assert 20 == during["CircuitOpenError"] + during["RateLimitExceeded"]
    assert outage < 5  # each probe costs a socket timeout at most
    assert {"result": 20} == after
    assert ["Boom", "Boom", "Boom", "CircuitOpenError"] == opened
    assert fluxus.CircuitState.OPEN == state
    kinds = Counter(type(e).__name__ for e in events)
    assert (
        kinds["RateLimitStorageUnavailable"] >= 1
        or kinds["CircuitStorageUnavailable"] >= 1
    )
    assert kinds["RateLimitStorageRecovered"] + kinds["CircuitStorageRecovered"] >= 1
    record(faults_redis_killed=1, faults_calls_during_outage=20)


# -- dead letters on a full or read-only disk ---------------------------------


def _capture(sink: Any, mode: Any) -> tuple[BaseException, list[Exception], Any]:
    """Fail one call into *sink*; return what the caller saw and what was reported."""
    reported: list[Exception] = []
    original = ValueError("the caller's own failure")

    def work(payload: str) -> None:
        raise original

    fn = fluxus.dead_letter(sink, on_handler_error=reported.append)(mode.make(work))
    with pytest.raises(ValueError, match="the caller's own failure") as caught:
        # A letter larger than a page: a full disk cannot take it in the
        # slack of a page already allocated.
        mode.run(fn, "x" * 20_000)
    assert caught.value is original
    kept = any("kept this call" in n for n in getattr(original, "__notes__", ()))
    assert kept is not reported  # a note only for a letter that was written
    return caught.value, reported, fn


def test_a_full_disk_through_dev_full(mode: Any) -> None:
    _, reported, _ = _capture(fluxus.sinks.JsonlFile("/dev/full", fsync=False), mode)
    (failure,) = reported
    assert isinstance(failure, OSError)
    assert errno.ENOSPC == failure.errno
    assert "No space left on device" in str(failure)
    record(faults_disk_errors=1)


MOUNT = shutil.which("mount") or "/bin/mount"
UMOUNT = shutil.which("umount") or "/bin/umount"


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "256k") -> Iterator[Path]:
    where.mkdir()
    try:
        subprocess.run(
            [
                MOUNT,
                "-t",
                "tmpfs",
                "-o",
                f"size={size},mode=0700",
                "tmpfs",
                str(where),
            ],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield where
    finally:
        subprocess.run([UMOUNT, "-l", str(where)], check=False, timeout=10)


def _remount(where: Path, option: str) -> None:
    subprocess.run(
        [MOUNT, "-o", f"remount,{option}", str(where)],
        check=True,
        capture_output=True,
        timeout=10,
    )


SINKS = {
    "jsonl": lambda d: fluxus.sinks.JsonlFile(d / "letters.jsonl"),
    "sqlite": lambda d: fluxus.sinks.SQLite(d / "letters.db"),
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(SINKS))
def test_a_full_filesystem(tmp_path: Path, kind: str, mode: Any) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        sink = SINKS[kind](disk)
        _, reported, _ = _capture(sink, mode)
        assert [] == reported  # room for one
        filler = disk / "filler"
        with contextlib.suppress(OSError), filler.open("wb") as file:
            while True:
                file.write(b"\0" * 4096)
                file.flush()
        failures: list[Exception] = []
        for _ in range(5):
            failures += _capture(sink, mode)[1]
        assert 5 == len(failures)
        assert all(isinstance(f, OSError | Exception) for f in failures)
        assert any(
            "space" in str(f).lower() or "full" in str(f).lower() for f in failures
        ), failures
        filler.unlink()
        stored = list(sink.letters())  # the first letter is intact
        assert 1 <= len(stored)
        _capture(sink, mode)
        assert len(stored) + 1 == len(list(sink.letters()))
    record(faults_disk_errors=5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(SINKS))
def test_a_read_only_filesystem(tmp_path: Path, kind: str, mode: Any) -> None:
    with small_tmpfs(tmp_path / "disk") as disk:
        _, reported, _ = _capture(SINKS[kind](disk), mode)
        assert [] == reported
        # A read-only view of the same files (a remount would wait for the
        # writers to close them).
        view = tmp_path / "view"
        view.mkdir()
        subprocess.run([MOUNT, "--bind", str(disk), str(view)], check=True)
        try:
            _remount(view, "bind,ro")
            # The sink fails when built, not at the first letter it loses.
            with pytest.raises(OSError, match="Read-only file system"):
                SINKS[kind](view)
            assert mode is not None
            # The letter stored before is intact. (It is read through the
            # writable mount: SQLite cannot always open a WAL database on a
            # read-only mount while its writer's -shm is held elsewhere.)
            assert 1 == len(list(SINKS[kind](disk).letters()))
        finally:
            subprocess.run([UMOUNT, "-l", str(view)], check=False, timeout=10)
    record(faults_disk_errors=1)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only files")
def test_a_read_only_file(tmp_path: Path, mode: Any) -> None:
    path = tmp_path / "letters.jsonl"
    path.write_text("")
    path.chmod(0o400)
    _, reported, _ = _capture(fluxus.sinks.JsonlFile(path), mode)
    (failure,) = reported
    assert isinstance(failure, PermissionError)
    assert "letters.jsonl" in str(failure)


def test_a_record_cut_short_by_a_full_disk_is_removed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: Any
) -> None:
    sink = fluxus.sinks.JsonlFile(tmp_path / "letters.jsonl")
    _capture(sink, mode)
    before = sink.path.read_bytes()
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        if len(data) > 1000:
            return real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fluxus.sinks._jsonl.os, "write", half_then_full)
    _, reported, _ = _capture(sink, mode)
    monkeypatch.undo()
    assert [errno.ENOSPC] == [getattr(f, "errno", None) for f in reported]
    assert before == sink.path.read_bytes()
    assert 1 == len(list(sink.letters()))
