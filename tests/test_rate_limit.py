from __future__ import annotations

import asyncio
import inspect
import itertools
import math
import time
import uuid
from datetime import timedelta

import fluxus
import limits
import pytest
from fluxus._deadline import DEADLINE
from fluxus._rate_limit import _hold
from fluxus._rate_limit._gcra import Bucket, reserve, sooner
from fluxus._rate_limit._memory import MemoryTokenBuckets
from fluxus._rate_limit._windows import sliding_window_wait
from fluxus._redis import mask_password
from hypothesis import given, settings
from hypothesis import strategies as st

from _clock import Clock

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")


def unique() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def calls(mode, fn, n, *args, **kwargs):
    """Call *fn* n times; return how many were admitted."""
    admitted = 0
    for _ in range(n):
        try:
            mode.run(fn, *args, **kwargs)
            admitted += 1
        except fluxus.RateLimitExceeded:
            pass
    return admitted


# -- the pure arithmetic ---------------------------------------------------


def test_reserve_admits_a_full_bucket_then_schedules_one_call_per_interval():
    bucket = (Bucket(interval=0.5, capacity=3),)
    tats = [-math.inf]
    waits = []
    for _ in range(5):
        wait, tats = reserve(tats, bucket, 10.0, math.inf)
        waits.append(wait)
    assert [0.0, 0.0, 0.0, 0.5, 1.0] == waits
    assert (1.5, None) == reserve(tats, bucket, 10.0, 1.0)


def test_reserve_waits_for_the_slowest_of_several_buckets():
    buckets = (Bucket(0.1, 10), Bucket(1.0, 2))
    tats = [-math.inf, -math.inf]
    waits = []
    for _ in range(3):
        wait, tats = reserve(tats, buckets, 0.0, math.inf)
        waits.append(wait)
    assert [0.0, 0.0, 1.0] == waits


@settings(max_examples=150, deadline=None)
@given(
    rate=st.floats(min_value=0.5, max_value=200),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=150),
    waits=st.lists(st.sampled_from([0.0, 0.05, 1.0, math.inf]), min_size=1),
)
def test_no_window_ever_admits_more_than_burst_plus_rate_times_its_length(
    rate, burst, gaps, waits
):
    clock = Clock()
    store = MemoryTokenBuckets(clock)
    buckets = (Bucket(1.0 / rate, burst),)
    runs = []
    for i, gap in enumerate(gaps):
        clock.advance(gap)
        answer = store.take("k", buckets, waits[i % len(waits)])
        if answer.admitted:
            runs.append(clock.now + answer.wait)
    runs.sort()
    for i, first in enumerate(runs):
        for j in range(i, len(runs)):
            admitted = j - i + 1
            assert admitted <= burst + rate * (runs[j] - first) + 1e-6


@settings(max_examples=100, deadline=None)
@given(
    specs=st.lists(
        st.tuples(
            st.floats(min_value=0.5, max_value=100),
            st.integers(min_value=1, max_value=8),
        ),
        min_size=2,
        max_size=3,
    ),
    gaps=st.lists(st.floats(min_value=0, max_value=0.3), min_size=1, max_size=100),
    max_wait=st.sampled_from([0.0, 0.1, math.inf]),
)
def test_every_bucket_of_several_holds_its_own_bound(specs, gaps, max_wait):
    clock = Clock()
    store = MemoryTokenBuckets(clock)
    buckets = tuple(Bucket(1.0 / rate, burst) for rate, burst in specs)
    runs = []
    for gap in gaps:
        clock.advance(gap)
        answer = store.take("k", buckets, max_wait)
        if answer.admitted:
            runs.append(clock.now + answer.wait)
    runs.sort()
    for rate, burst in specs:
        for i, first in enumerate(runs):
            for j in range(i, len(runs)):
                assert j - i + 1 <= burst + rate * (runs[j] - first) + 1e-6


@settings(max_examples=50, deadline=None)
@given(
    rate=st.floats(min_value=1, max_value=100),
    burst=st.integers(min_value=1, max_value=10),
    idle=st.floats(min_value=0, max_value=100),
)
def test_an_idle_bucket_refills_to_burst_and_no_further(rate, burst, idle):
    clock = Clock()
    store = MemoryTokenBuckets(clock)
    buckets = (Bucket(1.0 / rate, burst),)
    while store.take("k", buckets, 0.0).admitted:
        pass
    clock.advance(idle)
    admitted = 0
    while store.take("k", buckets, 0.0).admitted:
        admitted += 1
    assert min(burst, math.floor(idle * rate + 1e-9)) <= admitted <= burst


