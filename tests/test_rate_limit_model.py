"""The token bucket against a plainly written reference, step by step.

A Hypothesis state machine takes, cancels, changes the rate and the burst,
and moves a fake clock, on fluxus's in-memory buckets and on the Lua script
in a real redis-server (given the same clock), and checks every answer
against :class:`Reference`: a bucket of tokens refilled at the rate, capped
at the burst, that a waiter may overdraw.
"""

from __future__ import annotations

import math
import uuid

import pytest
from fluxus._rate_limit._gcra import Bucket
from fluxus._rate_limit._memory import MemoryTokenBuckets
from fluxus._rate_limit._redis_store import RedisTokenBuckets
from hypothesis import settings
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


class Reference:
    """A token bucket as a textbook writes it."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last = now

    def refill(self, now: float) -> None:
        if self.tokens < self.burst:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now

    def wait(self, cost: int, now: float) -> float:
        self.refill(now)
        return max(0.0, (cost - self.tokens) / self.rate)

    def take(self, cost: int, now: float) -> None:
        self.refill(now)
        self.tokens -= cost

    def give_back(self, cost: int, now: float) -> None:
        self.refill(now)
        # a bucket never holds more than its burst, tokens given back or not
        self.tokens = min(float(self.burst), self.tokens + cost)

    def change(self, rate: float, burst: int, now: float) -> None:
        self.refill(now)
        # the tokens held, at most the new burst; a full bucket stays full
        full = self.tokens >= self.burst
        self.tokens = float(burst) if full else min(burst, self.tokens)
        self.rate, self.burst = rate, burst


class BucketMachine(RuleBasedStateMachine):
    store_kind = "memory"
    redis_url = ""
    tolerance = 1e-6

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock(1_000_000.0)
        if self.store_kind == "memory":
            self.store = MemoryTokenBuckets(self.clock)
        else:
            self.store = RedisTokenBuckets(self.redis_url, clock=self.clock)
        self.key = f"model:{uuid.uuid4().hex}"
        self.pending: list[tuple[float, int, object]] = []  # (due, cost, ticket)
        # A new limit is applied to a key at its next take: the machine
        # changes the limit again only once a take has counted the last one.
        self.counted = True

    def teardown(self) -> None:
        # Each example has its own store: close its client now rather than
        # leave its socket to the garbage collector (a ResourceWarning).
        client = getattr(self.store, "_sync", None)
        if client is not None:
            client.close()

    @initialize(rate=st.sampled_from([1.0, 2.0, 5.0, 10.0]), burst=st.integers(3, 6))
    def start(self, rate: float, burst: int) -> None:
        self.buckets = (Bucket(1.0 / rate, burst),)
        self.ref = Reference(rate, burst, self.clock.now)

    @rule(
        cost=st.integers(1, 3),
        max_wait=st.sampled_from([0.0, 0.25, 1.0, 3.0, math.inf]),
    )
    def take(self, cost: int, max_wait: float) -> None:
        now = self.clock.now
        expected = self.ref.wait(cost, now)
        answer = self.store.take(self.key, self.buckets, max_wait, cost)
        assert answer.wait == pytest.approx(expected, abs=self.tolerance * 10)
        if abs(expected - max_wait) > 1e-3:
            assert answer.admitted == (expected <= max_wait)
        if answer.admitted:
            self.counted = True
            self.ref.take(cost, now)
            if answer.token is not None:
                self.pending.append((now + answer.wait, cost, answer.token))

    @rule(seconds=st.sampled_from([0.0, 0.01, 0.1, 0.37, 1.0, 5.0]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        for _due, _, ticket in [p for p in self.pending if p[0] <= self.clock.now]:
            self.store.admitted(ticket)
        self.pending = [p for p in self.pending if p[0] > self.clock.now]

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1))
        _, cost, ticket = self.pending.pop(index)
        self.store.refund(ticket)
        self.ref.give_back(cost, self.clock.now)

    def change(self, interval: float, burst: int) -> None:
        bucket = Bucket(interval, burst, self.clock.now)
        if bucket != self.buckets[0]:  # a limit set again is no change
            self.buckets = (bucket,)
            self.ref.change(1.0 / interval, burst, self.clock.now)
            self.counted = False

    @precondition(lambda self: self.counted)
    @rule(rate=st.sampled_from([1.0, 2.0, 5.0, 10.0]))
    def set_rate(self, rate: float) -> None:
        self.change(1.0 / rate, self.buckets[0].capacity)

    @precondition(lambda self: self.counted)
    @rule(burst=st.integers(3, 6))
    def set_burst(self, burst: int) -> None:
        self.change(self.buckets[0].interval, burst)

    @invariant()
    def never_more_than_the_reference(self) -> None:
        if hasattr(self, "ref"):
            peeked = self.store.peek(self.key, self.buckets)
            expected = self.ref.wait(1, self.clock.now)
            assert peeked == pytest.approx(expected, abs=self.tolerance * 10)


def test_memory_buckets_match_the_reference() -> None:
    run_state_machine_as_test(
        BucketMachine,
        settings=settings(max_examples=40, stateful_step_count=25, deadline=None),
    )


def test_the_lua_script_matches_the_reference(redis_url: str) -> None:
    class RedisMachine(BucketMachine):
        store_kind = "redis"
        tolerance = 1e-5  # Redis stores TATs to the microsecond

    RedisMachine.redis_url = redis_url
    run_state_machine_as_test(
        RedisMachine,
        settings=settings(max_examples=15, stateful_step_count=20, deadline=None),
    )
