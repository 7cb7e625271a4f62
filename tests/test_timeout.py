from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import fluxus
import pytest
import structlog
from fluxus import _deadline
from fluxus._timeout import _pool
from fluxus.instrumentation import TimedOut
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Mode

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")

#: Generous slack for a loaded CI machine; precision is measured by the
#: benchmarks, not asserted here.
SLACK = 0.25

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")

SYNC_STRATEGIES = ["thread", "signal", "cooperative"]
INTERRUPTING = ["thread", "signal"]


def sleeper(mode, seconds, seen=None):
    """Return a function that sleeps *seconds* the way its mode does."""
    if mode.is_async:

        async def slow():
            try:
                await mode.sleep(seconds)
            except mode.cancelled:
                if seen is not None:
                    seen.append("cancelled")
                raise
            return "done"

        return slow

    def slow():
        time.sleep(seconds)
        return "done"

    return slow


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A real listening socket on 127.0.0.1 that accepts and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.05)
        while not stop.is_set():
            try:
                conns.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[:2]
    finally:
        stop.set()
        thread.join(5)
        # Closing the connections ends the reads of abandoned calls.
        for conn in conns:
            conn.close()
        server.close()


def read_forever(address):
    with socket.create_connection(address) as sock:
        return sock.recv(1)


# -- the happy path ----------------------------------------------------------


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_fast_call_returns_its_result(mode, events, strategy):
    fn = fluxus.timeout(1.0, strategy=strategy)(mode.make(lambda x, *, y: x + y))

    assert 5 == mode.run(fn, 2, y=3)
    assert [] == events


def test_coroutine_functions_stay_coroutine_functions():
    async def work():
        return 1

    assert inspect.iscoroutinefunction(fluxus.timeout(1)(work))
    policy = fluxus.timeout(1)
    assert (policy,) == fluxus.layers(policy(work))


def test_retry_belongs_inside_a_timeout():
    fluxus.timeout(1)(fluxus.retry(2)(lambda: 1))  # the recommended order

    with pytest.warns(fluxus.LayeringWarning, match="timeout, retry"):
        fluxus.retry(2)(fluxus.timeout(1)(lambda: 1))


def test_one_policy_on_a_class_runs_in_the_callers_worker():
    policy = fluxus.timeout(1.0, max_threads=1)

    @policy
    class Client:
        def get(self, key):
            return threading.current_thread().name, key

        @classmethod
        def build(cls):
            return threading.current_thread().name

        @staticmethod
        async def ping():
            return "pong"

    name, key = Client().get("k")

    assert ("fluxus-timeout", "k") == (name, key)
    assert "fluxus-timeout" == Client.build()
    assert "pong" == asyncio.run(Client.ping())
    assert 0 == policy._bound.abandoned


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_exceptions_of_the_function_pass_through(mode, strategy):
    error = KeyError("boom")

    def body():
        raise error

    fn = fluxus.timeout(1.0, strategy=strategy)(mode.make(body))

    with pytest.raises(KeyError) as info:
        mode.run(fn)
    assert error is info.value


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_a_timeout_error_of_the_function_is_not_ours(mode, strategy, events):
    error = TimeoutError("socket timed out")

    def body():
        raise error

    fn = fluxus.timeout(1.0, strategy=strategy)(mode.make(body))

    with pytest.raises(TimeoutError) as info:
        mode.run(fn)
    assert error is info.value
    assert [] == events


def test_async_inner_asyncio_timeout_is_not_ours():
    @fluxus.timeout(1.0)
    async def work():
        async with asyncio.timeout(0.01):
            await asyncio.sleep(1)

    with pytest.raises(TimeoutError) as info:
        asyncio.run(work())
    assert not isinstance(info.value, fluxus.DeadlineExceeded)


# -- interrupting slow calls -------------------------------------------------


@pytest.mark.parametrize("strategy", INTERRUPTING)
def test_slow_call_raises_deadline_exceeded_at_the_deadline(mode, events, strategy):
    policy = fluxus.timeout(0.05, strategy=strategy, name="slow-api")
    fn = policy(sleeper(mode, 2.0))

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(fn)

    assert isinstance(info.value, TimeoutError)
    assert isinstance(info.value, fluxus.FluxusError)
    assert ("slow-api", 0.05) == (info.value.name, info.value.seconds)
    expected = strategy
    if mode.is_async:
        expected = "trio" if mode.is_trio else "asyncio"
    assert [("slow-api", 0.05, expected)] == [
        (e.policy, e.seconds, e.strategy) for e in events
    ]


@pytest.mark.parametrize("strategy", INTERRUPTING)
def test_control_returns_within_the_deadline_plus_slack(mode, strategy):
    fn = fluxus.timeout(0.05, strategy=strategy)(sleeper(mode, 2.0))
    start = time.monotonic()

    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn)

    assert 0.05 <= time.monotonic() - start < 0.05 + SLACK


def test_timed_out_event_fields(events):
    @fluxus.timeout(timedelta(milliseconds=30))
    def stuck():
        time.sleep(1)

    with pytest.raises(fluxus.DeadlineExceeded):
        stuck()

    (event,) = events
    assert isinstance(event, TimedOut)
    assert "timed_out" == event.kind
    assert {
        "policy": f"{__name__}.test_timed_out_event_fields.<locals>.stuck",
        "function": f"{__name__}.test_timed_out_event_fields.<locals>.stuck",
        "seconds": 0.03,
        "strategy": "thread",
        "reason": "the deadline passed during the call",
    } == event.fields()