def test_idle_keys_are_swept_so_memory_follows_active_clients():
    clock = Clock()
    store = MemoryTokenBuckets(clock)
    buckets = (Bucket(0.01, 1),)
    for i in range(10_000):
        store.take(f"client-{i}", buckets, 0.0)
        clock.advance(0.001)
    assert len(store) < 5000


def test_sliding_window_wait_solves_limits_weighting():
    item = limits.RateLimitItemPerSecond(10)
    assert 0.0 == sliding_window_wait(item, 0, 0.0, 5, 1.5)
    assert 0.5 == sliding_window_wait(item, 4, 0.8, 10, 1.5)
    assert 0.3 == pytest.approx(sliding_window_wait(item, 10, 0.8, 5, 1.5))
    assert 0.0 == sliding_window_wait(item, 10, 0.2, 5, 1.5)


def test_redact_masks_the_password_only():
    assert "redis://:***@h:1/0" == mask_password("redis://:s3cret@h:1/0")
    assert "redis://u:***@h:1/0" == mask_password("redis://u:s3cret@h:1/0")
    assert "memory://" == mask_password("memory://")


# -- the policy, with a fake clock ------------------------------------------


def test_numeric_rate_is_a_token_bucket_starting_full(mode):
    clock = Clock()
    limiter = fluxus.RateLimiter(10, burst=3, clock=clock)
    fn = limiter(mode.make(lambda: "ok"))
    assert 3 == calls(mode, fn, 5)
    clock.advance(0.1)
    assert 1 == calls(mode, fn, 3)
    clock.advance(10)
    assert 3 == calls(mode, fn, 5)
    assert ("token-bucket", 3) == (limiter.strategy, limiter.burst)


def test_default_burst_is_the_rate_rounded_up(mode):
    clock = Clock()
    fn = fluxus.RateLimiter(2.5, clock=clock)(mode.make(lambda: None))
    assert 3 == calls(mode, fn, 10)
    slow = fluxus.RateLimiter(0.2, clock=clock)(mode.make(lambda: None))
    assert 1 == calls(mode, slow, 10)


def test_rejection_carries_retry_after_and_emits_an_event(mode, events):
    clock = Clock()
    limiter = fluxus.RateLimiter(4, burst=1, clock=clock, name="api")
    fn = limiter(mode.make(lambda: None))
    mode.run(fn)
    clock.advance(0.05)
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        mode.run(fn)
    assert ("api", pytest.approx(0.2)) == (info.value.name, info.value.retry_after)
    [event] = events
    assert isinstance(event, fluxus.instrumentation.RateLimited)
    assert ("api", pytest.approx(0.2), 0.0) == (
        event.policy,
        event.retry_after,
        event.timeout,
    )
    assert event.function.endswith("<lambda>")


def test_waiters_reserve_their_slots_first_come_first_served(mode, monkeypatch):
    clock = Clock()
    slept = []

    def record(ticket, seconds):
        slept.append(seconds)
        return False

    async def record_async(ticket, seconds):
        return record(ticket, seconds)

    monkeypatch.setattr(_hold, "_ticket_wait", record)
    monkeypatch.setattr(_hold, "_ticket_wait_async", record_async)
    limiter = fluxus.RateLimiter(10, burst=1, timeout=None, clock=clock)
    fn = limiter(mode.make(lambda: None))
    for _ in range(4):
        mode.run(fn)
    assert [pytest.approx(0.1), pytest.approx(0.2), pytest.approx(0.3)] == slept
    # a newcomer with a short timeout cannot jump the queue
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        limiter.acquire(timeout=0.2)
    assert pytest.approx(0.4) == info.value.retry_after


def test_a_wait_beyond_the_timeout_fails_at_once(mode):
    limiter = fluxus.rate_limit(1, burst=1, timeout=0.5)
    fn = limiter(mode.make(lambda: None))
    mode.run(fn)
    started = time.monotonic()
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        mode.run(fn)
    assert time.monotonic() - started < 0.1
    assert 0.9 < info.value.retry_after <= 1.0


