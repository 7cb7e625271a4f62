"""Failure-rate and slow-call windows: the pure circuit against a plain model,
and the exact opening points through the decorator on a fake clock."""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import uuid

import fluxus
import pytest
from fluxus import CircuitState
from fluxus._breaker._circuit import BUCKETS, Circuit, Window
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from _clock import Clock

RESET_TIMEOUT = 10.0
WINDOW = 10.0  # buckets of one second


class Boom(Exception):
    pass


# -- the plain model ------------------------------------------------------


class WindowModel:
    """The closed circuit's rules with every finished call kept in a list.

    A call finished at *t* is in the window at *now* when its one-second
    bucket is one of the last ten: ``floor(t / w) > floor(now / w) - 10``.
    """

    def __init__(self, failure_threshold, failure_rate, minimum_calls, slow_call_rate):
        self.failure_threshold = failure_threshold
        self.failure_rate = failure_rate
        self.minimum_calls = minimum_calls
        self.slow_call_rate = slow_call_rate
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.finished: list[tuple[float, bool, bool]] = []  # (time, failed, slow)
        self.live: set[int] = set()
        self.trials: set[int] = set()

    def move(self, state):
        old, self.state = self.state, state
        self.failures = 0
        self.finished = []
        self.live.clear()
        self.trials.clear()
        return (old, state)

    def admit(self, call, now):
        moved = None
        if self.state == "open":
            if now < self.opened_at + RESET_TIMEOUT:
                return False, moved
            moved = self.move("half-open")
        if self.state == "half-open":
            if self.trials:
                return False, moved
            self.trials.add(call)
        self.live.add(call)
        return True, moved

    def in_window(self, now):
        width = WINDOW / BUCKETS
        newest = math.floor(now / width)
        return [c for c in self.finished if math.floor(c[0] / width) > newest - BUCKETS]

    def finish(self, call, failed, slow, now):  # noqa: PLR0911 - one return per rule
        if call not in self.live:
            return None
        self.live.discard(call)
        if call in self.trials:  # one trial closes or opens
            self.trials.discard(call)
            if failed:
                self.opened_at = now
                return self.move("open")
            return self.move("closed")
        if self.state != "closed":
            return None
        if failed:
            self.failures += 1
            if (
                self.failure_threshold is not None
                and self.failures >= self.failure_threshold
            ):
                self.opened_at = now
                return self.move("open")
        else:
            self.failures = 0
        self.finished.append((now, failed, slow))
        recent = self.in_window(now)
        if len(recent) < self.minimum_calls:
            return None
        failed_share = sum(c[1] for c in recent) / len(recent)
        slow_share = sum(c[2] for c in recent) / len(recent)
        if (self.failure_rate is not None and failed_share >= self.failure_rate) or (
            self.slow_call_rate is not None and slow_share >= self.slow_call_rate
        ):
            self.opened_at = now
            return self.move("open")
        return None


def pair(transition):
    return None if transition is None else (transition.old.value, transition.new.value)


class WindowMachine(RuleBasedStateMachine):
    @initialize(
        failure_threshold=st.sampled_from([None, 2, 4]),
        failure_rate=st.sampled_from([None, 0.25, 0.5, 1.0]),
        minimum_calls=st.integers(1, 4),
        slow_call_rate=st.sampled_from([None, 0.5, 1.0]),
    )
    def setup(self, failure_threshold, failure_rate, minimum_calls, slow_call_rate):
        if failure_rate is None and slow_call_rate is None:
            failure_rate = 0.5
        self.now = 0.0
        self.next_id = 0
        self.running: list[tuple[int, object]] = []
        self.circuit = self.make_circuit(
            failure_threshold, failure_rate, minimum_calls, slow_call_rate
        )
        self.model = WindowModel(
            failure_threshold, failure_rate, minimum_calls, slow_call_rate
        )

    def make_circuit(
        self, failure_threshold, failure_rate, minimum_calls, slow_call_rate
    ):
        return Circuit(
            failure_threshold,
            RESET_TIMEOUT,
            1,
            1,
            failure_rate=failure_rate,
            window=WINDOW,
            minimum_calls=minimum_calls,
            slow_call_rate=slow_call_rate,
        )

    @rule()
    def start_call(self):
        call, self.next_id = self.next_id, self.next_id + 1
        token, _, transition = self.circuit.admit(self.now)
        admitted, moved = self.model.admit(call, self.now)
        assert (admitted, moved) == (token is not None, pair(transition))
        if token is not None:
            self.running.append((call, token))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), failed=st.booleans(), slow=st.booleans())
    def finish_call(self, data, failed, slow):
        call, token = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        if failed:
            transition = self.circuit.fail(token, self.now, slow=slow)
        else:
            transition = self.circuit.succeed(token, self.now, slow=slow)
        assert self.model.finish(call, failed, slow, self.now) == pair(transition)

    @rule(seconds=st.sampled_from([0.25, 1.0, 3.0, WINDOW - 1.0, WINDOW]))
    def tick(self, seconds):
        self.now += seconds

    @invariant()
    def same_state(self):
        assert self.model.state == self.circuit.state.value
        assert self.model.failures == self.circuit.failures