def test_thread_strategy_in_worker_threads_with_sleep_and_socket(silent_server):
    sleepy = fluxus.timeout(0.05)(lambda: time.sleep(2))
    reader = fluxus.timeout(0.05)(read_forever)
    outcomes: list[tuple[str, type, float]] = []

    def caller(name, fn, *args):
        start = time.monotonic()
        try:
            fn(*args)
        except BaseException as exc:
            outcomes.append((name, type(exc), time.monotonic() - start))

    threads = [
        threading.Thread(target=caller, args=("sleep", sleepy)),
        threading.Thread(target=caller, args=("socket", reader, silent_server)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert [
        ("sleep", fluxus.DeadlineExceeded),
        ("socket", fluxus.DeadlineExceeded),
    ] == sorted((name, kind) for name, kind, _ in outcomes)
    assert all(seconds < 0.05 + SLACK for _, _, seconds in outcomes)


@pytest.mark.parametrize("strategy", INTERRUPTING)
def test_socket_that_never_answers_in_the_main_thread(silent_server, strategy):
    fn = fluxus.timeout(0.05, strategy=strategy)(read_forever)
    start = time.monotonic()

    with pytest.raises(fluxus.DeadlineExceeded):
        fn(silent_server)

    assert time.monotonic() - start < 0.05 + SLACK


def test_async_socket_that_never_answers_is_cancelled(silent_server):
    seen = []

    @fluxus.timeout(0.05)
    async def read():
        reader, writer = await asyncio.open_connection(*silent_server)
        try:
            return await reader.read(1)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise
        finally:
            writer.close()

    with pytest.raises(fluxus.DeadlineExceeded):
        asyncio.run(read())
    assert ["cancelled"] == seen


@pytest.mark.parametrize("library", ["async", "trio"])
def test_async_work_is_really_cancelled(library):
    seen: list[str] = []
    mode = Mode(library)
    fn = fluxus.timeout(0.03)(sleeper(mode, 2, seen))

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(fn)

    assert ["cancelled"] == seen
    assert isinstance(info.value.__cause__, mode.cancelled)


def test_outer_cancellation_stays_a_cancellation():
    @fluxus.timeout(5.0)
    async def work():
        await asyncio.sleep(5)

    async def main():
        task = asyncio.create_task(work())
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())


def test_outer_asyncio_timeout_stays_its_own():
    @fluxus.timeout(5.0)
    async def work():
        await asyncio.sleep(5)

    async def main():
        async with asyncio.timeout(0.02):
            await work()

    with pytest.raises(TimeoutError) as info:
        asyncio.run(main())
    assert not isinstance(info.value, fluxus.DeadlineExceeded)


# -- context and deadlines ---------------------------------------------------


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_context_variables_are_visible_in_the_callee(mode, strategy):
    def body():
        left = fluxus.remaining()
        return (
            request_id.get(None),
            structlog.contextvars.get_contextvars().get("user"),
            left is not None and 0 < left <= 1.0,
        )

    fn = fluxus.timeout(1.0, strategy=strategy)(mode.make(body))

    async def run_async():
        return await fn()

    def run():
        request_id.set("req-7")
        structlog.contextvars.bind_contextvars(user="ada")
        return mode.run(run_async) if mode.is_async else fn()

    assert ("req-7", "ada", True) == contextvars.copy_context().run(run)


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_flask_request_context_is_visible_in_the_callee(strategy):
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @fluxus.timeout(1.0, strategy=strategy)
    def who():
        return flask.request.args["user"], flask.g.tenant

    with app.test_request_context("/report?user=ada"):
        flask.g.tenant = "acme"
        assert ("ada", "acme") == who()


def test_remaining_is_none_outside_and_after_a_timeout(mode):
    fn = fluxus.timeout(1.0)(mode.make(fluxus.remaining))

    assert mode.run(fn) is not None
    assert fluxus.remaining() is None


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_nested_deadlines_only_shrink(mode, strategy):
    inner = fluxus.timeout(10.0, strategy="cooperative")(mode.make(fluxus.remaining))
    outer = fluxus.timeout(0.5, strategy=strategy)(inner)

    assert 0 < mode.run(outer) <= 0.5


def test_inner_shorter_deadline_is_kept(mode):
    inner = fluxus.timeout(0.2, strategy="cooperative")(mode.make(fluxus.remaining))
    outer = fluxus.timeout(5.0)(inner)

    assert 0 < mode.run(outer) <= 0.2


def test_shrunk_inner_timeout_reports_the_budget_it_had(mode):
    inner = fluxus.timeout(10.0, name="inner")(sleeper(mode, 2.0))
    outer = fluxus.timeout(0.05, name="outer", strategy="cooperative")(inner)

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(outer)

    assert "inner" == info.value.name
    assert 0 < info.value.seconds <= 0.05


def test_no_call_is_started_past_the_enclosing_deadline(mode, events):
    calls = []
    fn = fluxus.timeout(1.0)(mode.make(lambda: calls.append(1)))
    token = _deadline.DEADLINE.set(_deadline.monotonic() - 0.01)
    try:
        with pytest.raises(fluxus.DeadlineExceeded):
            mode.run(fn)
    finally:
        _deadline.DEADLINE.reset(token)

    assert [] == calls
    assert ["the enclosing deadline had passed before the call started"] == [
        e.reason for e in events
    ]


@settings(max_examples=40, deadline=None)
@given(
    seconds=st.floats(0.5, 1e6),
    outer_left=st.none() | st.floats(-1.0, 0.0) | st.floats(0.5, 2e6),
    strategy=st.sampled_from(SYNC_STRATEGIES),
)
def test_the_deadline_is_the_sooner_of_ours_and_the_enclosing_one(
    seconds, outer_left, strategy
):
    fn = fluxus.timeout(seconds, strategy=strategy)(fluxus.remaining)
    token = None
    if outer_left is not None:
        token = _deadline.DEADLINE.set(_deadline.monotonic() + outer_left)
    try:
        if outer_left is not None and outer_left <= 0:
            with pytest.raises(fluxus.DeadlineExceeded):
                fn()
            return
        left = fn()
    finally:
        if token is not None:
            _deadline.DEADLINE.reset(token)

    expected = seconds if outer_left is None else min(seconds, outer_left)
    assert expected - 0.25 < left <= expected


def test_waits_never_last_past_the_deadline():
    token = _deadline.DEADLINE.set(_deadline.monotonic() + 0.02)
    try:
        start = time.monotonic()
        _deadline.wait_sync(5)
        asyncio.run(_deadline.wait_async(5))
        elapsed = time.monotonic() - start
    finally:
        _deadline.DEADLINE.reset(token)

    assert elapsed < 0.02 + SLACK


# -- retry inside a timeout --------------------------------------------------


@pytest.mark.parametrize("strategy", SYNC_STRATEGIES)
def test_retry_inside_a_timeout_stops_at_the_deadline(mode, strategy, events):
    calls = []

    def body():
        calls.append((time.monotonic(), _deadline.DEADLINE.get()))
        raise OSError("down")

    # A deadline of several backoffs: a thread started late on a loaded
    # machine still leaves room for a second attempt, and attempts 0.25 s
    # apart fit at most four times into one second.
    retrying = fluxus.retry(100, backoff=fluxus.backoff.constant(0.25))(mode.make(body))
    fn = fluxus.timeout(1.0, strategy=strategy)(retrying)
    start = time.monotonic()

    # Retry gives up with its last error when the next attempt would start
    # past the deadline; an attempt still running at the deadline is timed
    # out instead (DeadlineExceeded is a TimeoutError, hence an OSError).
    with pytest.raises(OSError) as info:
        mode.run(fn)

    assert time.monotonic() - start < 1.0 + SLACK
    assert 2 <= len(calls) <= 4
    assert all(at < deadline for at, deadline in calls)  # none started late
    if not isinstance(info.value, fluxus.DeadlineExceeded):
        assert "past the deadline" in info.value.__notes__[-1]


def test_retry_starts_no_attempt_after_a_late_wake_up(mode, monkeypatch, events):
    from fluxus._retry import _drivers

    def oversleep(seconds):
        time.sleep(seconds + 0.05)

    async def oversleep_async(seconds):
        await mode.sleep(seconds + 0.05)

    monkeypatch.setattr(_drivers, "wait_sync", oversleep)
    monkeypatch.setattr(_drivers, "wait_async", oversleep_async)
    calls = []

    def body():
        calls.append(1)
        raise OSError("down")

    retrying = fluxus.retry(5, backoff=fluxus.backoff.constant(0.01))(mode.make(body))
    fn = fluxus.timeout(0.04, strategy="cooperative")(retrying)

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(fn)

    assert [1] == calls
    cause = info.value.__cause__
    assert isinstance(cause, OSError)
    note = "fluxus.retry gave up after 1 attempt: the deadline passed during the "
    assert [note + "backoff wait"] == cause.__notes__


def test_retry_starts_no_attempt_under_an_expired_deadline(mode):
    calls = []
    inner = fluxus.retry(3)(mode.make(lambda: calls.append(1)))

    def late_caller():
        time.sleep(0.03)
        return inner()

    if mode.is_async:

        async def late_caller():
            await mode.sleep(0.03)
            return await inner()

    fn = fluxus.timeout(0.01, strategy="cooperative")(late_caller)

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(fn)

    assert [] == calls
    assert ["fluxus.retry started no attempt: the deadline had passed"] == (
        info.value.__notes__
    )


def test_retry_in_abandoned_work_stops_at_the_deadline():
    calls = []

    @fluxus.timeout(0.05)
    @fluxus.retry(100, backoff=fluxus.backoff.constant(0.01))
    def stubborn():
        calls.append(1)
        time.sleep(0.03)
        raise OSError("down")

    # Usually the deadline passes first; on a slow machine retry may see
    # first that its next attempt would start past it, and give up.
    with pytest.raises((fluxus.DeadlineExceeded, OSError)):
        stubborn()
    time.sleep(0.15)
    settled = len(calls)
    time.sleep(0.1)

    assert settled == len(calls)
    assert settled <= 3


# -- signal strategy details -------------------------------------------------


def test_signal_strategy_off_the_main_thread_is_a_clear_error():
    fn = fluxus.timeout(1.0, strategy="signal")(lambda: 1)
    errors = []

    def run():
        try:
            fn()
        except ValueError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run, name="worker-1")
    thread.start()
    thread.join(5)

    (message,) = errors
    assert "main thread" in message
    assert "'worker-1'" in message