def test_a_short_wait_within_the_timeout_really_waits(mode):
    limiter = fluxus.rate_limit(20, burst=1, timeout=1.0)
    fn = limiter(mode.make(lambda: None))
    started = time.monotonic()
    mode.run(fn)
    mode.run(fn)
    assert 0.04 < time.monotonic() - started < 1.0


def test_the_enclosing_deadline_bounds_an_unlimited_wait(mode):
    limiter = fluxus.rate_limit(1, burst=1, timeout=None)
    fn = limiter(mode.make(lambda: None))
    mode.run(fn)
    token = DEADLINE.set(time.monotonic() + 0.2)
    try:
        started = time.monotonic()
        with pytest.raises(fluxus.RateLimitExceeded):
            mode.run(fn)
        assert time.monotonic() - started < 0.1
    finally:
        DEADLINE.reset(token)


def test_testing_mode_makes_waits_instant(mode, instant):
    limiter = fluxus.rate_limit(1, burst=1, timeout=None)
    fn = limiter(mode.make(lambda: None))
    started = time.monotonic()
    for _ in range(5):
        mode.run(fn)
    assert time.monotonic() - started < 0.5
    with pytest.raises(fluxus.RateLimitExceeded):
        limiter.acquire(timeout=0)


def test_testing_mode_lets_window_waits_through(mode, instant):
    limiter = fluxus.rate_limit("2/minute", timeout=None)
    fn = limiter(mode.make(lambda: None))
    assert 4 == calls(mode, fn, 4)
    assert not limiter.allow()


def test_key_function_gives_each_client_its_own_budget(mode):
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=2, key=lambda user: user, clock=clock)
    fn = limiter(mode.make(lambda user: user))
    assert 2 == calls(mode, fn, 5, "alice")
    assert 2 == calls(mode, fn, 5, "bob")
    assert not limiter.allow("alice")
    assert limiter.allow("carol")


def test_key_function_must_return_a_string(mode):
    limiter = fluxus.rate_limit(5, key=lambda n: n)
    fn = limiter(mode.make(lambda n: n))
    with pytest.raises(TypeError, match="must return a str, got 7"):
        mode.run(fn, 7)


def test_allow_does_not_consume():
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=1, clock=clock)
    assert [True, True, True] == [limiter.allow() for _ in range(3)]
    limiter.acquire()
    assert not limiter.allow()
    clock.advance(1)
    assert limiter.allow()


def test_one_policy_on_sync_and_async_functions_keeps_one_budget():
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=4, clock=clock)

    @limiter
    def sync_call():
        return 1

    @limiter
    async def async_call():
        return 2

    assert inspect.iscoroutinefunction(async_call)
    sync_call()
    sync_call()
    asyncio.run(async_call())
    asyncio.run(async_call())
    with pytest.raises(fluxus.RateLimitExceeded):
        sync_call()
    with pytest.raises(fluxus.RateLimitExceeded):
        asyncio.run(async_call())


def test_limiters_with_the_same_name_share_one_budget():
    name = unique()
    first = fluxus.rate_limit(1, burst=2, name=name)
    second = fluxus.rate_limit(1, burst=2, name=name)
    first.acquire()
    second.acquire()
    assert (False, False) == (first.allow(), second.allow())
    assert fluxus.rate_limit(1, burst=2, name=unique()).allow()


def test_default_name_is_the_first_decorated_function():
    limiter = fluxus.rate_limit(5)

    @limiter
    def fetch():
        return None

    assert (
        f"{__name__}.test_default_name_is_the_first_decorated_function.<locals>.fetch"
        == (limiter.name)
    )


def test_set_limit_and_set_burst_take_effect_for_the_next_call():
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=1, clock=clock)
    limiter.set_burst(3)
    assert 3 == limiter.burst
    assert 3 == sum(limiter.allow() and not limiter.acquire() for _ in range(4))
    limiter.set_limit(100)
    assert 3 == limiter.burst  # an explicit burst survives a new rate
    # a new limit keeps the tokens the bucket holds: none, here
    assert not limiter.allow()
    clock.advance(0.02)  # two tokens at the new rate
    assert 2 == sum(limiter.allow() and not limiter.acquire() for _ in range(4))
    limiter.set_limit("5/second")
    assert (None, "fixed-window") == (limiter.burst, limiter.strategy)
    with pytest.raises(ValueError, match="burst applies to a numeric limit"):
        limiter.set_burst(2)
    with pytest.raises(ValueError, match="limit must be a rate"):
        limiter.set_limit("often")
    assert "5/second" == limiter.limit