WindowMachine.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
test_the_window_follows_the_plain_model = WindowMachine.TestCase


# -- exact opening points through the decorator -----------------------------


def outcome(mode, fn):
    try:
        return mode.run(fn)
    except Exception as exc:
        return exc


def calls(mode, breaker, clock, pattern, *, took=0.0):
    """Run one call per letter of *pattern* (S succeeds, F fails)."""
    results = []
    for letter in pattern:

        def body(letter=letter):
            clock.now += took
            if letter == "F":
                raise Boom
            return "ok"

        results.append(outcome(mode, breaker(mode.make(body))))
    return results


def rate_breaker(clock, **kwargs):
    options = {"failure_threshold": None, "failure_rate": 0.5, "window": WINDOW}
    return fluxus.circuit_breaker(**(options | kwargs), clock=clock)


def test_a_rate_just_under_the_threshold_keeps_it_closed(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=100)
    calls(mode, breaker, clock, "S" * 51 + "F" * 49)  # 49 of 100 failed
    assert breaker.state is CircuitState.CLOSED


def test_the_call_that_brings_the_rate_to_the_threshold_opens_it(mode, events):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=100)
    results = calls(mode, breaker, clock, "S" * 50 + "F" * 50 + "S")
    assert isinstance(results[99], Boom)  # the 100th call, 50 of 100 failed
    assert isinstance(results[100], fluxus.CircuitOpenError)
    changes = [
        e for e in events if isinstance(e, fluxus.instrumentation.CircuitStateChanged)
    ]
    assert [(c.old_state, c.new_state, c.reason) for c in changes] == [
        ("closed", "open", "50 of the last 100 calls failed")
    ]


def test_no_rate_counts_below_minimum_calls(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=4)
    calls(mode, breaker, clock, "FFF")
    assert breaker.state is CircuitState.CLOSED  # 3 of 3, but only 3 calls
    calls(mode, breaker, clock, "F")
    assert breaker.state is CircuitState.OPEN


def test_a_success_can_complete_minimum_calls_and_open_it(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=4)
    results = calls(mode, breaker, clock, "FFFSS")
    assert results[3] == "ok"  # 3 of 4 failed: the success opens it
    assert isinstance(results[4], fluxus.CircuitOpenError)


def test_calls_that_left_the_window_no_longer_count(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=4)
    calls(mode, breaker, clock, "FF")
    clock.now += WINDOW
    calls(mode, breaker, clock, "SSF")  # 1 of 3 now; 3 of 5 with the old ones
    assert breaker.state is CircuitState.CLOSED
    calls(mode, breaker, clock, "F")  # 2 of 4
    assert breaker.state is CircuitState.OPEN


def test_with_the_consecutive_rule_off_failures_in_a_row_do_not_open_it(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=20)
    calls(mode, breaker, clock, "F" * 19)
    assert breaker.state is CircuitState.CLOSED


def test_both_rules_the_first_to_trip_opens_it(mode):
    clock = Clock()
    breaker = rate_breaker(clock, failure_threshold=3, minimum_calls=100)
    calls(mode, breaker, clock, "FFF")
    assert breaker.state is CircuitState.OPEN


def test_slow_calls_that_succeed_return_their_result_and_open_it(mode, events):
    clock = Clock()
    breaker = fluxus.circuit_breaker(
        None,
        slow_call_duration=1.0,
        slow_call_rate=0.5,
        minimum_calls=4,
        window=WINDOW,
        clock=clock,
    )
    assert calls(mode, breaker, clock, "SS", took=0.99) == ["ok", "ok"]  # not slow
    assert calls(mode, breaker, clock, "S", took=1.0) == ["ok"]  # 1 of 3 slow
    assert breaker.state is CircuitState.CLOSED
    assert calls(mode, breaker, clock, "S", took=1.0) == ["ok"]  # 2 of 4 slow
    assert breaker.state is CircuitState.OPEN
    changes = [
        e for e in events if isinstance(e, fluxus.instrumentation.CircuitStateChanged)
    ]
    assert changes[-1].reason == "2 of the last 4 calls were slow"
    assert breaker.stats.failures == 0