def test_signal_strategy_is_not_swallowed_by_except_exception():
    @fluxus.timeout(0.03, strategy="signal")
    def stubborn():
        with contextlib.suppress(Exception):  # the point of the test
            time.sleep(2)
        return "swallowed"

    with pytest.raises(fluxus.DeadlineExceeded):
        stubborn()


def test_signal_strategy_never_returns_a_late_result(events):
    @fluxus.timeout(0.03, strategy="signal")
    def catches_once():
        with contextlib.suppress(BaseException):  # the point of the test
            time.sleep(2)
        return "late"

    start = time.monotonic()
    with pytest.raises(fluxus.DeadlineExceeded):
        catches_once()

    assert time.monotonic() - start < 0.03 + SLACK
    assert ["the deadline passed during the call"] == [e.reason for e in events]


def test_signal_strategy_interrupts_a_catching_loop_again():
    interrupts = []

    @fluxus.timeout(0.03, strategy="signal")
    def catches_in_a_loop():
        for _ in range(100):
            try:
                time.sleep(1)
            except BaseException as exc:  # the point of the test
                interrupts.append(exc)
        return "late"

    start = time.monotonic()
    with pytest.raises(fluxus.DeadlineExceeded):
        catches_in_a_loop()

    # 100 s of sleeps without re-arming; one interrupt per REARM_SECONDS.
    assert time.monotonic() - start < 0.03 + 100 * 0.01 + SLACK
    assert 100 == len(interrupts)


