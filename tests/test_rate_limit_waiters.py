"""Many asyncio waiters on one token bucket: first come, first served, never
early, one timer per key however many wait (speed is in
benchmarks/bench_rate_limit_waiters.py)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import fluxus
from fluxus._rate_limit import _queue
from fluxus._rate_limit._gcra import Bucket
from fluxus._rate_limit._queue import Waiters


def unique() -> str:
    return f"waiters-{uuid.uuid4().hex[:8]}"


async def admit(
    limiter: fluxus.RateLimiter, admitted: list[tuple[int, float]], i: int
) -> None:
    """Take a permit; record waiter *i* and when it was admitted."""
    await limiter.acquire_async()
    admitted.append((i, time.monotonic()))


async def wait(woken: list[str], name: str, ticket: _queue.Ticket) -> None:
    """Wait on *ticket*'s slot; record *name* once woken."""
    await ticket.wait_async(1.0)
    woken.append(name)


def test_thousands_of_waiters_are_admitted_in_order_and_never_early():
    count, rate = 3000, 10_000.0  # the last slot is due 0.3 s after the first
    limiter = fluxus.rate_limit(rate, burst=1, timeout=None, name=unique())
    admitted: list[tuple[int, float]] = []

    async def main() -> tuple[float, int, list[bool]]:
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        tasks = [
            asyncio.ensure_future(admit(limiter, admitted, i)) for i in range(count)
        ]
        await asyncio.sleep(0)  # every waiter has reserved its slot
        # one timer for the key, not one per waiter (asyncio's own heap)
        timers = len(loop._scheduled)  # type: ignore[attr-defined]
        for task in tasks[count // 2 :: 10]:  # give back every tenth slot
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return started, timers, [task.cancelled() for task in tasks]

    started, timers, cancelled = asyncio.run(main())
    survivors = [i for i in range(count) if not cancelled[i]]
    assert timers <= 2
    assert survivors == [i for i, _ in admitted]  # all, in order of arrival
    assert len(survivors) < count  # some did give their slot back
    for k, (_, at) in enumerate(admitted):
        # a bucket of burst 1 admits k + 1 calls no earlier than k / rate
        # after the first; never early, however late a loaded machine is
        assert at - started >= k / rate - 1e-6


def test_a_slot_reserved_out_of_order_is_woken_in_order():
    # Redis replies may come back in another order than the script served
    # them: the alarm wakes by slot, not by arrival.
    waiters = Waiters()
    bucket = (Bucket(0.1, 1),)
    woken: list[str] = []

    async def main() -> None:
        now = time.monotonic()
        later = waiters.join("k", 0.2, 1, bucket, now + 0.2)
        sooner = waiters.join("k", 0.1, 1, bucket, now + 0.1)
        await asyncio.gather(wait(woken, "later", later), wait(woken, "sooner", sooner))

    asyncio.run(main())
    assert ["sooner", "later"] == woken


def test_slots_moved_forward_past_unmoved_ones_are_woken_first():
    # A leaving reservation moves every later slot forward by what it held;
    # with several costs that can carry a slot before one that did not move.
    waiters = Waiters()
    long, short = (Bucket(0.5, 1),), (Bucket(0.1, 1),)
    woken: list[str] = []

    async def main() -> None:
        now = time.monotonic()
        unmoved = waiters.join("k", 0.3, 1, short, now + 0.3)
        leaving = waiters.join("k", 0.35, 1, long, now + 0.35)
        moved = waiters.join("k", 0.6, 1, short, now + 0.6)
        both = asyncio.gather(
            wait(woken, "unmoved", unmoved), wait(woken, "moved", moved)
        )
        await asyncio.sleep(0)
        assert waiters.leave(leaving)
        assert not waiters.leave(leaving)  # once only
        await both
        assert moved.due == now + 0.6 - 0.5

    asyncio.run(main())
    assert ["moved", "unmoved"] == woken


def test_a_refund_from_another_thread_moves_a_loops_waiters_forward():
    limiter = fluxus.rate_limit(4, burst=1, timeout=None, name=unique())
    limiter.acquire()
    store = limiter._plan.store  # type: ignore[attr-defined]
    finished: list[float] = []
    queued = threading.Event()
    started = time.monotonic()

    async def wait() -> None:
        await limiter.acquire_async()
        finished.append(time.monotonic() - started)

    async def main() -> None:
        first = asyncio.ensure_future(wait())
        second = asyncio.ensure_future(wait())
        await asyncio.sleep(0)
        queued.set()
        await asyncio.gather(first, second)

    loop = threading.Thread(target=asyncio.run, args=(main(),))
    loop.start()
    assert queued.wait(5)
    [queue] = store.waiters._queues.values()
    leaving = next(iter(queue))
    store.refund(leaving)  # from this thread, not the loop's
    loop.join(5)
    # the first, its slot given back, waits on nothing and goes on; the
    # second moved forward from 0.5 s to 0.25 s
    assert 2 == len(finished)
    assert max(finished) < 0.45


def test_waiters_cancelled_together_move_the_rest_forward_in_one_pass(monkeypatch):
    # A thousand clients gone in one turn of the loop: the later waiters move
    # forward once for all of them, not once each (a pass per departure made
    # mass cancellation quadratic), and still by every slot given back.
    passes: list[int] = []
    real = _queue._move_forward

    def counted(*args: object) -> object:
        passes.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_queue, "_move_forward", counted)
    count, rate = 2000, 1000.0  # the last slot is due 2 s after the first
    limiter = fluxus.rate_limit(rate, burst=1, timeout=None, name=unique())
    admitted: list[tuple[int, float]] = []

    async def main() -> float:
        started = time.monotonic()
        tasks = [
            asyncio.ensure_future(admit(limiter, admitted, i)) for i in range(count)
        ]
        await asyncio.sleep(0)  # every waiter has reserved its slot
        for task in tasks[1 : count // 2 + 1]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return started

    started = asyncio.run(main())
    survivors = [0, *range(count // 2 + 1, count)]
    assert survivors == [i for i, _ in admitted]
    assert len(passes) <= 3
    for k, (_, at) in enumerate(admitted):
        assert at - started >= k / rate - 1e-6  # never early
    # 1,000 slots of 1 ms given back: the last is due near 1 s, not 2 s
    assert admitted[-1][1] - started < 1.7


def test_a_departure_not_settled_yet_never_moves_a_later_newcomer():
    # A departure waits for the end of the loop's turn to move the later
    # waiters; if they are all gone by then, a newcomer must keep its slot
    # (moved forward by a slot it never queued behind, it would be early).
    waiters = Waiters()
    bucket = (Bucket(0.1, 1),)

    async def main() -> tuple[float, float]:
        now = time.monotonic()
        leaving = waiters.join("k", 0.1, 1, bucket, now + 0.1)
        later = waiters.join("k", 0.2, 1, bucket, now + 0.2)
        assert waiters.leave(leaving)  # on the loop: settled at the turn's end
        assert later.due == now + 0.2  # not yet
        assert waiters.done(later)  # admitted: the key's queue is empty
        newcomer = waiters.join("k", 0.3, 1, bucket, now + 0.3)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return newcomer.due, now

    due, now = asyncio.run(main())
    assert due == now + 0.3
