from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fluxus
import pytest
from fluxus._bulkhead._core import FULL, RUN, WAIT, Slots
from fluxus.instrumentation import BulkheadRejected, Stats
from hypothesis import given
from hypothesis import strategies as st

from _tasks import CANCELLED, tasks
from conftest import Mode

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")


class Gauge:
    """Count the calls running at once and remember the highest count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = self.total = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.total += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


# -- the pure core -----------------------------------------------------------


@given(
    st.integers(1, 4),
    st.integers(0, 4),
    st.lists(st.sampled_from(["enter", "wait", "leave", "withdraw"]), max_size=60),
)
def test_slots_never_exceed_the_limit_and_serve_waiters_in_order(limit, places, steps):
    slots: Slots[int] = Slots(limit, places)
    running = 0
    queue: list[int] = []
    served: list[int] = []
    tickets = iter(range(10**6))
    for step in steps:
        if step in ("enter", "wait"):
            ticket = next(tickets) if step == "wait" else None
            verdict = slots.enter(ticket)
            if running < limit and not queue:
                assert RUN == verdict
                running += 1
            elif ticket is not None and len(queue) < places:
                assert WAIT == verdict
                queue.append(ticket)
            else:
                assert FULL == verdict
        elif step == "leave" and running:
            handed = slots.leave()
            if queue:
                assert queue.pop(0) == handed
                served.append(handed)
            else:
                assert handed is None
                running -= 1
        elif step == "withdraw" and queue:
            assert slots.withdraw(queue[-1])
            queue.pop()
        assert running == slots.in_use <= limit
        assert queue == list(slots.queue)
    assert served == sorted(served)


# -- the policy ----------------------------------------------------------------


def test_64_threads_and_5000_tasks_share_one_limit():
    limit = 5
    bh = fluxus.bulkhead(limit, max_waiting=10_000, timeout=None)
    gauge = Gauge()

    @bh
    def work():
        with gauge:
            time.sleep(0.0005)

    @bh
    async def awork():
        with gauge:
            await asyncio.sleep(0.0005)

    async def tasks():
        await asyncio.gather(*(awork() for _ in range(5000)))

    loop_thread = threading.Thread(target=asyncio.run, args=(tasks(),))
    loop_thread.start()
    with ThreadPoolExecutor(64) as pool:
        for future in [pool.submit(work) for _ in range(64 * 20)]:
            future.result()
    loop_thread.join()

    assert 5000 + 64 * 20 == gauge.total
    assert limit == gauge.peak
    assert (0, 0) == (bh.in_use, bh.waiting)
    assert Stats(calls=gauge.total) == bh.stats


def test_full_bulkhead_rejects_at_once(mode, events):
    bh = fluxus.bulkhead(1, name="payments")
    fn = bh(mode.make(lambda: "ran"))

    with bh:
        assert 1 == bh.in_use
        with pytest.raises(fluxus.BulkheadFull) as info:
            mode.run(fn)
    assert "ran" == mode.run(fn)

    error = info.value
    assert ("payments", 1, None) == (
        error.name,
        error.max_concurrent,
        error.retry_after,
    )
    assert fluxus.is_rejection(error)
    (event,) = events
    assert type(event) is BulkheadRejected
    assert (1, 0) == (event.max_concurrent, event.max_waiting)
    assert Stats(calls=3, rejections=1) == bh.stats


def test_waiters_are_served_first_come_first_served():
    bh = fluxus.bulkhead(1, max_waiting=5, timeout=10)
    order: list[int] = []

    @bh
    def work(i):
        order.append(i)

    threads = []
    with bh:
        for i in range(5):
            thread = threading.Thread(target=work, args=(i,))
            thread.start()
            threads.append(thread)
            while bh.waiting < i + 1:
                time.sleep(0.001)
        with pytest.raises(fluxus.BulkheadFull):  # every waiting place taken
            work(99)
    for thread in threads:
        thread.join()
    assert [0, 1, 2, 3, 4] == order


def test_a_waiter_gives_up_after_its_timeout(mode, events):
    bh = fluxus.bulkhead(1, max_waiting=1, timeout=0.05)
    fn = bh(mode.make(lambda: None))
    with bh:
        started = time.monotonic()
        with pytest.raises(fluxus.BulkheadFull):
            mode.run(fn)
        waited = time.monotonic() - started
    assert 0.04 <= waited < 5
    assert 0.04 <= events[0].waited
    assert (0, 0) == (bh.in_use, bh.waiting)


def test_the_wait_ends_at_the_enclosing_deadline(mode):
    bh = fluxus.bulkhead(1, max_waiting=1, timeout=None)
    inner = bh(mode.make(lambda: None))
    if mode.is_async:

        async def outer():
            return await inner()

    else:

        def outer():
            return inner()

    # Cooperative: only the bulkhead's own wait can end at the deadline.
    fn = fluxus.timeout(0.1, strategy="cooperative")(outer)
    with bh:
        started = time.monotonic()
        with pytest.raises(fluxus.DeadlineExceeded) as info:
            mode.run(fn)
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, fluxus.BulkheadFull)


def test_slot_is_given_back_on_failure(mode):
    bh = fluxus.bulkhead(1)

    def fail():
        raise ValueError

    fn = bh(mode.make(fail))
    for _ in range(3):
        with pytest.raises(ValueError):
            mode.run(fn)
    assert 0 == bh.in_use
    assert Stats(calls=3) == bh.stats


#: The bodies that await run under asyncio and trio only.
async_modes = pytest.mark.parametrize(
    "mode", [Mode("async"), Mode("trio")], ids=["async", "trio"]
)


@async_modes
def test_slot_is_given_back_on_cancellation(mode):
    bh = fluxus.bulkhead(1, max_waiting=1, timeout=10)
    started: list[int] = []

    @bh
    async def slow():
        started.append(1)
        await mode.sleep(10)

    async def main():
        async with tasks(mode) as start:
            holder = start(slow)
            while not started:
                await mode.checkpoint()
            waiter = start(slow)
            while bh.waiting < 1:
                await mode.checkpoint()
            waiter.cancel()  # cancelled while waiting
            holder.cancel()  # cancelled while running
            assert CANCELLED == await holder.outcome()
            assert CANCELLED == await waiter.outcome()
            assert (0, 0) == (bh.in_use, bh.waiting)
            # The slot is free again: one more call runs at once.
            started.clear()
            again = start(slow)
            while not started:
                await mode.checkpoint()
            assert 1 == bh.in_use
            again.cancel()
            assert CANCELLED == await again.outcome()
        assert 0 == bh.in_use

    mode.run(main)


@async_modes
def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on(mode):
    bh = fluxus.bulkhead(1, max_waiting=2, timeout=10)

    async def enter():
        await bh.__aenter__()

    async def main():
        await bh.__aenter__()
        async with tasks(mode) as start:
            first = start(enter)
            while bh.waiting < 1:
                await mode.checkpoint()
            second = start(enter)
            while bh.waiting < 2:
                await mode.checkpoint()
            await bh.__aexit__(None, None, None)  # handed to first...
            first.cancel()  # ...which is cancelled before it runs
            assert CANCELLED == await first.outcome()
            assert ("returned", None) == await second.outcome()  # second gets it
            assert (1, 0) == (bh.in_use, bh.waiting)

    mode.run(main)


@async_modes
def test_waiters_of_both_libraries_time_out_and_are_served_in_order(mode):
    bh = fluxus.bulkhead(1, max_waiting=3, timeout=10)
    order: list[int] = []

    @bh
    async def work(i):
        order.append(i)

    async def main():
        async with tasks(mode) as start:
            with bh:
                running = []
                for i in range(3):
                    running.append(start(work, i))
                    while bh.waiting < i + 1:
                        await mode.checkpoint()
            for task in running:
                assert ("returned", None) == await task.outcome()
        assert [0, 1, 2] == order

    mode.run(main)


@pytest.fixture(name="release")
def release_fixture():
    event = threading.Event()
    yield event
    event.set()


def test_work_abandoned_by_a_thread_timeout_keeps_its_slot(release):
    bh = fluxus.bulkhead(1)

    @bh
    @fluxus.timeout(0.05)
    def hang():
        release.wait(10)

    with pytest.raises(fluxus.DeadlineExceeded):
        hang()
    # The caller is back, the work still runs: the slot is still taken.
    assert 1 == bh.in_use
    with pytest.raises(fluxus.BulkheadFull):
        hang()
    release.set()
    deadline = time.monotonic() + 5
    while bh.in_use and time.monotonic() < deadline:
        time.sleep(0.005)
    assert 0 == bh.in_use


def test_block_forms_hold_a_slot(mode):
    bh = fluxus.bulkhead(2)

    def body():
        with bh:
            assert 1 == bh.in_use
            with bh:
                assert 2 == bh.in_use
        return bh.in_use

    async def abody():
        async with bh:
            assert 1 == bh.in_use
            with pytest.raises(fluxus.BulkheadFull):
                async with bh, bh:
                    pass
            assert 1 == bh.in_use
        return bh.in_use

    assert 0 == (mode.run(abody) if mode.is_async else body())


def test_block_failure_gives_the_slot_back():
    bh = fluxus.bulkhead(1)
    with pytest.raises(ValueError), bh:
        raise ValueError
    assert 0 == bh.in_use
    assert Stats(calls=1) == bh.stats


def test_block_without_a_name_has_one_of_its_own():
    assert "<unbound bulkhead>" == fluxus.bulkhead(1).name


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((0,), {}, ValueError, "max_concurrent must be >= 1, got 0"),
        (("2",), {}, TypeError, "max_concurrent must be an int"),
        ((1,), {"max_waiting": -1}, ValueError, "max_waiting must be >= 0"),
        ((1,), {"max_waiting": 1.5}, TypeError, "max_waiting must be an int"),
        (
            (1,),
            {"max_waiting": 2},
            ValueError,
            r"timeout must be > 0 seconds or None with max_waiting=2 ",
        ),
        ((1,), {"timeout": 1.0}, ValueError, "timeout must be 0 with max_waiting=0"),
        ((1,), {"max_waiting": 1, "timeout": -1}, ValueError, "timeout must be"),
        ((1,), {"lease": 0}, ValueError, "lease must be finite and > 0 seconds, got 0"),
        ((1,), {"storage": "ftp://x"}, ValueError, "storage must be"),
        ((1,), {"storage": 3}, TypeError, "storage must be"),
    ],
)
def test_bad_configuration_fails_when_built(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.bulkhead(*args, **kwargs)


def test_a_sync_waiter_interrupted_gives_its_place_up():
    import signal

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    bh = fluxus.bulkhead(1, max_waiting=1, timeout=10)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        with bh:
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            with pytest.raises(Interrupted):
                bh(lambda: None)()
            assert (1, 0) == (bh.in_use, bh.waiting)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert 0 == bh.in_use


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_trio_waiter_woken_after_its_run_ended_is_not_handed_the_slot_twice():
    # A waiter cancelled just as a slot is handed to it passes the slot on
    # before its run can end; the giver's late wake must not pass it again.
    import trio
    from fluxus._bulkhead._memory import _TrioTicket

    async def make():
        return _TrioTicket()

    ticket = trio.run(make)
    assert ticket.wake()


def test_a_slot_skips_a_waiter_whose_loop_is_closed():
    bh = fluxus.bulkhead(1, max_waiting=2, timeout=10)
    bh.__enter__()
    loop = asyncio.new_event_loop()

    async def queue_up():
        waiter = asyncio.ensure_future(bh.__aenter__())
        while bh.waiting < 1:  # noqa: ASYNC110 - polling another side
            await asyncio.sleep(0)
        return waiter

    loop.run_until_complete(queue_up())
    loop.close()  # the waiter's loop is gone, its task never ran again
    bh.__exit__(None, None, None)
    assert (0, 0) == (bh.in_use, bh.waiting)