def test_signal_strategy_late_failure_becomes_the_cause():
    error = ConnectionError("gave up")

    @fluxus.timeout(0.03, strategy="signal")
    def converts():
        try:
            time.sleep(2)
        except BaseException:
            raise error from None

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        converts()

    assert error is info.value.__cause__


def test_signal_strategy_failure_in_time_passes_through():
    @fluxus.timeout(1.0, strategy="signal")
    def refuses():
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        refuses()


def test_signal_strategy_restores_the_handler_and_an_outer_timer():
    fired = []

    def handler(signum, frame):
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        fn = fluxus.timeout(1.0, strategy="signal")(lambda: 1)
        assert 1 == fn()
        assert handler is signal.getsignal(signal.SIGALRM)
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 0 < left <= 0.2
        time.sleep(left + 0.05)
        assert [signal.SIGALRM] == fired
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_signal_strategy_leaves_no_timer_armed():
    saved = signal.setitimer(signal.ITIMER_REAL, 0)  # pytest-timeout's, if any
    try:
        assert 1 == fluxus.timeout(1.0, strategy="signal")(lambda: 1)()
        assert (0.0, 0.0) == signal.getitimer(signal.ITIMER_REAL)
    finally:
        if saved[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *saved)


def test_nested_signal_timeouts_each_fire_their_own(events):
    before, _ = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if any

    @fluxus.timeout(0.03, strategy="signal", name="inner")
    def inner():
        time.sleep(2)

    @fluxus.timeout(0.3, strategy="signal", name="outer")
    def outer():
        with pytest.raises(fluxus.DeadlineExceeded) as info:
            inner()
        assert "inner" == info.value.name
        time.sleep(2)

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        outer()

    assert "outer" == info.value.name
    assert ["inner", "outer"] == [e.policy for e in events]
    after, _ = signal.getitimer(signal.ITIMER_REAL)
    assert after <= before
    assert (after > 0) == (before > 0)


# -- cooperative strategy ----------------------------------------------------


def test_cooperative_late_result_is_replaced_by_the_timeout(mode, events):
    fn = fluxus.timeout(0.02, strategy="cooperative")(mode.make(time.sleep))

    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn, 0.05)
    assert ["cooperative"] == [e.strategy for e in events]


def test_cooperative_late_failure_becomes_the_cause(mode):
    error = ConnectionError("read timed out")

    def body():
        time.sleep(0.05)
        raise error

    fn = fluxus.timeout(0.02, strategy="cooperative")(mode.make(body))

    with pytest.raises(fluxus.DeadlineExceeded) as info:
        mode.run(fn)
    assert error is info.value.__cause__


def test_cooperative_failure_in_time_passes_through(mode):
    def body():
        raise ConnectionError("refused")

    fn = fluxus.timeout(1.0, strategy="cooperative")(mode.make(body))

    with pytest.raises(ConnectionError):
        mode.run(fn)


# -- on_timeout ----------------------------------------------------------------


class ServiceUnavailable(Exception):
    pass


def test_on_timeout_replacement_is_raised_from_the_timeout(mode):
    seen = []

    def on_timeout(exc):
        seen.append(exc)
        return ServiceUnavailable("billing is slow")

    fn = fluxus.timeout(0.03, on_timeout=on_timeout)(sleeper(mode, 2.0))

    with pytest.raises(ServiceUnavailable) as info:
        mode.run(fn)
    (original,) = seen
    assert isinstance(original, fluxus.DeadlineExceeded)
    assert original is info.value.__cause__


def test_on_timeout_returning_none_keeps_the_timeout(mode):
    fn = fluxus.timeout(0.03, on_timeout=lambda exc: None)(sleeper(mode, 2.0))

    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn)


def test_on_timeout_returning_garbage_is_a_type_error(mode):
    fn = fluxus.timeout(0.03, on_timeout=lambda exc: "oops")(sleeper(mode, 2.0))

    with pytest.raises(TypeError, match="on_timeout must return an exception"):
        mode.run(fn)


# -- the worker threads ----------------------------------------------------------


def seated_worker():
    """Return the calling thread's worker."""
    return _pool.HUB.local.seat.worker


def wait_until(predicate, seconds=5.0):
    deadline = time.monotonic() + seconds
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return predicate()


def alive(thread_id):
    return any(t.native_id == thread_id for t in threading.enumerate())