def test_slow_blocks_count_like_slow_calls():
    clock = Clock()
    breaker = fluxus.circuit_breaker(
        None, slow_call_duration=1.0, minimum_calls=1, clock=clock
    )
    with breaker:
        clock.now += 1.0
    assert breaker.state is CircuitState.OPEN


def test_the_window_starts_empty_after_the_circuit_closes(mode):
    clock = Clock()
    breaker = rate_breaker(clock, minimum_calls=2, reset_timeout=1.0)
    calls(mode, breaker, clock, "FF")
    assert breaker.state is CircuitState.OPEN
    clock.now += 1.0
    calls(mode, breaker, clock, "S")  # the trial closes it
    calls(mode, breaker, clock, "F")  # 1 of 1, under minimum_calls
    assert breaker.state is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"failure_rate": 0}, ValueError, r"failure_rate must be > 0 and <= 1, got 0"),
        (
            {"failure_rate": "1"},
            TypeError,
            r"failure_rate must be a number in \(0, 1\] or None",
        ),
        (
            {"slow_call_rate": 2.0},
            ValueError,
            r"slow_call_rate must be > 0 and <= 1, got 2.0",
        ),
        ({"window": 0}, ValueError, "window must be finite and > 0 seconds, got 0"),
        ({"minimum_calls": 0}, ValueError, "minimum_calls must be >= 1, got 0"),
        ({"slow_call_duration": -1}, ValueError, "slow_call_duration"),
        (
            {"failure_threshold": None},
            ValueError,
            "failure_threshold must be an int >= 1 when",
        ),
    ],
)
def test_bad_window_settings_fail_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.circuit_breaker(**kwargs)


def test_configure_can_turn_the_failure_rate_on():
    clock = Clock()
    breaker = fluxus.circuit_breaker(5, clock=clock)
    breaker.configure(failure_rate=0.5, minimum_calls=2)
    fn = breaker(lambda: (_ for _ in ()).throw(Boom()))
    for _ in range(2):
        with pytest.raises(Boom):
            fn()
    assert breaker.state is CircuitState.OPEN
    assert (breaker.failure_rate, breaker.minimum_calls, breaker.window) == (
        0.5,
        2,
        60.0,
    )


# -- the same in Redis ------------------------------------------------------


class RedisWindowMachine(WindowMachine):
    """The Lua scripts behind the pure circuit's interface, on a fake clock."""

    url = ""

    def make_circuit(
        self, failure_threshold, failure_rate, minimum_calls, slow_call_rate
    ):
        settings = super().make_circuit(
            failure_threshold, failure_rate, minimum_calls, slow_call_rate
        )
        name = f"window-{uuid.uuid4().hex}"
        storage = fluxus.CircuitRedisStorage(self.url, trial_timeout=1e9)
        self.redis = storage.circuit(settings, lambda: name)
        self.redis.clock = lambda: self.now
        self.redis.defer_successes = False  # each step its own script here
        return self

    def admit(self, now):
        assert now == self.now
        return self.redis.admit("f")

    def succeed(self, token, now, *, slow):
        return self.redis.succeed(token, "f", slow=slow)

    def fail(self, token, now, *, slow):
        return self.redis.fail(token, "f", slow=slow)

    @property
    def state(self):
        return self.redis.state()

    @property
    def failures(self):
        client = self.redis.storage.sync_client()
        return int(client.hget(self.redis._keys()[0], "failures") or 0)


@pytest.mark.timeout(240)  # a few thousand scripts on a loaded machine
def test_the_lua_window_follows_the_same_model(redis_url):
    class Machine(RedisWindowMachine):
        url = redis_url

    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


