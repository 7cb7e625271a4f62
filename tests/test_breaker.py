from __future__ import annotations

import asyncio
import inspect
import math
import threading
import time
from datetime import timedelta

import fluxus
import pytest
from fluxus import CircuitState
from fluxus.instrumentation import CircuitRejected, CircuitStateChanged

from _clock import Clock

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")


class Service:
    """Fail with the queued exceptions (None: succeed) one per call, then succeed."""

    def __init__(self, *errors: BaseException | None) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return "ok"


class Stop(BaseException):
    """A BaseException that is not an Exception, like KeyboardInterrupt."""


@pytest.fixture
def clock():
    return Clock()


def call(mode, fn):
    """Call *fn*, returning its result or the exception it raised."""
    try:
        return mode.run(fn)
    except BaseException as exc:
        return exc


def transitions(events):
    return [
        (e.old_state, e.new_state) for e in events if isinstance(e, CircuitStateChanged)
    ]


def test_consecutive_failures_open_it_and_the_tripping_call_raises_its_own(
    mode, clock, events
):
    errors = [OSError(str(i)) for i in range(3)]
    service = Service(errors[0], errors[1], errors[2])
    breaker = fluxus.circuit_breaker(3, 10.0, clock=clock)
    fn = breaker(mode.make(service))

    outcomes = [call(mode, fn) for _ in range(4)]

    assert errors == outcomes[:3]
    assert isinstance(outcomes[3], fluxus.CircuitOpenError)
    assert 3 == service.calls
    assert CircuitState.OPEN == breaker.state
    assert errors[2] is breaker.last_error
    assert (breaker.name, 10.0) == (outcomes[3].name, outcomes[3].retry_after)
    (opened,) = [e for e in events if isinstance(e, CircuitStateChanged)]
    assert ("closed", "open", "3 consecutive failures", "builtins.OSError", "2") == (
        opened.old_state,
        opened.new_state,
        opened.reason,
        opened.error_type,
        opened.error_message,
    )
    (rejected,) = [e for e in events if isinstance(e, CircuitRejected)]
    assert ("open", 10.0) == (rejected.state, rejected.retry_after)


def test_a_success_resets_the_failure_count(mode, clock):
    service = Service(OSError(), OSError(), None, OSError(), OSError())
    breaker = fluxus.circuit_breaker(3, 10.0, clock=clock)
    fn = breaker(mode.make(service))

    for _ in range(5):
        call(mode, fn)

    assert CircuitState.CLOSED == breaker.state
    assert 5 == service.calls
    assert breaker.last_error is None


def test_retry_after_counts_down_on_the_clock(mode, clock):
    breaker = fluxus.circuit_breaker(1, timedelta(seconds=30), clock=clock)
    fn = breaker(mode.make(Service(OSError())))
    call(mode, fn)

    clock.advance(12.5)
    rejected = call(mode, fn)

    assert 17.5 == rejected.retry_after


def test_after_the_timeout_a_trial_success_closes_it(mode, clock, events):
    service = Service(OSError("down"))
    breaker = fluxus.circuit_breaker(1, 5.0, clock=clock)
    fn = breaker(mode.make(service))
    call(mode, fn)

    clock.advance(4.9)
    assert isinstance(call(mode, fn), fluxus.CircuitOpenError)
    clock.advance(0.1)
    assert CircuitState.OPEN == breaker.state  # it moves on the next call
    assert "ok" == mode.run(fn)

    assert CircuitState.CLOSED == breaker.state
    assert [("closed", "open"), ("open", "half-open"), ("half-open", "closed")] == (
        transitions(events)
    )


def test_a_trial_failure_reopens_it_and_restarts_the_timer(mode, clock):
    service = Service(OSError("a"), OSError("b"))
    breaker = fluxus.circuit_breaker(1, 5.0, clock=clock)
    fn = breaker(mode.make(service))
    call(mode, fn)
    clock.advance(5.0)

    trial = call(mode, fn)
    clock.advance(1.0)
    rejected = call(mode, fn)

    assert "b" == str(trial)
    assert trial is breaker.last_error
    assert 4.0 == rejected.retry_after
    assert CircuitState.OPEN == breaker.state


