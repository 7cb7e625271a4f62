"""fluxus's memory windows admit exactly what limits' memory strategies admit.

One sequence of calls (keys, costs, clock steps) is replayed through
fluxus's own fixed window, sliding window counter and moving window and
through limits' strategies over its ``MemoryStorage``, both on one fake
clock, and every call must get the same answer. fluxus counts these windows
itself for speed (``benchmarks/bench_rate_limit.py``); this is what keeps
them limits' arithmetic.
"""

from __future__ import annotations

import math
import types
from typing import Any

import fluxus
import limits
import limits.storage.memory
import limits.strategies
import pytest
from fluxus._rate_limit._memory_windows import (
    MemoryFixedWindows,
    MemoryMovingWindows,
    MemorySlidingWindowCounters,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from _clock import Clock

STORES = {
    "fixed-window": (MemoryFixedWindows, limits.strategies.FixedWindowRateLimiter),
    "sliding-window-counter": (
        MemorySlidingWindowCounters,
        limits.strategies.SlidingWindowCounterRateLimiter,
    ),
    "moving-window": (MemoryMovingWindows, limits.strategies.MovingWindowRateLimiter),
}

RATES = ["3/second", "5 per 2 seconds", "4 per 2 seconds; 2/second", "1/second"]

#: One call: a clock step in milliseconds (many of 0: calls in one instant),
#: the key, the cost.
CALLS = st.lists(
    st.tuples(
        st.one_of(st.just(0), st.integers(0, 400), st.integers(0, 2500)),
        st.sampled_from(["a", "b"]),
        st.integers(1, 2),
    ),
    min_size=1,
    max_size=60,
)


def limits_take(limiter: Any, key: str, items: Any, cost: int) -> bool:
    """What fluxus did with limits' strategies: test every item, then hit each."""
    if not (len(items) == 1 and cost == 1) and not all(
        limiter.test(item, key, cost=cost) for item in items
    ):
        return False
    return all(limiter.hit(item, key, cost=cost) for item in items)


@pytest.mark.parametrize("strategy", sorted(STORES))
@pytest.mark.parametrize("rate", RATES)
@settings(max_examples=60, deadline=None)
@given(calls=CALLS, start_ms=st.integers(0, 10_000))
def test_memory_windows_admit_what_limits_admits(
    strategy: str, rate: str, calls: list[tuple[int, str, int]], start_ms: int
) -> None:
    clock = Clock(1_764_460_800.0 + start_ms / 1000)
    fake_time = types.SimpleNamespace(time=clock)
    items = tuple(limits.parse_many(rate))
    ours, theirs = STORES[strategy]
    store = ours(clock)
    storage = limits.storage.MemoryStorage()
    original = limits.storage.memory.time
    limits.storage.memory.time = fake_time  # type: ignore[assignment]
    try:
        limiter = theirs(storage)
        for step, key, cost in calls:
            # A step is never a whole number of periods, nor are several:
            # a call exactly one period old is inside the window for limits'
            # hit and outside it for limits' test, and fluxus follows hit.
            clock.now += step / 1000 + 1.37e-5 if step else 0.0
            if cost > min(item.amount for item in items):
                continue  # refused when the decorator is built
            expected = limits_take(limiter, key, items, cost)
            answer = store.take(key, items, 0.0, cost)
            assert expected == answer.admitted, (clock.now, key, cost)
            if not answer.admitted:
                assert 0 < answer.wait < math.inf
            assert (store.peek(key, items, 1) == 0) == all(
                limiter.test(item, key) for item in items
            )
    finally:
        limits.storage.memory.time = original  # type: ignore[assignment]
        storage.timer.cancel()


@pytest.mark.parametrize("strategy", sorted(STORES))
def test_a_refused_call_waits_until_a_call_would_be_admitted(strategy: str) -> None:
    # The wait reported is the time until the window has room (at least
    # 1 ms): waiting it, the call is admitted, and not much sooner.
    clock = Clock(1_764_460_800.25)
    items = tuple(limits.parse_many("3 per 2 seconds"))
    store = STORES[strategy][0](clock)
    for _ in range(3):
        assert store.take("k", items, 0.0).admitted
        clock.now += 0.1
    refused = store.take("k", items, 0.0)
    assert not refused.admitted
    clock.now += refused.wait - 0.01
    assert not store.take("k", items, 0.0).admitted
    clock.now += 0.02
    assert store.take("k", items, 0.0).admitted


@pytest.mark.parametrize("strategy", sorted(STORES))
def test_ended_windows_are_swept_and_open_ones_kept(strategy: str) -> None:
    clock = Clock(1_764_460_800.0)
    store = STORES[strategy][0](clock)
    store._SWEEP_EVERY = store._until_sweep = 8
    items = (limits.RateLimitItemPerSecond(2), limits.RateLimitItemPerMinute(3))
    for i in range(20):  # several sweeps, every window still open
        assert store.take(f"k{i}", items, 0.0).admitted
    assert 40 == len(store)
    assert store.take("k0", items, 0.0).admitted  # 2 of 2 a second, 2 of 3
    assert not store.take("k0", items, 0.0).admitted
    clock.now += 200  # every window has ended, the minute's too
    for i in range(20, 40):
        store.take(f"k{i}", items, 0.0)
    assert 2 * 20 >= len(store)  # the first twenty keys are gone
    assert store.take("k0", items, 0.0).admitted


@pytest.mark.parametrize("strategy", sorted(STORES))
def test_a_window_strategy_in_memory_is_counted_by_fluxus(strategy: str) -> None:
    limiter = fluxus.rate_limit("2/second", strategy=strategy)
    limiter.acquire()
    assert isinstance(limiter._plan.store, STORES[strategy][0])