@pytest.fixture(params=["memory", "redis"])
def where(request):
    """Build breakers in memory or in a real Redis, on the test's fake clock."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None

    def build(clock, **kwargs):
        if url is None:
            return fluxus.circuit_breaker(**kwargs, clock=clock)
        breaker = fluxus.circuit_breaker(
            **kwargs, clock=clock, storage=url, name=f"w-{uuid.uuid4().hex}"
        )
        breaker.reset()  # builds the storage
        breaker._storage.clock = clock
        return breaker

    return build


def test_the_opening_point_in_memory_and_redis(mode, where):
    clock = Clock()
    options = {"failure_threshold": None, "failure_rate": 0.5, "window": WINDOW}
    under = where(clock, minimum_calls=100, **options)
    results = calls(mode, under, clock, "S" * 51 + "F" * 49 + "S")
    assert results[-1] == "ok"  # 49 of 100 failed: still closed
    at = where(clock, minimum_calls=100, **options)
    results = calls(mode, at, clock, "S" * 50 + "F" * 50 + "S")
    assert isinstance(results[99], Boom)
    assert isinstance(results[100], fluxus.CircuitOpenError)


def test_minimum_calls_and_the_slide_in_memory_and_redis(mode, where):
    clock = Clock()
    breaker = where(
        clock, failure_threshold=None, failure_rate=0.5, minimum_calls=4, window=WINDOW
    )
    results = calls(mode, breaker, clock, "FF")
    clock.now += WINDOW
    results = calls(mode, breaker, clock, "SSFS")  # 1 of 4, not 3 of 6
    assert results[-1] == "ok"
    results = calls(mode, breaker, clock, "FFS")  # 3 of 6 when the S is counted
    assert isinstance(results[-1], fluxus.CircuitOpenError)


def test_slow_successes_open_it_in_memory_and_redis(mode, where):
    clock = Clock()
    breaker = where(
        clock,
        failure_threshold=None,
        slow_call_duration=1.0,
        slow_call_rate=0.5,
        minimum_calls=4,
        window=WINDOW,
    )
    assert calls(mode, breaker, clock, "SS", took=0.99) == ["ok", "ok"]
    assert calls(mode, breaker, clock, "SS", took=1.0) == ["ok", "ok"]
    assert isinstance(calls(mode, breaker, clock, "S")[0], fluxus.CircuitOpenError)


PROCESS = """
import sys, fluxus
url, name, minimum = sys.argv[1], sys.argv[2], int(sys.argv[3])
breaker = fluxus.circuit_breaker(
    None, failure_rate=0.5, minimum_calls=minimum, storage=url, name=name
)
@breaker
def work(fail):
    if fail:
        raise OSError
for fail in (False, True):
    try:
        work(fail)
    except OSError:
        pass
"""


@pytest.mark.parametrize(("minimum", "state"), [(8, "open"), (9, "closed")])
def test_four_processes_fill_one_window(redis_url, minimum, state):
    name = f"procs-{uuid.uuid4().hex}"
    processes = [
        subprocess.Popen([sys.executable, "-c", PROCESS, redis_url, name, str(minimum)])
        for _ in range(4)
    ]
    assert [p.wait(timeout=60) for p in processes] == [0] * 4
    breaker = fluxus.circuit_breaker(
        None, failure_rate=0.5, minimum_calls=minimum, storage=redis_url, name=name
    )
    assert breaker.state.value == state  # 4 of 8 calls failed


def test_slow_calls_under_a_stack(mode):
    clock = Clock()
    breaker = fluxus.circuit_breaker(
        None, slow_call_duration=1.0, minimum_calls=2, clock=clock
    )
    fn = fluxus.stack(breaker, fluxus.retry(1))

    def body():
        clock.now += 1.0
        return "ok"

    wrapped = fn(mode.make(body))
    assert [outcome(mode, wrapped) for _ in range(2)] == ["ok", "ok"]
    assert isinstance(outcome(mode, wrapped), fluxus.CircuitOpenError)


def test_threads_lose_no_call_in_the_window():
    import threading

    breaker = fluxus.circuit_breaker(
        None, failure_rate=1.0, minimum_calls=10**9, clock=lambda: 5.0
    )

    @breaker
    def work(i):
        if i % 10 == 0:
            raise Boom
        return i

    def worker():
        for i in range(500):
            with contextlib.suppress(Boom):
                work(i)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    breaker.reset()  # a locked step: counts the queued quick successes
    window = breaker._circuit.window
    assert (window.calls, window.failures) == (4000, 400)


@given(
    span=st.floats(0.001, 1000, allow_nan=False),
    now=st.floats(0, 1e6, allow_nan=False),
    later=st.floats(0, 1e3, allow_nan=False),
)
def test_the_newest_buckets_end_agrees_with_the_bucket_of_a_call(span, now, later):
    """``now < window.ends`` (the quick success's check) never errs late."""
    window = Window(span)
    window.add(now, False, False)
    head = window.head
    for instant in (now, now + later, window.ends, math.nextafter(window.ends, 0)):
        if instant < window.ends:
            assert math.floor(instant / window.width) == head
    # A few float steps early at most: nearly every quick success is quick.
    assert window.ends > (head + 1) * window.width - window.width / 2