def test_a_string_limit_can_use_the_token_bucket():
    clock = Clock()
    limiter = fluxus.RateLimiter(
        "2 per second; 3 per minute", strategy="token-bucket", clock=clock
    )
    assert 2 == sum(not limiter.acquire() for _ in range(2))
    assert not limiter.allow()
    clock.advance(1)
    limiter.acquire()
    clock.advance(1)
    assert not limiter.allow()  # the minute's 3 tokens are spent


def test_window_strategies_count_through_limits(mode):
    for strategy in ("sliding-window-counter", "fixed-window", "moving-window"):
        limiter = fluxus.rate_limit("3 per minute", strategy=strategy)
        fn = limiter(mode.make(lambda: None))
        assert 3 == calls(mode, fn, 5)
        with pytest.raises(fluxus.RateLimitExceeded) as info:
            mode.run(fn)
        assert 0 < info.value.retry_after <= 120


def test_window_strategy_waits_then_admits(mode):
    limiter = fluxus.rate_limit(10, strategy="moving-window", timeout=5)
    fn = limiter(mode.make(lambda: None))
    assert 10 == calls(mode, fn, 10)
    started = time.monotonic()
    mode.run(fn)
    # It waited for the window to move (under a second; a busy machine's
    # wake-up may add to that), then was admitted.
    assert 0 < time.monotonic() - started < 3.0


def test_acquire_timeout_accepts_a_timedelta():
    limiter = fluxus.rate_limit(1, burst=1)
    limiter.acquire()
    with pytest.raises(fluxus.RateLimitExceeded):
        limiter.acquire(timeout=timedelta(milliseconds=1))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"limit": "ten per second"}, ValueError, "limit must be a rate"),
        ({"limit": "0/second"}, ValueError, "at least 1 call"),
        ({"limit": 0}, ValueError, "limit must be a finite number"),
        ({"limit": math.inf}, ValueError, "limit must be a finite number"),
        ({"limit": [10]}, TypeError, "limit must be a rate string"),
        ({"limit": 10, "burst": 0}, ValueError, "burst must be >= 1"),
        ({"limit": 10, "burst": 1.5}, TypeError, "burst must be an int"),
        ({"limit": "10/second", "burst": 5}, ValueError, "burst applies"),
        ({"limit": 10, "timeout": -1}, ValueError, "timeout must be finite"),
        ({"limit": 10, "timeout": "1s"}, TypeError, "timeout must be seconds"),
        ({"limit": 10, "key": "user"}, TypeError, "key must be a callable"),
        ({"limit": 10, "storage": "nosql://x"}, ValueError, "scheme limits knows"),
        ({"limit": 10, "storage": 6379}, TypeError, "storage must be a limits"),
        ({"limit": 10, "strategy": "leaky"}, ValueError, "strategy must be one of"),
        ({"limit": 10, "key_prefix": ""}, ValueError, "key_prefix must be"),
        (
            {"limit": 1.5, "strategy": "fixed-window"},
            ValueError,
            "whole number of calls",
        ),
        (
            {"limit": 10, "storage": "memcached://localhost:11211"},
            ValueError,
            r"storage must be 'memory://' or a Redis URL .* strategy='token-bucket'",
        ),
    ],
)
def test_bad_configuration_fails_when_built_naming_the_parameter(kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.rate_limit(**kwargs)


def test_unknown_scheme_message_never_shows_the_password():
    with pytest.raises(ValueError, match="scheme limits knows") as info:
        fluxus.rate_limit(1, storage="nosql://:hunter2@host:1")
    assert "hunter2" not in str(info.value)


def test_clock_must_be_callable():
    with pytest.raises(TypeError, match="clock must be a callable"):
        fluxus.RateLimiter(1, clock=3)  # type: ignore[arg-type]


def test_decorated_functions_keep_their_signature_and_layer():
    limiter = fluxus.rate_limit(5)

    @limiter
    async def fetch(url: str, *, retries: int = 1) -> str:
        return url

    assert inspect.iscoroutinefunction(fetch)
    assert "(url: 'str', *, retries: 'int' = 1) -> 'str'" == str(
        inspect.signature(fetch)
    )
    assert (limiter,) == fluxus.layers(fetch)
    assert f"<fluxus.RateLimiter {limiter.name!r}>" == repr(limiter)


def test_acquire_documents_its_default_timeout():
    assert "<the policy's timeout>" in str(
        inspect.signature(fluxus.rate_limit(1).acquire)
    )


def test_a_refused_new_limit_leaves_the_old_one_in_place():
    limiter = fluxus.rate_limit(5, burst=2)
    with pytest.raises(ValueError, match="burst must be >= 1"):
        limiter.set_burst(0)
    limiter.set_limit(7)
    assert (7, 2) == (limiter.limit, limiter.burst)
    limiter.set_limit("3/second")
    limiter.set_limit(4)
    assert (4, 4) == (limiter.limit, limiter.burst)  # a derived burst follows the rate


def test_threads_share_the_bucket_without_over_admitting():
    import threading

    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=50, clock=clock)
    admitted = []

    def hammer():
        for _ in range(40):
            try:
                limiter.acquire()
                admitted.append(1)
            except fluxus.RateLimitExceeded:
                pass

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 50 == len(admitted)