def test_a_caller_keeps_one_worker_for_every_policy():
    first = fluxus.timeout(1.0)(threading.get_native_id)
    second = fluxus.timeout(2.0)(threading.get_native_id)

    seen = {first() for _ in range(10)} | {second() for _ in range(10)}

    assert {seated_worker().thread_id} == seen
    assert threading.get_native_id() not in seen


def test_many_threads_share_one_policy():
    fn = fluxus.timeout(2.0, max_threads=8)(lambda x: x * 2)
    results = []

    def caller(i):
        results.extend(fn(i) for _ in range(50))

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(2 * i for i in range(8) for _ in range(50)) == sorted(results)


def test_callers_are_not_bounded_by_max_threads():
    fn = fluxus.timeout(5.0, max_threads=1)(lambda x: time.sleep(0.005) or x)
    gate = threading.Barrier(16)
    results, errors = [], []

    def caller(i):
        gate.wait(5)
        try:
            results.extend(fn(i) for _ in range(5))
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)

    assert [] == errors
    assert 80 == len(results)


@pytest.mark.parametrize("callers", [8, 32, 64])
def test_healthy_calls_never_fail_beside_hanging_ones(callers):
    # Every tenth call hangs until the end; the bound is just above the
    # abandoned calls' peak, far below callers + abandoned.
    release = threading.Event()
    hanging = 2 * callers
    policy = fluxus.timeout(1.0, max_threads=hanging + 1, name="mixed")
    fn = policy(lambda hang, x: release.wait(30) if hang else time.sleep(0.001) or x)
    gate = threading.Barrier(callers)
    healthy, timed_out, errors = [], [], []

    def caller(i):
        gate.wait(10)
        for n in range(20):
            try:
                result = fn(n % 10 == 4, (i, n))
            except fluxus.DeadlineExceeded:
                timed_out.append((i, n))
            except Exception as exc:  # reported below
                errors.append(exc)
            else:
                healthy.append(result)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(callers)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert [] == errors
        assert 18 * callers == len(healthy)
        assert sorted((i, n) for i in range(callers) for n in (4, 14)) == sorted(
            timed_out
        )
        assert hanging == policy._bound.abandoned
    finally:
        release.set()
    assert wait_until(lambda: 0 == policy._bound.abandoned)


def test_hanging_calls_exhaust_the_bound_then_fail_fast(events):
    release = threading.Event()
    policy = fluxus.timeout(0.1, max_threads=2, name="hangs")
    hang = policy(release.wait)
    quick = policy(lambda: "ok")
    try:
        for _ in range(2):
            with pytest.raises(fluxus.DeadlineExceeded):
                hang()
        start = time.monotonic()
        with pytest.raises(fluxus.ThreadsExhausted) as info:
            quick()
        assert time.monotonic() - start < 0.05
        assert fluxus.is_rejection(info.value)
        assert not isinstance(info.value, fluxus.DeadlineExceeded)
        assert 2 == info.value.threads
        assert "2 calls" in str(info.value)
        assert "2 abandoned calls still hold their worker threads" == (
            events[-1].reason
        )
        assert (1, 2) == (policy.stats.rejections, policy.stats.timeouts)
        assert 2 == policy._bound.abandoned
    finally:
        release.set()

    assert wait_until(lambda: 0 == policy._bound.abandoned)
    assert "ok" == quick()


def test_on_timeout_leaves_threads_exhausted_alone():
    release = threading.Event()
    policy = fluxus.timeout(
        0.05, max_threads=1, on_timeout=lambda exc: ServiceUnavailable()
    )
    fn = policy(release.wait)
    try:
        with pytest.raises(ServiceUnavailable):
            fn()
        with pytest.raises(fluxus.ThreadsExhausted):
            fn()
    finally:
        release.set()


def test_threads_exhausted_pickles():
    import pickle

    error = fluxus.ThreadsExhausted("api", 0.5, 4)
    clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object

    assert (str(error), 4) == (str(clone), clone.threads)


def test_an_exhausted_pool_never_opens_the_breaker():
    release = threading.Event()
    breaker = fluxus.circuit_breaker(failure_threshold=2, name="upstream")
    letters = fluxus.sinks.Memory()
    calls = []

    def body(hang):
        calls.append(hang)
        if hang:
            release.wait(10)
        return "ok"

    fn = fluxus.stack(
        fluxus.dead_letter(letters),
        breaker,
        fluxus.timeout(0.05, max_threads=1),
        fluxus.retry(3, on=Exception),
    )(body)
    try:
        with pytest.raises(fluxus.DeadlineExceeded):
            fn(True)
        for _ in range(10):
            with pytest.raises(fluxus.ThreadsExhausted):
                fn(False)
        assert fluxus.CircuitState.CLOSED == breaker.state
        assert 1 == breaker.stats.failures
        assert [True] == calls
    finally:
        release.set()
    timeouts = fluxus.layers(fn)[2]
    assert wait_until(lambda: 0 == timeouts._bound.abandoned)
    assert "ok" == fn(False)
    assert fluxus.CircuitState.CLOSED == breaker.state
    assert 11 == len(letters)


