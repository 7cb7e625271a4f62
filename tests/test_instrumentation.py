from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import textwrap

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


def test_stdlib_logging_when_structlog_is_not_configured(caplog, instant):
    fn = fluxus.retry(2, name="plain")(fail_twice())
    structlog.reset_defaults()
    assert not structlog.is_configured()

    with caplog.at_level(logging.INFO, logger="fluxus"), pytest.raises(OSError):
        fn("x")

    assert ["fluxus.retry_scheduled", "fluxus.retries_exhausted"] == [
        r.getMessage().split()[0] for r in caplog.records
    ]
    assert "plain" == caplog.records[0].fluxus_event["policy"]


#: Retries, a breaker opening and rejecting, a rate limit, a timeout and a
#: dead letter, in a program that configures neither structlog nor logging.
NOISY_PROGRAM = """
import contextlib, threading
import fluxus

def fail():
    raise OSError("upstream said no")

def slow():
    threading.Event().wait(2.0)

calls = [
    fluxus.retry(3, name="re")(fail),
    fluxus.circuit_breaker(1, 60.0, name="cb")(fail),
    fluxus.rate_limit("1/minute", name="rl")(lambda: None),
    fluxus.timeout(0.01, name="to")(slow),
    fluxus.dead_letter(fluxus.sinks.Memory(), name="dl")(fail),
]
for fn in calls:
    for _ in range(2):
        with contextlib.suppress(Exception):
            fn()
"""


def run_program(prelude=""):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prelude) + NOISY_PROGRAM],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )


def test_events_never_reach_stdout_when_nothing_is_configured():
    done = run_program()

    assert "" == done.stdout
    # Python's last-resort handler: warnings and errors on stderr.
    for kind in (
        "retry_scheduled",
        "retries_exhausted",
        "circuit_state_changed",
        "rate_limited",
        "timed_out",
        "dead_lettered",
    ):
        assert f"fluxus.{kind} " in done.stderr
    assert "fluxus.circuit_rejected" not in done.stderr  # info


def test_the_applications_logging_configuration_decides():
    done = run_program(
        """
        import logging, sys
        logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                            format="%(name)s %(levelname)s %(message)s")
        """
    )

    assert "" == done.stderr
    assert "fluxus INFO fluxus.circuit_rejected " in done.stdout
    assert "fluxus ERROR fluxus.retries_exhausted " in done.stdout


def test_a_configured_structlog_receives_the_events():
    done = run_program(
        """
        import structlog
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        """
    )

    assert "" == done.stderr
    assert '"event": "fluxus.timed_out"' in done.stdout


def test_storage_outages_share_one_shape():
    from fluxus.instrumentation import (
        CircuitStorageRecovered,
        CircuitStorageUnavailable,
        RateLimitStorageRecovered,
        RateLimitStorageUnavailable,
        StorageRecovered,
        StorageUnavailable,
    )

    fields = {
        "policy": "p",
        "function": "f",
        "storage": "redis://:***@h",
        "fail_open": True,
        "error_type": "builtins.OSError",
        "error_message": "down",
    }
    for kind, cls in [
        ("circuit_storage_unavailable", CircuitStorageUnavailable),
        ("rate_limit_storage_unavailable", RateLimitStorageUnavailable),
    ]:
        event = cls(**fields)
        assert isinstance(event, StorageUnavailable)
        assert (kind, logging.ERROR, fields) == (
            event.kind,
            event.level,
            event.fields(),
        )
    for kind, cls in [
        ("circuit_storage_recovered", CircuitStorageRecovered),
        ("rate_limit_storage_recovered", RateLimitStorageRecovered),
    ]:
        event = cls(policy="p", function="f", storage="s")
        assert isinstance(event, StorageRecovered)
        assert (kind, logging.INFO) == (event.kind, event.level)