def test_the_factory_builds_the_class_with_every_parameter_the_class_takes():
    clock = Clock()
    limiter = fluxus.rate_limit(1, burst=1, clock=clock)

    assert type(limiter) is fluxus.RateLimiter
    assert limiter.allow()
    limiter.acquire()
    assert not limiter.allow()
    clock.advance(1.0)
    assert limiter.allow()


def test_a_slot_due_after_the_enclosing_deadline_is_refused_and_given_back():
    # The store's lock held by a slow neighbour makes a wait that fit the
    # budget when asked end after the deadline: refused, the slot given back.
    # Timeline from the emptying acquire: the next slot is due at 2.5 s; the
    # call starts at once (its 0.7 s deadline ends long before the slot);
    # the lock is held until 1.9 s, so once the store is reached the slot is
    # a wait under 0.6 s that fits the budget. A slot kept would leave the
    # next one at 5 s.
    import threading

    limiter = fluxus.rate_limit(0.4, burst=1, timeout=None, name=unique())
    ran = []

    @fluxus.timeout(0.7, strategy="thread")
    def call():
        limiter.acquire()
        ran.append(time.monotonic())

    limiter.acquire()  # empty: the next token is due in 2.5 s
    emptied = time.monotonic()
    store = limiter._plan.store
    held = threading.Event()

    def neighbour():
        with store._lock:
            held.set()
            time.sleep(max(0.0, emptied + 1.9 - time.monotonic()))

    blocker = threading.Thread(target=neighbour)
    blocker.start()
    held.wait(10)
    with pytest.raises((fluxus.RateLimitExceeded, fluxus.DeadlineExceeded)):
        call()
    blocker.join(10)
    # Past the refused slot's moment (2.5 s), well before the one after it
    # (5 s) that a slot kept by the refused call would leave.
    time.sleep(max(0.0, emptied + 2.8 - time.monotonic()))

    assert [] == ran
    assert limiter.allow()  # given back: the token is there again
    limiter.acquire()
    assert not limiter.allow()


def test_slots_taken_one_after_another_never_drift_early_on_a_long_running_host():
    # A TAT moved forward by one interval at a time, each sum rounded to the
    # nearest float: on a clock reading 33,000 s (a host up nine hours) a
    # thousand 1 ms slots came 3.4 ns early, and a load test counted it as
    # an over-admission. Every slot must be at least one interval after the
    # previous one, and a refund must give back no more than it took.
    for now in (33_000.0, 1_000_000.0, 7.0):
        for buckets in ((Bucket(0.001, 20),), (Bucket(0.001, 20), Bucket(0.5, 500))):
            tats = [-math.inf] * len(buckets)
            slots = []
            for _ in range(1_000):
                wait, tats = reserve(tats, buckets, now, math.inf)  # type: ignore[assignment]
                slots.append(now + wait)
            gaps = [b - a for a, b in itertools.pairwise(slots[20:])]
            assert min(gaps) >= 0.001, (now, len(buckets))
            assert tats[0] - slots[-1] >= 0.001  # differences of close floats are exact
        tat = now + 1.0
        for _ in range(1_000):
            back = sooner(tat, 0.001)
            assert tat - back <= 0.001
            tat = back