def test_interrupted_caller_walks_away(monkeypatch):
    release = threading.Event()
    policy = fluxus.timeout(5.0)
    fn = policy(release.wait)

    def interrupted(self, *args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(_pool.Worker, "wait", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fn()
    assert 1 == policy._bound.abandoned
    release.set()

    assert wait_until(lambda: 0 == policy._bound.abandoned)
    assert True is fn()


def test_interrupted_caller_after_the_call_finished(monkeypatch):
    policy = fluxus.timeout(5.0)
    fn = policy(lambda: "ok")
    real_wait = _pool.Worker.wait

    def interrupted(self, *args):
        while not self.poller.poll(0):
            time.sleep(0.001)
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(_pool.Worker, "wait", interrupted)
        with pytest.raises(KeyboardInterrupt):
            fn()
    assert real_wait is _pool.Worker.wait
    assert "ok" == fn()
    assert 0 == policy._bound.abandoned


def test_a_caller_interrupted_once_its_call_is_done_walks_on(monkeypatch):
    # Interrupted after the done signal was read: the caller once waited
    # for a second signal that never comes.
    fn = fluxus.timeout(5.0)(lambda x: x)
    real_wait = _pool.Worker.wait
    once = [True]

    def interrupted(self, *args):
        done = real_wait(self, *args)
        if once:
            once.clear()
            raise KeyboardInterrupt
        return done

    out = []

    def caller():
        with contextlib.suppress(KeyboardInterrupt):
            fn(1)
        out.append(fn(2))

    with monkeypatch.context() as patch:
        patch.setattr(_pool.Worker, "wait", interrupted)
        thread = threading.Thread(target=caller, daemon=True)
        thread.start()
        thread.join(10)
    assert [2] == out


def spin(value, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return value


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs SIGALRM")
# A 2 ms alarm lands anywhere, also in a weakref callback run by the garbage
# collector, where Python can only report it ("Exception ignored"); the
# signal strategy re-arms, so no call ends late. What is checked here is
# that no call gets another's outcome.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_signal_timeouts_interrupting_thread_calls_never_mix_outcomes(events):
    # The interrupt lands anywhere in the hand-off, also in what the caller
    # does to walk away; a later call once returned an earlier call's result.
    inner = fluxus.timeout(5.0)(spin)
    outer = fluxus.timeout(0.002, strategy="signal")(inner)
    wrong, late = [], 0
    for n in range(300):
        with contextlib.suppress(fluxus.DeadlineExceeded):
            outer(n, 0.001 + (n % 7) * 0.0003)
            late -= 1
        late += 1
        if -n != inner(-n, 0):
            wrong.append(n)

    assert [] == wrong
    assert late  # interrupted indeed


def test_a_go_signal_whose_job_was_replaced_finds_none():
    # A start() interrupted before its GO signal leaves a job that the next
    # start() replaces: the thread runs the newer job once.
    worker = _pool.Worker(_pool.HUB)
    release = threading.Event()
    context = contextvars.copy_context()
    first = worker.start(release.wait, (5.0,), {}, context, time.monotonic() + 9)
    second = worker.start(lambda: "second", (), {}, context, time.monotonic() + 9)
    third = worker.start(lambda: "third", (), {}, context, time.monotonic() + 9)
    release.set()

    assert worker.wait(third, time.monotonic(), time.monotonic() + 5)
    assert "third" == worker.outcome()[0]
    assert first < second < third == worker.served
    worker.stop()
    assert wait_until(lambda: -1 == worker.go_r)


def open_fds():
    """How many files the process has open (0 where /proc is missing)."""
    fds = Path("/proc/self/fd")
    return sum(1 for _ in fds.iterdir()) if fds.exists() else 0


@pytest.fixture
def thread_errors(monkeypatch):
    errors = []
    monkeypatch.setattr(threading, "excepthook", errors.append)
    return errors


def test_a_worker_interrupted_as_its_thread_starts_lets_the_thread_close(
    monkeypatch, thread_errors
):
    # Closing the pipes under the running thread made its read fail (EBADF),
    # or read another file that had taken the number.
    started = []

    class Interrupted(threading.Thread):
        def start(self):
            super().start()
            started.append(self)
            worker = self._target.__self__
            assert wait_until(lambda: worker.running)
            raise KeyboardInterrupt

    fds = open_fds()
    with monkeypatch.context() as patch:
        patch.setattr(threading, "Thread", Interrupted)
        with pytest.raises(KeyboardInterrupt):
            _pool.Worker(_pool.HUB)
    started[0].join(5)

    assert not started[0].is_alive()
    assert [] == thread_errors
    if fds:
        assert fds == open_fds()


@pytest.mark.parametrize("delayed", [True, False], ids=["late-thread", "no-thread"])
def test_a_worker_whose_thread_never_loops_closes_its_pipes(
    monkeypatch, thread_errors, delayed
):
    go, started = threading.Event(), []

    class Late(threading.Thread):
        def run(self):
            go.wait(5)
            super().run()

        def start(self):
            if delayed:
                super().start()
                started.append(self)
                raise KeyboardInterrupt
            raise RuntimeError("can't start new thread")

    fds = open_fds()
    with monkeypatch.context() as patch:
        patch.setattr(threading, "Thread", Late)
        with pytest.raises((KeyboardInterrupt, RuntimeError)):
            _pool.Worker(_pool.HUB)
    go.set()
    for thread in started:
        thread.join(5)
        assert not thread.is_alive()

    assert [] == thread_errors
    if fds:
        assert fds == open_fds()


def finished_as_the_caller_gives_up(self, *args):
    """A wait that misses the done signal: the caller gives up as it comes."""
    while not self.poller.poll(0):
        time.sleep(0.001)
    return False


def test_call_finishing_in_time_as_the_caller_gives_up_returns(monkeypatch):
    fn = fluxus.timeout(5.0)(lambda: "ok")

    with monkeypatch.context() as patch:
        patch.setattr(_pool.Worker, "wait", finished_as_the_caller_gives_up)
        assert "ok" == fn()
    assert "ok" == fn()


def test_call_finishing_late_as_the_caller_gives_up_times_out(monkeypatch, events):
    fn = fluxus.timeout(0.02)(lambda: time.sleep(0.05) or "late")

    with monkeypatch.context() as patch:
        patch.setattr(_pool.Worker, "wait", finished_as_the_caller_gives_up)
        with pytest.raises(fluxus.DeadlineExceeded):
            fn()
    assert ["the deadline passed during the call"] == [e.reason for e in events]
    assert "ok" == fluxus.timeout(5.0)(lambda: "ok")()


def run_in_thread(fn):
    """Call *fn* in a new thread that then ends; return what it returned."""
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join(10)
    return out[0]


def test_an_ended_caller_leaves_its_worker_to_the_next(monkeypatch):
    monkeypatch.setattr(_pool.HUB, "idle", [])
    fn = fluxus.timeout(1.0)(threading.get_native_id)

    first = run_in_thread(fn)
    assert wait_until(lambda: [first] == [w.thread_id for w in _pool.HUB.idle])
    second = run_in_thread(fn)

    assert first == second


def test_idle_workers_are_retired(monkeypatch):
    monkeypatch.setattr(_pool.HUB, "idle", [])
    fn = fluxus.timeout(1.0)(threading.get_native_id)
    seated, leave = threading.Event(), threading.Event()
    kept = []

    def stays():
        kept.append(fn())
        seated.set()
        leave.wait(10)

    staying = threading.Thread(target=stays)
    staying.start()
    assert seated.wait(10)
    old = run_in_thread(fn)
    assert wait_until(lambda: [old] == [w.thread_id for w in _pool.HUB.idle])

    monkeypatch.setattr(_pool, "IDLE_SECONDS", -1.0)
    leave.set()
    staying.join(10)

    assert wait_until(lambda: not alive(old))
    assert kept == [w.thread_id for w in _pool.HUB.idle]


def test_a_worker_that_cannot_start_leaves_nothing_behind(monkeypatch):
    monkeypatch.setattr(_pool.HUB, "idle", [])
    fn = fluxus.timeout(1.0)(lambda: "ok")

    def fail_to_start(self):
        raise RuntimeError("can't start new thread")

    def first_call():
        with monkeypatch.context() as patch:
            patch.setattr(threading.Thread, "start", fail_to_start)
            with pytest.raises(RuntimeError, match="can't start new thread"):
                fn()
        return fn()

    assert "ok" == run_in_thread(first_call)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_threads_and_files_stay_bounded_after_10000_timeouts():
    policy = fluxus.timeout(0.001, max_threads=64)
    fn = policy(time.sleep)

    def open_files():
        return len(list(Path("/proc/self/fd").iterdir()))

    def caller():
        for _ in range(2500):
            with contextlib.suppress(fluxus.DeadlineExceeded):
                fn(0.003)

    run_in_thread(lambda: None)
    threads_before, files_before = threading.active_count(), open_files()
    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(120)
    assert wait_until(lambda: 0 == policy._bound.abandoned)

    assert policy.stats.timeouts + policy.stats.rejections == 10_000
    grown = threading.active_count() - threads_before
    assert 0 <= grown <= 64 + 4
    assert 4 * grown == open_files() - files_before


FORK = """
import os, sys, fluxus
fn = fluxus.timeout(1.0)(os.getpid)
assert fn() == os.getpid()
pid = os.fork()
if pid == 0:
    os._exit(0 if fn() == os.getpid() else 3)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_starts_its_own_workers():
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", FORK], timeout=30, check=False
    )

    assert 0 == result.returncode


NESTED_THEN_FORK = """
import gc, os, sys, threading
import fluxus
from fluxus._timeout import _pool

kept = []

@fluxus.timeout(5.0)
def inner(x):
    if x % 3 == 0:
        raise LookupError(x)
    return x

@fluxus.timeout(5.0)
def outer(x):
    try:
        return inner(x)
    except LookupError as exc:
        kept.append(exc)  # its traceback keeps the workers' frames alive
        raise

@fluxus.timeout(5.0)
def count(n):
    return n and 1 + count(n - 1)

def caller():
    for x in range(12):
        try:
            outer(x)
        except LookupError:
            pass
    assert count(4) == 4

for _ in range(2):
    threads = [threading.Thread(target=caller) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    _pool.IDLE_SECONDS = -1.0  # the next parked worker retires every idle one
    thread = threading.Thread(target=outer, args=(1,))
    thread.start()
    thread.join(30)
    _pool.IDLE_SECONDS = 30.0
    gc.collect()
files = [open(os.devnull, "w") for _ in range(64)]  # the freed numbers again
pid = os.fork()
if pid == 0:
    try:
        for file in files:
            file.write("child")
            file.flush()
        assert count(2) == 2
    except BaseException:
        os._exit(3)
    os._exit(0)
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_after_nested_timeouts_can_write_its_files():
    # Retired workers outlive their threads in the frames of kept exceptions;
    # the child once closed their old pipe numbers, now the files'.
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", NESTED_THEN_FORK],
        timeout=60,
        check=False,
    )

    assert 0 == result.returncode


def test_nested_and_recursive_callers_leave_each_worker_idle_once(monkeypatch):
    monkeypatch.setattr(_pool.HUB, "idle", [])
    inner = fluxus.timeout(5.0)(threading.get_native_id)
    outer = fluxus.timeout(5.0)(lambda: (threading.get_native_id(), inner()))
    count = fluxus.timeout(5.0)(lambda n: n and 1 + count(n - 1))

    together = threading.Barrier(4)

    def caller():
        for _ in range(5):
            me, mine = outer()
            assert me != mine
        assert 3 == count(3)
        together.wait(10)  # four seats at once: four workers, parked as they end

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(30)

    def settled():
        idle = list(_pool.HUB.idle)
        return len(idle) >= 4 and len({id(w) for w in idle}) == len(idle)

    assert wait_until(settled)  # each ended caller's worker, once
    idle = list(_pool.HUB.idle)
    assert all(alive(w.thread_id) and w.go_w >= 0 for w in idle)
    assert all(w.seat is None for w in idle)


def test_a_worker_closes_its_pipes_once():
    worker = _pool.Worker(_pool.HUB)
    thread_id, go_r = worker.thread_id, worker.go_r
    worker.stop()

    assert wait_until(lambda: not alive(thread_id))
    assert -1 == worker.go_r
    worker.close()  # nothing left to close: another file may own go_r now
    worker.stop()  # nor a thread to ask: nothing is written
    assert -1 == worker.go_w
    with pytest.raises(OSError):
        os.fstat(go_r)


WITHOUT_FORK_HOOKS = """
import os
import random, logging, threading  # the stdlib guards with hasattr(os, "fork")
del os.register_at_fork
import fluxus
assert fluxus.timeout(1.0)(lambda: 1)() == 1
"""


def test_imports_where_fork_hooks_are_missing():
    result = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", WITHOUT_FORK_HOOKS],
        timeout=30,
        check=False,
    )

    assert 0 == result.returncode


EXIT = """
import threading, fluxus
fn = fluxus.timeout(1.0)(lambda: 1)
thread = threading.Thread(target=fn)
thread.start()
thread.join()
assert fn() == 1
"""


def test_the_interpreter_exits_quietly():
    result = subprocess.run(
        [sys.executable, "-c", EXIT],
        timeout=30,
        check=False,
        capture_output=True,
        text=True,
    )

    assert (0, "") == (result.returncode, result.stderr)


# -- bad input -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"seconds": 0}, ValueError, "seconds must be finite and > 0 seconds, got 0"),
        ({"seconds": -1.5}, ValueError, "seconds"),
        ({"seconds": timedelta(0)}, ValueError, "seconds must be finite and > 0"),
        ({"seconds": timedelta(seconds=-1)}, ValueError, "seconds"),
        ({"seconds": float("nan")}, ValueError, "seconds"),
        ({"seconds": "1"}, TypeError, "seconds"),
        ({"seconds": 1, "strategy": "magic"}, ValueError, "strategy.*'magic'"),
        ({"seconds": 1, "max_threads": 0}, ValueError, "max_threads must be >= 1"),
        ({"seconds": 1, "max_threads": 2.0}, TypeError, "max_threads"),
        ({"seconds": 1, "on_timeout": "x"}, TypeError, "on_timeout"),
    ],
)
def test_bad_configuration_fails_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.timeout(**kwargs)