def test_a_failing_observer_never_breaks_the_call_and_is_reported_once(caplog, mode):
    from fluxus.instrumentation import add_observer, remove_observer

    class Broken:
        def start(self, policy, function, attempt):
            raise RuntimeError("observer bug")

        def end(self, state, error):  # pragma: no cover - start never succeeds
            raise RuntimeError("observer bug")

    class BrokenEnd:
        attempts = True

        def start(self, policy, function, attempt):
            return None

        def end(self, state, error):
            raise RuntimeError("observer bug")

    broken, broken_end = Broken(), BrokenEnd()
    add_observer(broken)
    add_observer(broken)  # added once only
    add_observer(broken_end)
    try:
        fn = fluxus.circuit_breaker()(mode.make(lambda: "ok"))
        with caplog.at_level(logging.ERROR, logger="fluxus"):
            assert ["ok"] * 3 == [mode.run(fn) for _ in range(3)]
    finally:
        remove_observer(broken)
        remove_observer(broken_end)
        remove_observer(broken_end)  # removing twice is harmless

    assert 2 == len(caplog.records)


def test_observers_see_every_layer_once_and_recursion_is_observed(mode):
    from fluxus.instrumentation import add_observer, remove_observer

    seen = []

    class Recorder:
        attempts = True  # retry attempts too

        def start(self, policy, function, attempt):
            seen.append((policy.name, attempt))

        def end(self, state, error):
            pass

    recorder = Recorder()
    policies = [
        fluxus.dead_letter(fluxus.sinks.Memory(), name="dlq"),
        fluxus.rate_limit(1000, name=f"rl-{mode.name}"),
        fluxus.circuit_breaker(name="cb"),
        fluxus.timeout(5, name="to"),
        fluxus.retry(2, name="re"),
    ]
    fn = mode.make(lambda: "ok")
    for policy in reversed(policies):
        fn = policy(fn)
    add_observer(recorder)
    try:
        assert "ok" == mode.run(fn)
        recursive = fluxus.retry(name="rec")(lambda n: n and recursive(n - 1))
        recursive(2)
    finally:
        remove_observer(recorder)

    assert [
        ("dlq", 0),
        (f"rl-{mode.name}", 0),
        ("cb", 0),
        ("to", 0),
        ("re", 0),
        ("re", 1),
        ("rec", 0),
        ("rec", 1),
        ("rec", 0),
        ("rec", 1),
        ("rec", 0),
        ("rec", 1),
    ] == seen


# Sync "thread" recursion seats a worker inside a worker, nested twice.
@pytest.mark.parametrize("strategy", ["signal", "cooperative", "thread"])
def test_each_timeout_strategy_observes_every_call_once_recursion_too(mode, strategy):
    from fluxus.instrumentation import add_observer, remove_observer

    if mode.name == "async" and strategy == "signal":
        strategy = "thread"  # cancelled with asyncio.timeout: no worker thread
    seen = []

    class Recorder:
        attempts = False

        def start(self, policy, function, attempt):
            seen.append((policy.name, attempt))

        def end(self, state, error):
            seen.append(("end", type(error).__name__ if error else None))

    policy = fluxus.timeout(5, strategy=strategy, name="to")
    if mode.name == "async":

        async def count(n):
            return n and await protected(n - 1)

    else:

        def count(n):
            return n and protected(n - 1)

    protected = policy(count)
    recorder = Recorder()
    add_observer(recorder)
    try:
        assert 0 == mode.run(protected, 2)
    finally:
        remove_observer(recorder)

    assert [("to", 0)] * 3 + [("end", None)] * 3 == seen
    assert 3 == policy.stats.calls