def test_success_threshold_above_the_trial_limit_closes_after_sequential_trials(
    mode, clock
):
    breaker = fluxus.circuit_breaker(
        1, 1.0, success_threshold=3, half_open_max_requests=1, clock=clock
    )
    fn = breaker(mode.make(Service(OSError())))
    call(mode, fn)
    clock.advance(1.0)

    states = []
    for _ in range(3):
        assert "ok" == mode.run(fn)
        states.append(breaker.state)

    assert [CircuitState.HALF_OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED] == (
        states
    )


def test_excluded_errors_count_neither_as_failure_nor_as_success(mode, clock):
    service = Service(OSError(), KeyError("k"), ValueError("v"), OSError())
    breaker = fluxus.circuit_breaker(
        2,
        1.0,
        exclude=[KeyError, lambda exc: str(exc) == "v"],
        clock=clock,
    )
    fn = breaker(mode.make(service))

    outcomes = [type(call(mode, fn)) for _ in range(5)]

    # Had an excluded error counted as a success, the second OSError would
    # not have opened the circuit.
    assert [OSError, KeyError, ValueError, OSError, fluxus.CircuitOpenError] == (
        outcomes
    )


def test_an_excluded_trial_frees_its_slot_and_keeps_it_half_open(mode, clock):
    service = Service(OSError(), KeyError("k"))
    breaker = fluxus.circuit_breaker(1, 1.0, exclude=KeyError, clock=clock)
    fn = breaker(mode.make(service))
    call(mode, fn)
    clock.advance(1.0)

    assert isinstance(call(mode, fn), KeyError)
    assert CircuitState.HALF_OPEN == breaker.state
    assert "ok" == mode.run(fn)
    assert CircuitState.CLOSED == breaker.state


def test_base_exceptions_count_neither(mode, clock):
    service = Service(OSError(), Stop(), OSError())
    breaker = fluxus.circuit_breaker(2, 1.0, clock=clock)
    fn = breaker(mode.make(service))

    outcomes = [type(call(mode, fn)) for _ in range(4)]

    assert [OSError, Stop, OSError, fluxus.CircuitOpenError] == outcomes


def test_open_by_hand_stays_open_until_reset(mode, clock, events):
    service = Service()
    breaker = fluxus.circuit_breaker(1, 1.0, clock=clock)
    fn = breaker(mode.make(service))

    breaker.open()
    breaker.open()
    clock.advance(3600.0)
    rejected = call(mode, fn)
    breaker.reset()
    breaker.reset()

    assert isinstance(rejected, fluxus.CircuitOpenError)
    assert math.inf == rejected.retry_after  # no wait is known
    assert "ok" == mode.run(fn)
    assert 1 == service.calls
    assert [("closed", "open"), ("open", "closed")] == transitions(events)
    assert ["", ""] == [
        e.function for e in events if isinstance(e, CircuitStateChanged)
    ]


def test_open_by_hand_over_an_open_circuit_keeps_it_open(mode, clock):
    breaker = fluxus.circuit_breaker(1, 1.0, clock=clock)
    fn = breaker(mode.make(Service(OSError())))
    call(mode, fn)

    breaker.open()
    clock.advance(10.0)

    assert isinstance(call(mode, fn), fluxus.CircuitOpenError)


def test_reset_closes_an_open_circuit(mode, clock):
    breaker = fluxus.circuit_breaker(1, 100.0, clock=clock)
    fn = breaker(mode.make(Service(OSError())))
    call(mode, fn)

    breaker.reset()

    assert CircuitState.CLOSED == breaker.state
    assert "ok" == mode.run(fn)


def test_one_breaker_on_several_functions_shares_one_circuit(mode, clock):
    breaker = fluxus.circuit_breaker(2, 1.0, clock=clock)
    first = breaker(mode.make(Service(OSError())))
    second = breaker(mode.make(Service(OSError())))

    call(mode, first)
    call(mode, second)

    assert isinstance(call(mode, first), fluxus.CircuitOpenError)