def test_signal_strategy_needs_setitimer(monkeypatch):
    monkeypatch.delattr(signal, "setitimer")

    with pytest.raises(ValueError, match="setitimer"):
        fluxus.timeout(1, strategy="signal")


def test_the_policy_class_is_exported():
    policy = fluxus.Timeout(1.5, strategy="cooperative")

    assert (1.5, "cooperative") == (policy.seconds, policy.strategy)
    assert "<fluxus.Timeout '<unbound timeout>'>" == repr(policy)


# -- worker placement (Linux) --------------------------------------------------

pinning = pytest.mark.skipif(
    _pool.cpu_of_caller is None, reason="workers are pinned on Linux only"
)


@pinning
def test_a_worker_follows_its_callers_cpu_and_is_released_when_abandoned():
    policy = fluxus.timeout(0.03)
    release = threading.Event()
    fn = policy(lambda wait: release.wait(1) if wait else "ok")

    assert "ok" == fn(False)
    worker = seated_worker()
    assert {worker.cpu} == os.sched_getaffinity(worker.thread_id)
    try:
        with pytest.raises(fluxus.DeadlineExceeded):
            fn(True)
        assert _pool.ANY_CPU == worker.cpu
        assert os.sched_getaffinity(0) == os.sched_getaffinity(worker.thread_id)
    finally:
        release.set()


@pinning
def test_a_worker_started_by_a_pinned_worker_is_released_to_every_cpu():
    # A thread starts with its creator's CPUs: a worker seated by a call in
    # another worker (nested timeouts) was born on that worker's one CPU.
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two CPUs")
    inner = fluxus.timeout(5.0)(lambda: "ok")

    def nested() -> _pool.Worker:
        assert "ok" == inner()
        seated: _pool.Worker = _pool.HUB.local.seat.worker
        return seated

    worker = fluxus.timeout(5.0)(nested)()
    assert len(os.sched_getaffinity(worker.thread_id)) == 1  # pinned now
    worker.release()
    assert os.sched_getaffinity(0) == os.sched_getaffinity(worker.thread_id)


@pinning
def test_a_worker_that_cannot_be_pinned_stops_trying(monkeypatch):
    fn = fluxus.timeout(1.0)(lambda: "ok")
    tries = []

    def refuse(pid, cpus):
        tries.append(cpus)
        raise OSError("cpuset")

    monkeypatch.setattr(os, "sched_setaffinity", refuse)

    assert ["ok", "ok"] == run_in_thread(lambda: [fn(), fn()])
    assert 1 == len(tries)