def test_a_secret_argument_reaches_no_output(caplog, tmp_path, instant):
    """Every hook and backend at once; the secret must appear in none."""
    from fluxus.instrumentation import otel, prometheus
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
        InMemorySpanExporter,
    )
    from prometheus_client import CollectorRegistry, generate_latest

    secret = "hunter2-s3cr3t"  # noqa: S105 - a fake, looked for in every output
    registry = CollectorRegistry()
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_hooks([StructlogHook(), LoggingHook()])
    prometheus.install(registry)
    otel.install(provider)
    breaker = fluxus.circuit_breaker(1, 60.0, name="vault-cb")
    limiter = fluxus.rate_limit("1/minute", name="vault-rl")
    timeout = fluxus.timeout(0.01, strategy="cooperative", name="vault-to")

    def fail(password):
        raise OSError("vault refused")

    def slow(password):
        import time

        time.sleep(0.02)

    calls = [
        fluxus.dead_letter(fluxus.sinks.Memory(), name="vault-dlq")(
            breaker(fluxus.retry(2, name="vault-re")(fail))
        ),
        limiter(lambda password: password),
        timeout(slow),
    ]
    try:
        with (
            fluxus.testing.capture_events() as events,
            structlog.testing.capture_logs() as logs,
            caplog.at_level(logging.DEBUG, logger="fluxus"),
        ):
            for fn in calls:
                for _ in range(2):
                    with contextlib.suppress(Exception):
                        fn(secret)
    finally:
        prometheus.uninstall(registry)
        otel.uninstall()

    kinds = {event.kind for event in events}
    assert {
        "retry_scheduled",
        "retries_exhausted",
        "circuit_state_changed",
        "circuit_rejected",
        "dead_lettered",
        "rate_limited",
        "timed_out",
    } == kinds
    spans = [span.to_json() for span in exporter.get_finished_spans()]
    outputs = {
        "events": repr(events),
        "structlog": repr(logs),
        "logging": repr([(r.getMessage(), r.__dict__) for r in caplog.records]),
        "prometheus": generate_latest(registry).decode(),
        "spans": "".join(spans),
    }
    assert all(outputs.values())
    assert dict.fromkeys(outputs, False) == {
        name: secret in text for name, text in outputs.items()
    }


# -- block forms are observed like decorated calls ------------------------------


_GATES = {
    "circuit_breaker": (
        lambda: fluxus.circuit_breaker(1, 30.0, name="gate", clock=lambda: 0.0),
        lambda policy: policy.open(),
        "CircuitOpenError",
    ),
    "rate_limit": (
        lambda: fluxus.rate_limit(1, burst=1, name="gate", clock=lambda: 0.0),
        lambda policy: policy.acquire(),
        "RateLimitExceeded",
    ),
    "bulkhead": (
        lambda: fluxus.bulkhead(1, name="gate"),
        lambda policy: policy._store.take(0.0),
        "BulkheadFull",
    ),
}


def _gated(policy, outcome, *, block, is_async):
    """Return ``work``, run through *policy* as a block or decorated.

    Both are named ``_gated.<locals>.work``: a block is named after the
    function it is written in, a decorated call after its function.
    """

    def body():
        if outcome == "failure":
            raise OSError("down")
        return "ok"

    if is_async and block:

        async def work():
            async with policy:
                return body()

    elif is_async:

        @policy
        async def work():
            return body()

    elif block:

        def work():
            with policy:
                return body()

    else:

        @policy
        def work():
            return body()

    return work


def _observed_run(gate, outcome, *, block, is_async):
    import asyncio

    from fluxus.instrumentation import add_observer, remove_observer
    from fluxus.testing import capture_events

    make_policy, fill, _ = _GATES[gate]
    policy = make_policy()
    if outcome == "rejection":
        fill(policy)
    work = _gated(policy, outcome, block=block, is_async=is_async)
    seen = []

    class Recorder:
        attempts = False

        def start(self, policy, function, attempt):
            seen.append(("start", policy.name, function, attempt))
            return len(seen)

        def end(self, state, error):
            seen.append(("end", state, type(error).__name__ if error else None))

    recorder = Recorder()
    add_observer(recorder)
    try:
        with capture_events() as events:
            try:
                result = asyncio.run(work()) if is_async else work()
            except Exception as exc:
                result = type(exc).__name__
    finally:
        remove_observer(recorder)
    return result, seen, events, policy.stats


@pytest.mark.parametrize("outcome", ["success", "failure", "rejection"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("gate", list(_GATES))
def test_a_gates_block_is_observed_as_a_decorated_call(gate, is_async, outcome):
    decorated = _observed_run(gate, outcome, block=False, is_async=is_async)
    blocked = _observed_run(gate, outcome, block=True, is_async=is_async)

    expected = {"success": "ok", "failure": "OSError", "rejection": _GATES[gate][2]}
    function = f"{__name__}._gated.<locals>.work"
    error = None if outcome == "success" else expected[outcome]
    assert [("start", "gate", function, 0), ("end", 1, error)] == decorated[1]
    assert expected[outcome] == decorated[0]
    assert decorated == blocked
