"""Rate limits that never hand out more than they should, nor keep what they
should give back: new limits, abandoned waiters, key namespaces, costs,
names, block forms and ``fail_open="local"``, in memory and in Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
import warnings

import fluxus
import pytest
import redis

from _clock import Clock


def unique() -> str:
    return f"budget-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


def admitted(limiter: fluxus.RateLimiter, n: int, **kwargs: object) -> int:
    count = 0
    for _ in range(n):
        try:
            limiter.acquire(timeout=0, **kwargs)  # type: ignore[arg-type]
        except fluxus.RateLimitExceeded:
            continue
        count += 1
    return count


# -- a new limit keeps the tokens the bucket holds ----------------------------


def test_nudging_the_limit_never_refills_the_bucket(storage):
    limiter = fluxus.rate_limit(10, burst=5, storage=storage, name=unique())
    total = admitted(limiter, 10)
    for i in range(20):
        limiter.set_limit(10 + 0.01 * (i + 1))
        total += admitted(limiter, 10)
    # burst 5, plus what 10/s refills while the loop runs (well under 2 s)
    spent = 5 + 10.5 * 2
    assert 5 <= total <= spent
    assert total < 105 / 2


def test_set_burst_clamps_the_tokens_held_and_keeps_a_debt():
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=10, clock=clock)
    assert 4 == admitted(limiter, 4)  # 6 tokens left
    limiter.set_burst(3)  # clamped to 3
    assert 3 == admitted(limiter, 5)
    limiter.set_burst(10)  # a larger bucket is not a refill
    assert 0 == admitted(limiter, 5)
    clock.advance(2.0)
    assert 2 == admitted(limiter, 5)


def test_a_new_rate_counts_the_time_since_the_change_at_the_new_rate():
    clock = Clock()
    limiter = fluxus.RateLimiter(1, burst=2, clock=clock)
    assert 2 == admitted(limiter, 2)
    limiter.set_limit(100)  # empty bucket, now refilled at 100/s
    clock.advance(0.01)
    assert 1 == admitted(limiter, 3)


def test_redis_keeps_the_tokens_across_a_new_limit(redis_url):
    name = unique()
    limiter = fluxus.rate_limit(1, burst=3, storage=redis_url, name=name)
    assert 3 == admitted(limiter, 5)
    limiter.set_limit(2)
    limiter.set_burst(5)
    assert 0 == admitted(limiter, 5)
    fields = redis.Redis.from_url(redis_url).hkeys(f"fluxus:ratelimit:{name}:")
    assert {b"t1", b"i1", b"c1"} == set(fields)  # no field per limit


# -- abandoned waiters give their reservation back -----------------------------


def test_abandoned_waiters_never_lock_a_newcomer_out(storage):
    # One token every 0.5 s: the four slots kept would push a newcomer 2 s
    # past its 1 s timeout; a loaded machine's pauses stay well inside that.
    limiter = fluxus.rate_limit(2, burst=1, storage=storage, name=unique())

    async def main() -> float:
        await limiter.acquire_async()
        waiters = [
            asyncio.ensure_future(limiter.acquire_async(timeout=None)) for _ in range(4)
        ]
        await asyncio.sleep(0.05)  # all four have reserved their slots
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
        await asyncio.sleep(0.3)  # Redis refunds run in the background
        started = time.monotonic()
        await limiter.acquire_async(timeout=1.0)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0


def test_a_waiter_leaving_the_middle_moves_every_later_one_forward(storage):
    limiter = fluxus.rate_limit(1, burst=1, storage=storage, name=unique())

    async def main() -> tuple[float, float]:
        await limiter.acquire_async()
        started = time.monotonic()
        first = asyncio.ensure_future(limiter.acquire_async(timeout=None))
        middle = asyncio.ensure_future(limiter.acquire_async(timeout=None))
        last = asyncio.ensure_future(limiter.acquire_async(timeout=None))
        # All three queued here. (A reply still on its way from Redis is a
        # slot this process does not hold yet: like another process's
        # waiter, it keeps its slot when an earlier one is given back.)
        waiters = limiter._plan.store.waiters
        give_up = time.monotonic() + 5
        while len(waiters) < 3 and time.monotonic() < give_up:  # noqa: ASYNC110 - polled
            await asyncio.sleep(0.01)
        middle.cancel()
        await first
        await last
        return started, time.monotonic()

    started, done = asyncio.run(main())
    # slots at 1, 2 and 3 s; without the middle one the last is due at 2 s
    # (3 s if the slot were kept; a busy machine wakes it a little late)
    assert 1.6 < done - started < 2.7


def test_a_timed_out_sync_waiter_moves_later_threads_forward():
    import threading

    limiter = fluxus.rate_limit(1, burst=1, name=unique())
    limiter.acquire()
    finished: list[float] = []
    started = time.monotonic()
    queues = limiter._plan.store.waiters._queues

    def wait() -> None:
        limiter.acquire(timeout=None)
        finished.append(time.monotonic() - started)

    def queued(n: int) -> list[object]:
        # The waiters' tickets, once *n* threads are in the queue.
        give_up = time.monotonic() + 5
        while time.monotonic() < give_up:
            tickets = [t for queue in list(queues.values()) for t in list(queue)]
            if len(tickets) >= n:
                return tickets
            time.sleep(0.005)
        raise AssertionError(n)

    first = threading.Thread(target=wait)
    first.start()
    [leaving] = queued(1)
    second = threading.Thread(target=wait)
    second.start()
    queued(2)
    limiter._plan.store.refund(leaving)
    first.join(5)
    second.join(5)
    # the first was woken, refunded, so it kept waiting on nothing: it is
    # admitted at once; the second moved forward from 2 s to 1 s
    assert 2 == len(finished)
    assert max(finished) < 1.7


def test_concurrent_waiters_with_cancellation_never_over_admit(storage):
    rate, burst = 50, 5
    limiter = fluxus.rate_limit(rate, burst=burst, storage=storage, name=unique())
    admitted_at: list[float] = []

    async def caller(i: int) -> None:
        await limiter.acquire_async(timeout=None)
        admitted_at.append(time.monotonic())

    async def main() -> tuple[float, int]:
        started = time.monotonic()
        tasks = [asyncio.ensure_future(caller(i)) for i in range(60)]
        await asyncio.sleep(0.1)
        store = limiter._plan.store
        # every reservation made (Redis connections take a while to open)
        while len(store.waiters) + len(admitted_at) < 60:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        for task in tasks[::3]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return started, sum(not task.cancelled() for task in tasks)

    started, survivors = asyncio.run(main())
    assert survivors == len(admitted_at)  # every survivor admitted: none stranded
    span = max(admitted_at) - started
    assert len(admitted_at) <= burst + rate * span + 1
    span = max(admitted_at) - min(admitted_at)  # Redis connects take a while
    # refunds moved the queue forward: the survivors need about
    # (survivors - burst) / rate seconds, not the 60 callers' 1.1 s
    assert span < (60 - burst) / rate


# -- names and keys are namespaced unambiguously -------------------------------


# 10 calls, none refilled while a test runs on a loaded machine
SLOW = [{"limit": 0.01, "burst": 10}, {"limit": "10/minute"}]


@pytest.mark.parametrize("slow", SLOW)
def test_a_name_and_key_pair_never_reaches_another_pairs_budget(storage, slow):
    head = unique()
    outer = fluxus.rate_limit(**slow, storage=storage, name=head)
    inner = fluxus.rate_limit(**slow, storage=storage, name=f"{head}:admin")
    assert 10 == admitted(outer, 20, key="admin:10.0.0.7")
    assert 10 == admitted(inner, 20, key="10.0.0.7")
    slashed = fluxus.rate_limit(**slow, storage=storage, name=f"{head}/admin")
    assert 10 == admitted(slashed, 20, key="10.0.0.7")
    percent = fluxus.rate_limit(**slow, storage=storage, name=f"{head}%3Aadmin")
    assert 10 == admitted(percent, 20, key="10.0.0.7")


@pytest.mark.parametrize("slow", SLOW)
def test_a_lone_surrogate_in_a_key_is_encoded(storage, slow):
    limiter = fluxus.rate_limit(**slow, storage=storage, name=unique())
    assert 10 == admitted(limiter, 20, key="\udcff")
    assert 10 == admitted(limiter, 20, key="\udcfe")
    assert 10 == admitted(limiter, 20, key="%ED%B3%BF")  # not the escape


# -- cost ----------------------------------------------------------------------


def test_cost_takes_that_many_tokens(storage, mode):
    limiter = fluxus.rate_limit(
        1, burst=10, storage=storage, name=unique(), cost=lambda n: n
    )
    fn = limiter(mode.make(lambda n: n))
    assert 4 == mode.run(fn, 4)
    assert 6 == mode.run(fn, 6)
    with pytest.raises(fluxus.RateLimitExceeded):
        mode.run(fn, 1)


def test_acquire_takes_a_cost(storage):
    limiter = fluxus.rate_limit(1, burst=5, storage=storage, name=unique(), cost=2)
    limiter.acquire(cost=3)
    assert limiter.allow(cost=2)
    assert not limiter.allow(cost=3)
    limiter.acquire()  # the policy's cost, 2
    with pytest.raises(fluxus.RateLimitExceeded):
        limiter.acquire()


def test_a_string_rate_counts_the_cost():
    limiter = fluxus.rate_limit("10/minute", name=unique(), cost=4)
    assert 2 == admitted(limiter, 5)
    assert 2 == admitted(limiter, 5, cost=1)


@pytest.mark.parametrize(
    ("cost", "error", "match"),
    [
        (0, ValueError, r"cost must be >= 1 \(tokens\), got 0"),
        (1.5, TypeError, "cost must be an int >= 1 or a callable"),
        (True, TypeError, "cost must be an int"),
        (11, ValueError, r"cost must be at most 10 \(tokens\).*got 11"),
    ],
)
def test_bad_costs_are_refused_when_the_policy_is_built(cost, error, match):
    with pytest.raises(error, match=match):
        fluxus.rate_limit(1, burst=10, cost=cost)


def test_a_cost_function_returning_nonsense_is_a_clear_error():
    limiter = fluxus.rate_limit(1, burst=3, cost=lambda n: n)
    fn = limiter(lambda n: n)
    with pytest.raises(ValueError, match="must return an int >= 1, got 0"):
        fn(0)
    with pytest.raises(ValueError, match=r"cost must be at most 3 \(tokens\).*got 4"):
        fn(4)
    with pytest.raises(ValueError, match=r"cost must be at most 3 \(tokens\).*got 4"):
        limiter.acquire(cost=4)
    with pytest.raises(ValueError, match="burst=2"):
        fluxus.rate_limit(1, burst=3, cost=3).set_burst(2)


# -- names ---------------------------------------------------------------------


def make_limited():
    @fluxus.rate_limit(10, burst=1)
    def fetch() -> str:
        return "ok"

    return fetch


def test_limiters_without_a_name_never_share_a_budget():
    first, second = make_limited(), make_limited()
    assert "ok" == first()
    assert "ok" == second()  # its own budget
    with pytest.raises(fluxus.RateLimitExceeded):
        first()


def test_default_names_are_numbered_per_function_name():
    limiters = [fluxus.rate_limit(10) for _ in range(3)]

    def fetch() -> None: ...

    for limiter in limiters:
        limiter(fetch)
    base = limiters[0].name
    assert base.endswith("fetch")
    assert [base, f"{base}#2", f"{base}#3"] == [x.name for x in limiters]


def test_a_limiter_that_never_decorates_has_a_name_of_its_own():
    one, two = fluxus.rate_limit(10, burst=1), fluxus.rate_limit(10, burst=1)
    assert one.name != two.name
    assert one.name.startswith("<rate_limit #")
    one.acquire()
    two.acquire()  # not the budget one spent


def test_limiters_with_one_name_share_one_budget():
    name = unique()
    one = fluxus.rate_limit(10, burst=1, name=name)
    two = fluxus.rate_limit(10, burst=1, name=name)
    one.acquire()
    assert not two.allow()


# -- block forms ---------------------------------------------------------------


def test_with_limiter_takes_a_permit(storage):
    limiter = fluxus.rate_limit(1, burst=2, storage=storage, name=unique())
    ran = []
    for _ in range(2):
        with limiter:
            ran.append(1)
    with pytest.raises(fluxus.RateLimitExceeded), limiter:
        ran.append(2)
    assert [1, 1] == ran


def test_async_with_limiter_takes_a_permit(storage):
    limiter = fluxus.rate_limit(1, burst=1, storage=storage, name=unique())

    async def main() -> list[int]:
        ran = []
        async with limiter:
            ran.append(1)
        with pytest.raises(fluxus.RateLimitExceeded):
            async with limiter:
                ran.append(2)
        return ran

    assert [1] == asyncio.run(main())


# -- fail_open="local" -------------------------------------------------------------


def _down_url() -> str:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@pytest.mark.parametrize("limit", [5, "5/minute"])
def test_fail_open_local_counts_in_this_process_while_redis_is_down(limit):
    limiter = fluxus.rate_limit(
        limit, storage=_down_url(), name=unique(), fail_open="local"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert 5 == admitted(limiter, 10)
        assert not limiter.allow()


def test_fail_open_local_waits_for_a_local_slot():
    limiter = fluxus.rate_limit(
        20, burst=1, storage=_down_url(), name=unique(), fail_open="local"
    )

    async def main() -> float:
        await limiter.acquire_async()
        started = time.monotonic()
        await limiter.acquire_async(timeout=3.0)
        return time.monotonic() - started

    # One local interval (50 ms), not a Redis timeout (2 s) nor at once.
    assert 0.02 < asyncio.run(main()) < 1.5


def test_fail_open_is_checked():
    with pytest.raises(ValueError, match="fail_open must be True, False or 'local'"):
        fluxus.rate_limit(5, fail_open="remote")  # type: ignore[arg-type]
