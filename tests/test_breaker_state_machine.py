"""The breaker's pure state machine against a reference model, and under threads."""

from __future__ import annotations

import math
import random
import threading
import time
from collections import Counter

import fluxus
import pytest
from fluxus._breaker._circuit import Circuit, CircuitState
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

RESET_TIMEOUT = 10.0


class Model:
    """The rules of API.md, written as plainly as possible.

    Calls are remembered by id: ``live`` holds the calls whose outcome still
    counts (admitted since the last state change), ``trials`` the half-open
    trials running now.
    """

    def __init__(self, failure_threshold, success_threshold, max_trials):
        self.failure_threshold = failure_threshold
        self.success_threshold = success_threshold
        self.max_trials = max_trials
        self.state = "closed"
        self.failures = self.successes = 0
        self.opened_at = 0.0
        self.forced = False
        self.live: set[int] = set()
        self.trials: set[int] = set()

    def move(self, state):
        old, self.state = self.state, state
        self.failures = self.successes = 0
        self.live.clear()
        self.trials.clear()
        return (old, state)

    def open(self, now):
        self.opened_at = now
        return self.move("open")

    def admit(self, call, now):
        """Return (admitted, retry_after, transition)."""
        moved = None
        if self.state == "open":
            if self.forced:
                return False, math.inf, None
            if now < self.opened_at + RESET_TIMEOUT:
                return False, self.opened_at + RESET_TIMEOUT - now, None
            moved = self.move("half-open")
        if self.state == "half-open":
            if len(self.trials) == self.max_trials:
                return False, 0.0, moved
            self.trials.add(call)
        self.live.add(call)
        return True, 0.0, moved

    def finish(self, call, outcome, now):  # noqa: PLR0911 - one return per rule
        if call not in self.live:
            return None
        self.live.discard(call)
        trial = call in self.trials
        self.trials.discard(call)
        if outcome == "neither":
            return None
        if trial:
            if outcome == "failure":
                return self.open(now)
            self.successes += 1
            if self.successes == self.success_threshold:
                return self.move("closed")
            return None
        if outcome == "success":
            self.failures = 0
            return None
        self.failures += 1
        if self.failures == self.failure_threshold:
            return self.open(now)
        return None


def pair(transition):
    return None if transition is None else (transition.old.value, transition.new.value)


class CircuitMachine(RuleBasedStateMachine):
    @initialize(
        failure_threshold=st.integers(1, 3),
        success_threshold=st.integers(1, 3),
        max_trials=st.integers(1, 3),
    )
    def setup(self, failure_threshold, success_threshold, max_trials):
        self.now = 0.0
        self.next_id = 0
        self.running: list[tuple[int, int]] = []
        self.circuit = self.make_circuit(
            failure_threshold, success_threshold, max_trials
        )
        self.model = Model(failure_threshold, success_threshold, max_trials)

    def make_circuit(self, failure_threshold, success_threshold, max_trials):
        return Circuit(failure_threshold, RESET_TIMEOUT, success_threshold, max_trials)

    @rule()
    def start_call(self):
        call, self.next_id = self.next_id, self.next_id + 1
        token, retry_after, transition = self.circuit.admit(self.now)
        admitted, expected_wait, expected_move = self.model.admit(call, self.now)
        assert (admitted, expected_wait, expected_move) == (
            token is not None,
            pytest.approx(retry_after),
            pair(transition),
        )
        if token is not None:
            self.running.append((call, token))

    @precondition(lambda self: self.running)
    @rule(data=st.data(), outcome=st.sampled_from(["success", "failure", "neither"]))
    def finish_call(self, data, outcome):
        index = data.draw(st.integers(0, len(self.running) - 1))
        call, token = self.running.pop(index)
        if outcome == "success":
            transition = self.circuit.succeed(token)
        elif outcome == "failure":
            transition = self.circuit.fail(token, self.now)
        else:
            transition = self.circuit.release(token)
        assert self.model.finish(call, outcome, self.now) == pair(transition)

    @rule(seconds=st.sampled_from([0.5, 5.0, RESET_TIMEOUT - 0.5, RESET_TIMEOUT]))
    def tick(self, seconds):
        self.now += seconds

    @rule()
    def reset(self):
        expected = None if self.model.state == "closed" else self.model.move("closed")
        self.model.forced = False
        self.model.failures = 0
        assert expected == pair(self.circuit.reset())

    @rule()
    def force_open(self):
        self.model.forced = True
        expected = None if self.model.state == "open" else self.model.open(self.now)
        assert expected == pair(self.circuit.force_open(self.now))

    @invariant()
    def same_state(self):
        model = self.model
        circuit = self.circuit
        assert (model.state, model.failures, model.successes, len(model.trials)) == (
            circuit.state.value,
            circuit.failures,
            circuit.successes,
            circuit.trials,
        )
        assert circuit.trials <= circuit.max_trials


CircuitMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None
)
test_circuit_follows_the_reference_model = CircuitMachine.TestCase


class CountingStorage:
    """Count the running trials of each epoch around the real storage.

    The count goes up after the storage handed out a trial token and down
    before the trial's outcome reaches it, so it never exceeds the slots the
    storage really holds.
    """

    def __init__(self, storage):
        self.storage = storage
        self.lock = threading.Lock()
        self.running: Counter[int] = Counter()
        self.worst: Counter[int] = Counter()

    def admit(self, function):
        token, wait, transition = self.storage.admit(function)
        if token is not None and token & 1:
            with self.lock:
                self.running[token >> 1] += 1
                self.worst[token >> 1] = max(
                    self.worst[token >> 1], self.running[token >> 1]
                )
        return token, wait, transition

    def _finished(self, token):
        if token & 1:
            with self.lock:
                self.running[token >> 1] -= 1

    def succeed(self, token, function, *, slow=False):
        self._finished(token)
        return self.storage.succeed(token, function, slow=slow)

    def fail(self, token, function, *, slow=False):
        self._finished(token)
        return self.storage.fail(token, function, slow=slow)

    def release(self, token, function):
        self._finished(token)
        return self.storage.release(token, function)


def random_outcome(rng):
    time.sleep(rng.choice((0, 0, 0.001)))  # let trials overlap
    choice = rng.random()
    if choice < 0.4:
        raise OSError
    if choice < 0.45:
        raise KeyboardInterrupt  # a BaseException: counts as neither
    return "ok"


def hammer(work, seed, results):
    outcomes = Counter()
    results.append(outcomes)  # one Counter per thread: += is not atomic
    rng = random.Random(seed)  # noqa: S311 - reproducible, not secret
    for _ in range(300):
        try:
            work(rng)
            outcomes["ok"] += 1
        except fluxus.CircuitOpenError:
            outcomes["rejected"] += 1
        except (OSError, KeyboardInterrupt):
            outcomes["error"] += 1


def test_many_threads_with_random_outcomes_keep_the_invariants():
    """Trial tokens of one epoch never outnumber the slots; nothing leaks."""
    clock_lock = threading.Lock()
    now = [0.0]

    def clock():
        with clock_lock:
            now[0] += 0.001
            return now[0]

    breaker = fluxus.circuit_breaker(
        2, 0.05, success_threshold=3, half_open_max_requests=2, clock=clock
    )
    breaker.reset()  # builds the in-memory storage, which is then wrapped
    counting = CountingStorage(breaker._storage)
    breaker._storage = counting
    results = []
    work = breaker(random_outcome)
    threads = [
        threading.Thread(target=hammer, args=(work, seed, results)) for seed in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    outcomes = sum(results, Counter())

    assert 8 * 300 == sum(outcomes.values())
    assert outcomes["rejected"] > 0
    assert counting.worst  # half-open was reached
    assert max(counting.worst.values()) <= 2
    assert {0} >= set(counting.running.values())
    circuit = breaker._circuit
    if circuit.state is CircuitState.HALF_OPEN:
        assert 0 == circuit.trials  # every finished trial gave its slot back