def test_the_default_name_is_the_first_function(mode):
    def first():
        return "ok"

    breaker = fluxus.circuit_breaker()
    fn = breaker(mode.make(first))
    breaker(mode.make(Service()))

    assert f"{fn.__module__}.{fn.__qualname__}" == breaker.name
    assert breaker.name.endswith("first")
    assert inspect.iscoroutinefunction(fn) == mode.is_async
    assert (breaker,) == fluxus.layers(fn)
    assert "billing" == fluxus.circuit_breaker(name="billing").name


def test_events_never_carry_arguments(mode, clock, events):
    breaker = fluxus.circuit_breaker(1, 1.0, clock=clock)
    fn = breaker(mode.make(Service(OSError("refused"))))

    for _ in range(2):
        with pytest.raises(Exception):  # noqa: B017 - both kinds
            mode.run(fn, "hunter2", token="hunter2")

    assert 2 == len(events)
    assert "hunter2" not in repr(events)


def test_trials_running_at_the_same_time_are_limited_sync(clock):
    breaker = fluxus.circuit_breaker(
        1, 1.0, success_threshold=3, half_open_max_requests=2, clock=clock
    )
    release = threading.Event()
    started = threading.Barrier(3)

    @breaker
    def slow():
        started.wait(timeout=5)
        release.wait(timeout=5)
        return "ok"

    fail = breaker(Service(OSError()))
    with pytest.raises(OSError):
        fail()
    clock.advance(1.0)
    results = []
    threads = [threading.Thread(target=lambda: results.append(slow())) for _ in "ab"]
    for thread in threads:
        thread.start()
    started.wait(timeout=5)

    with pytest.raises(fluxus.CircuitOpenError) as info:
        slow()
    release.set()
    for thread in threads:
        thread.join(timeout=5)

    assert 0.0 == info.value.retry_after
    assert ["ok", "ok"] == results
    assert CircuitState.HALF_OPEN == breaker.state  # 2 of 3 successes
    assert "ok" == fail()  # a freed slot admits the third trial
    assert CircuitState.CLOSED == breaker.state


def test_trials_running_at_the_same_time_are_limited_async(clock, events):
    breaker = fluxus.circuit_breaker(
        1, 1.0, success_threshold=2, half_open_max_requests=2, clock=clock
    )

    async def main():
        gate = asyncio.Event()

        @breaker
        async def slow(fail):
            await gate.wait()
            if fail:
                raise OSError("trial failed")
            return "ok"

        gate.set()
        with pytest.raises(OSError):
            await slow(True)
        gate.clear()
        clock.advance(1.0)
        first = asyncio.ensure_future(slow(False))
        second = asyncio.ensure_future(slow(True))
        await asyncio.sleep(0)
        with pytest.raises(fluxus.CircuitOpenError):
            await slow(False)
        gate.set()
        return await asyncio.gather(first, second, return_exceptions=True)

    first, second = asyncio.run(main())

    assert "ok" == first
    assert isinstance(second, OSError)
    assert CircuitState.OPEN == breaker.state
    assert ["half-open"] == [e.state for e in events if isinstance(e, CircuitRejected)]


def test_cancelled_trials_count_neither_and_free_their_slot(clock):
    breaker = fluxus.circuit_breaker(1, 1.0, clock=clock)

    async def main():
        @breaker
        async def fn(fail, block):
            if block:
                await asyncio.Event().wait()
            if fail:
                raise OSError
            return "ok"

        with pytest.raises(OSError):
            await fn(True, False)
        clock.advance(1.0)
        task = asyncio.ensure_future(fn(False, True))
        await asyncio.sleep(0)
        with pytest.raises(fluxus.CircuitOpenError):
            await fn(False, False)  # the trial holds the only slot
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = breaker.state
        return state, await fn(False, False)

    assert (CircuitState.HALF_OPEN, "ok") == asyncio.run(main())
    assert CircuitState.CLOSED == breaker.state


def test_cancelled_calls_never_count_as_failures(clock):
    breaker = fluxus.circuit_breaker(1, 1.0, clock=clock)

    async def main():
        @breaker
        async def fn():
            await asyncio.sleep(10)

        for _ in range(3):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.001):
                    await fn()

    asyncio.run(main())

    assert CircuitState.CLOSED == breaker.state


