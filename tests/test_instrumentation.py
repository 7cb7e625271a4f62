from __future__ import annotations

import logging

import fluxus
import pytest
import structlog
from fluxus.instrumentation import (
    LoggingHook,
    RetryScheduled,
    StructlogHook,
    add_hook,
    get_hooks,
    remove_hook,
    set_hooks,
)


@pytest.fixture(autouse=True)
def default_hooks():
    set_hooks(None)
    yield
    set_hooks(None)


def fail_twice():
    state = {"n": 0}

    def fn(secret):
        state["n"] += 1
        if state["n"] <= 2:
            raise OSError("upstream said no")
        return "ok"

    return fn


def test_structlog_is_the_default():
    (hook,) = get_hooks()
    assert isinstance(hook, StructlogHook)


def test_events_reach_structlog_without_arguments(instant):
    fn = fluxus.retry(3, name="billing")(fail_twice())

    with structlog.testing.capture_logs() as logs:
        assert "ok" == fn("hunter2")

    assert ["fluxus.retry_scheduled"] * 2 == [log["event"] for log in logs]
    assert {
        "event": "fluxus.retry_scheduled",
        "log_level": "warning",
        "policy": "billing",
        "function": fn.__wrapped__.__module__ + "." + fn.__wrapped__.__qualname__,
        "attempt": 1,
        "delay": 0.0,
        "error_type": "builtins.OSError",
        "error_message": "upstream said no",
    } == logs[0]
    assert "hunter2" not in repr(logs)


def test_structlog_context_is_kept(instant):
    fn = fluxus.retry(2)(fail_twice())
    structlog.contextvars.bind_contextvars(request_id="r-1")
    try:
        with (
            structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]
            ) as logs,
            pytest.raises(OSError),
        ):
            fn("x")
    finally:
        structlog.contextvars.clear_contextvars()

    assert {"r-1"} == {log["request_id"] for log in logs}
    assert ["fluxus.retry_scheduled", "fluxus.retries_exhausted"] == [
        log["event"] for log in logs
    ]


def test_logging_hook(caplog, instant):
    set_hooks([LoggingHook()])
    fn = fluxus.retry(2, name="db")(fail_twice())

    with caplog.at_level(logging.INFO, logger="fluxus"), pytest.raises(OSError):
        fn("x")

    assert [logging.WARNING, logging.ERROR] == [r.levelno for r in caplog.records]
    assert "fluxus.retry_scheduled" in caplog.records[0].getMessage()
    assert "db" == caplog.records[0].fluxus_event["policy"]


def test_user_hooks_are_added_and_removed(instant):
    seen = []
    add_hook(seen.append)
    fn = fluxus.retry(3)(fail_twice())
    fn("x")
    remove_hook(seen.append)
    remove_hook(seen.append)  # removing twice is harmless
    fn2 = fluxus.retry(3)(fail_twice())
    fn2("x")

    assert 2 == len(seen)
    assert all(isinstance(e, RetryScheduled) for e in seen)


def test_a_failing_hook_never_breaks_the_call_and_is_reported_once(caplog, instant):
    def broken(event):
        raise RuntimeError("hook bug")

    set_hooks([broken])
    fn = fluxus.retry(3)(fail_twice())

    with caplog.at_level(logging.ERROR, logger="fluxus"):
        assert "ok" == fn("x")

    assert 1 == len(caplog.records)
    assert "broken" in caplog.records[0].getMessage()


@pytest.mark.parametrize("bad", [3, [None]])
def test_hooks_must_be_callable(bad):
    with pytest.raises(TypeError, match="hook"):
        if isinstance(bad, list):
            set_hooks(bad)
        else:
            add_hook(bad)
