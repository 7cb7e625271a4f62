"""Security: no pickle, private files, no secret in logs, keys and URLs.

Metrics and traces (Prometheus, OpenTelemetry) get the same check with the
hooks that carry them (fluxus.instrumentation, issue 8).
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import os
import sqlite3
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fluxus
import pytest
import redis
import structlog.testing
from fluxus.backoff import constant
from fluxus.instrumentation import LoggingHook, get_hooks, set_hooks

from _faults import RedisServer, only_captured_events
from _figures import record

SOURCE = Path(fluxus.__file__).parent
SECRET = f"s3cr3t-{uuid.uuid4().hex}"
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill"}


class Boom(Exception):
    """A failure whose message holds no argument."""


def test_no_module_of_fluxus_imports_pickle_marshal_or_shelve() -> None:
    found = []
    modules = sorted(SOURCE.rglob("*.py"))
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in {
                "__import__",
                "import_module",
            }:
                names = [getattr(a, "value", "") for a in node.args[:1]]
            else:
                continue
            found += [
                f"{path.relative_to(SOURCE)}:{node.lineno} {name}"
                for name in names
                if str(name).split(".")[0] in FORBIDDEN_MODULES
            ]
    assert [] == found
    assert len(modules) > 20  # the scan saw the package


@pytest.mark.parametrize("kind", ["jsonl", "sqlite"])
def test_dead_letter_files_are_private_whatever_the_umask(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / ("letters.jsonl" if kind == "jsonl" else "letters.db")
    sink = (
        fluxus.sinks.JsonlFile(path) if kind == "jsonl" else fluxus.sinks.SQLite(path)
    )

    @fluxus.dead_letter(sink)
    def fail() -> None:
        raise Boom

    previous = os.umask(0)
    try:
        with pytest.raises(Boom):
            fail()
    finally:
        os.umask(previous)
    created = sorted(p for p in tmp_path.iterdir() if p.name.startswith("letters"))
    assert created
    modes = {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in created}
    assert {p.name: "0o600" for p in created} == modes


# -- arguments never in logs ------------------------------------------------


def _every_decision(is_async: bool) -> Iterator[Callable[..., Any]]:
    """Yield functions whose calls with the secret make every policy decide."""
    limiter = fluxus.rate_limit(1, burst=1, name=f"sec-{uuid.uuid4().hex}")
    breaker = fluxus.circuit_breaker(1, 60)
    sink = fluxus.sinks.Memory()

    def broken_sink(letter: Any) -> None:
        raise OSError(28, "No space left on device")

    policies = [
        fluxus.retry(2, backoff=constant(0)),
        fluxus.retry(3, budget=fluxus.RetryBudget(0.0, 0.0)),
        breaker,  # opens: state changed
        breaker,  # rejects
        limiter,
        limiter,  # rate limited
        fluxus.timeout(0.01),
        fluxus.dead_letter(sink),
        fluxus.dead_letter(broken_sink),
    ]
    for policy in policies:
        if isinstance(policy, fluxus.Timeout):
            if is_async:

                async def slow(*args: Any, **kwargs: Any) -> None:
                    await asyncio.sleep(1)

                yield policy(slow)
            else:

                def slow_sync(*args: Any, **kwargs: Any) -> None:
                    import time

                    time.sleep(0.2)

                yield policy(slow_sync)
            continue
        if is_async:

            async def fail(*args: Any, **kwargs: Any) -> None:
                await asyncio.sleep(0)
                raise Boom("the call failed")

            yield policy(fail)
        else:

            def fail_sync(*args: Any, **kwargs: Any) -> None:
                raise Boom("the call failed")

            yield policy(fail_sync)


def _call_all(is_async: bool) -> int:
    calls = 0
    for func in _every_decision(is_async):
        calls += 1
        with contextlib.suppress(Exception):
            if is_async:
                asyncio.run(func(SECRET, 42, token=SECRET, password=SECRET))
            else:
                func(SECRET, 42, token=SECRET, password=SECRET)
    return calls


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_no_event_log_holds_an_argument(
    is_async: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with only_captured_events() as events:
        _call_all(is_async)
    kinds = {type(e).__name__ for e in events}
    expected = {
        "RetryScheduled",
        "RetriesExhausted",
        "CircuitStateChanged",
        "CircuitRejected",
        "RateLimited",
        "TimedOut",
        "DeadLettered",
        "DeadLetterHandlerFailed",
    }
    assert expected <= kinds
    assert [] == [e for e in events if SECRET in repr(e)]

    with structlog.testing.capture_logs() as logs:
        _call_all(is_async)
    assert len(logs) >= len(expected)
    assert [] == [entry for entry in logs if SECRET in repr(entry)]

    previous = get_hooks()
    set_hooks([LoggingHook()])
    try:
        with caplog.at_level(logging.DEBUG):
            _call_all(is_async)
    finally:
        set_hooks(previous)
    assert len(caplog.records) >= len(expected)
    assert SECRET not in caplog.text
    assert [] == [r for r in caplog.records if SECRET in repr(r.__dict__)]
    record(security_log_records_checked=len(logs) + len(caplog.records) + len(events))


# -- redaction in every sink --------------------------------------------------


def _sinks(
    tmp_path: Path, redis_url: str | None
) -> Iterator[tuple[Any, Callable[[], str]]]:
    """Yield (sink, raw) pairs: raw() returns everything the sink stored."""
    memory = fluxus.sinks.Memory()
    yield memory, lambda: repr(list(memory.letters()))
    jsonl = fluxus.sinks.JsonlFile(tmp_path / "letters.jsonl")
    yield jsonl, (tmp_path / "letters.jsonl").read_text
    db = tmp_path / "letters.db"
    lite = fluxus.sinks.SQLite(db)
    yield (
        lite,
        lambda: (
            db.read_bytes().decode("latin-1")
            + "".join(
                str(row)
                for row in sqlite3.connect(db).execute(f"select * from {lite.table}")  # noqa: S608 - the sink's own table
            )
        ),
    )
    if redis_url is not None:
        stream = f"sec:{uuid.uuid4().hex}"
        sink = fluxus.sinks.RedisStream(redis_url, stream=stream)
        yield sink, lambda: repr(redis.Redis.from_url(redis_url).xrange(stream))


@pytest.mark.parametrize("include_args", [False, True])
def test_the_log_sink_honours_redaction(
    include_args: bool, caplog: pytest.LogCaptureFixture
) -> None:
    @fluxus.dead_letter(
        fluxus.sinks.Log(include_args=include_args), redact=["token", "password"]
    )
    def fail(user: str, token: str, *, password: str) -> None:
        raise Boom

    with caplog.at_level(logging.ERROR), pytest.raises(Boom):
        fail("alice", SECRET, password=SECRET)
    assert ("alice" in caplog.text) is include_args
    assert SECRET not in caplog.text


@pytest.mark.redis
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_every_storing_sink_honours_redaction(
    tmp_path: Path, redis_url: str, is_async: bool
) -> None:
    checked = 0
    for sink, raw in _sinks(tmp_path, redis_url):
        policy = fluxus.dead_letter(sink, redact=["token", "password"])
        if is_async:

            @policy
            async def fail(user: str, token: str, *, password: str) -> None:
                raise Boom

            with pytest.raises(Boom):
                asyncio.run(fail("alice", SECRET, password=SECRET))
        else:

            @policy
            def fail_sync(user: str, token: str, *, password: str) -> None:
                raise Boom

            with pytest.raises(Boom):
                fail_sync("alice", SECRET, password=SECRET)
        stored = raw()
        assert "alice" in stored, sink
        assert SECRET not in stored, sink
        [letter] = list(sink.letters())
        assert ("alice", "<redacted>") == letter.args
        assert {"password": "<redacted>"} == letter.kwargs
        checked += 1
    assert 4 == checked


# -- Redis: keys namespaced, passwords never shown -----------------------------


@pytest.mark.redis
def test_every_redis_key_starts_with_the_configured_prefix(tmp_path: Path) -> None:
    with RedisServer(tmp_path) as server:
        url = server.url
        storage = fluxus.CircuitRedisStorage(url, prefix="acme:cb")
        windows = fluxus.rate_limit("50/second", key_prefix="acme:rlw", storage=url)
        stacked = fluxus.stack(
            fluxus.dead_letter(fluxus.sinks.RedisStream(url, stream="acme:dlq")),
            fluxus.rate_limit(5, key_prefix="acme:rl", storage=url, name="svc"),
            fluxus.circuit_breaker(1, 60, name="svc", storage=storage),
        )

        def fail(n: int) -> None:
            raise Boom

        async def afail(n: int) -> None:
            raise Boom

        for protect in (stacked, windows):
            sync_call, async_call = protect(fail), protect(afail)
            for n in range(8):
                with pytest.raises((fluxus.FluxusError, Boom)):
                    sync_call(n)
                with pytest.raises((fluxus.FluxusError, Boom)):
                    asyncio.run(async_call(n))
        keys = sorted(k.decode() for k in redis.Redis.from_url(url).scan_iter("*"))
    assert keys  # something was stored
    assert [] == [k for k in keys if not k.startswith("acme:")]
    prefixes = {k.split(":")[1] for k in keys}
    assert {"cb", "rl", "rlw", "dlq"} == prefixes
    record(security_redis_keys_checked=len(keys))


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_redis_password_is_never_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    shown: list[str] = []
    with RedisServer(tmp_path, password=password) as server:
        url = server.url
        storage = fluxus.CircuitRedisStorage(url, timeout=0.2, retry_interval=0)
        breaker = fluxus.circuit_breaker(1, 60, name="pw", storage=storage)
        limiter = fluxus.rate_limit(5, storage=url, name="pw")
        stream = fluxus.sinks.RedisStream(url, stream="pw:dlq")
        shown += [repr(storage), repr(breaker), repr(limiter), repr(stream)]
        shown += [str(limiter.storage), storage.description, stream.url]

        @fluxus.stack(fluxus.dead_letter(stream), limiter, breaker)
        def fail() -> None:
            raise Boom

        with pytest.raises(Boom):
            fail()
        cli = [sys.executable, "-m", "fluxus", "dlq"]
        for command in (["list"], ["show", "x"], ["purge", "--yes"]):
            done = subprocess.run(
                [*cli, command[0], url, "--stream", "pw:dlq", *command[1:]],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            shown += [done.stdout, done.stderr]
        wrong = url.replace(str(server.port), str(server.port + 1))
        # Unreachable: the errors, events and logs name the URL.
        with only_captured_events() as events, caplog.at_level(logging.DEBUG):
            down = fluxus.stack(
                fluxus.rate_limit(5, storage=wrong, name="pw2"),
                fluxus.circuit_breaker(
                    1,
                    60,
                    name="pw2",
                    storage=fluxus.CircuitRedisStorage(wrong, timeout=0.2),
                ),
            )(lambda: None)
            down()
            for bad in (f"{wrong}?db=nope", wrong.replace("redis://", "redis://x")):
                for factory in (
                    fluxus.CircuitRedisStorage,
                    lambda u: fluxus.rate_limit(5, storage=u),
                ):
                    try:
                        factory(bad)
                    except Exception as exc:
                        shown.append(f"{exc!r} {exc}")
            bad_cli = subprocess.run(
                [*cli, "list", wrong, "--stream", "pw:dlq"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        shown += [bad_cli.stdout, bad_cli.stderr]
        shown += [repr(e) for e in events] + [caplog.text]
    assert any("***" in text for text in shown)
    assert [] == [text for text in shown if password in text]
    assert {"RateLimitStorageUnavailable", "CircuitStorageUnavailable"} <= {
        type(e).__name__ for e in events
    }