def test_a_slow_call_admitted_before_the_circuit_opened_does_not_count(clock):
    breaker = fluxus.circuit_breaker(1, 5.0, clock=clock)
    entered, release = threading.Event(), threading.Event()

    @breaker
    def slow():
        entered.set()
        release.wait(timeout=5)
        raise OSError("late")

    fast = breaker(Service(OSError("first")))

    def late():
        with pytest.raises(OSError):
            slow()

    thread = threading.Thread(target=late)
    thread.start()
    entered.wait(timeout=5)
    with pytest.raises(OSError):
        fast()
    clock.advance(5.0)
    assert "ok" == fast()  # the trial closes it again
    release.set()
    thread.join(timeout=5)

    assert CircuitState.CLOSED == breaker.state


def test_calls_through_one_breaker_run_concurrently():
    threads, calls = 8, 5

    def work():
        time.sleep(0.01)

    protected = fluxus.circuit_breaker(name="contention")(work)

    def run(fn):
        def worker():
            for _ in range(calls):
                fn()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        start = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=10)
        return time.perf_counter() - start

    bare = run(work)
    through = run(protected)

    # Serialised calls would take threads x longer; the precise ratio is
    # the benchmark's business.
    assert through < 3 * bare


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1"),
        ({"failure_threshold": 1.5}, TypeError, "failure_threshold must be an int"),
        ({"failure_threshold": True}, TypeError, "failure_threshold"),
        ({"reset_timeout": 0}, ValueError, "reset_timeout must be finite and > 0"),
        ({"reset_timeout": -1.0}, ValueError, "reset_timeout"),
        ({"reset_timeout": "30"}, TypeError, "reset_timeout"),
        ({"success_threshold": 0}, ValueError, "success_threshold must be >= 1"),
        ({"half_open_max_requests": 0}, ValueError, "half_open_max_requests"),
        ({"exclude": 3}, TypeError, "exclude must be"),
        ({"exclude": [int]}, TypeError, "exclude must hold"),
        ({"exclude": [3]}, TypeError, "exclude must hold"),
        ({"name": ""}, ValueError, "name must be"),
        ({"clock": 3}, TypeError, "clock must be"),
        ({"storage": "memcached://x"}, ValueError, "storage must be a Redis URL"),
        ({"storage": "redis://:pw@host:bad"}, ValueError, "storage is not a usable"),
        ({"storage": 42}, TypeError, "storage must be None, a Redis URL"),
    ],
)
def test_bad_configuration_fails_when_built(kwargs, error, match):
    with pytest.raises(error, match=match) as info:
        fluxus.circuit_breaker(**kwargs)

    assert "pw" not in str(info.value)


def test_memory_url_and_timedelta_are_accepted():
    breaker = fluxus.CircuitBreaker(
        reset_timeout=timedelta(milliseconds=1500), storage="memory://"
    )

    assert 1.5 == breaker.reset_timeout
    assert ((), ()) == (breaker._excluded_types, breaker._excluded_predicates)
    assert fluxus.circuit_breaker(exclude=None)._counts(KeyError())
    assert CircuitState.CLOSED == breaker.state
    assert "half-open" == CircuitState.HALF_OPEN.value


def test_the_steps_a_compiled_stack_uses(clock, events):
    breaker = fluxus.circuit_breaker(1, 2.0, clock=clock)

    token = breaker._admit("f")
    breaker._record_failure(token, OSError("x"), "f")
    with pytest.raises(fluxus.CircuitOpenError) as info:
        breaker._admit("f")
    clock.advance(2.0)
    trial = breaker._admit("f")
    breaker._record_success(trial, "f")

    assert 2.0 == info.value.retry_after
    assert CircuitState.CLOSED == breaker.state
    assert [("closed", "open"), ("open", "half-open"), ("half-open", "closed")] == (
        transitions(events)
    )


def test_without_hooks_nothing_is_built(clock):
    breaker = fluxus.circuit_breaker(1, 2.0, clock=clock)
    fn = breaker(Service(OSError("x")))
    with fluxus.testing.capture_events() as events:
        fluxus.instrumentation.set_hooks([])
        try:
            with pytest.raises(OSError):
                fn()
            with pytest.raises(fluxus.CircuitOpenError):
                fn()
        finally:
            fluxus.instrumentation.set_hooks(None)

    assert [] == events
    assert "x" == str(breaker.last_error)
