"""Every async policy under asyncio and under trio: the same test bodies.

Each test takes the ``lib`` fixture and runs its body with ``lib.run``
(``asyncio.run`` or ``trio.run``), sleeping and cancelling with that
library's own primitives. Cancellation tests cancel a call inside a policy
at its await points (after 0, 1, 2, ... checkpoints and at a few instants)
and check that the policy gave back what it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fluxus
import pytest
import trio
from fluxus import _aio
from fluxus.backoff import constant

from _faults import only_captured_events

pytestmark = pytest.mark.timeout(60)

MAX_STEPS = 30
DELAYS = (0.001, 0.005, 0.02)


class Boom(Exception):
    """The protected function's own failure."""


class Lib:
    """One async library: how to run a body, sleep, wait and cancel in it."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def run(self, body: Callable[[], Awaitable[Any]]) -> Any:
        if self.name == "trio":
            return trio.run(body)
        return asyncio.run(body())  # type: ignore[arg-type]

    async def sleep(self, seconds: float) -> None:
        if self.name == "trio":
            await trio.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    def event(self) -> Any:
        return trio.Event() if self.name == "trio" else asyncio.Event()

    async def cancel_after(
        self, make: Callable[[], Awaitable[Any]], steps: int | None, delay: float
    ) -> bool:
        """Run *make()*, cancel it after *steps* checkpoints (or *delay* s).

        Returns:
            Whether the cancellation landed inside the call.
        """
        if self.name == "trio":
            return await self._cancel_trio(make, steps, delay)
        task = asyncio.ensure_future(make())
        await self._pause(steps, delay)
        if task.done():
            if not task.cancelled():
                task.exception()
            return False
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return True
        except Exception:
            return False
        return False

    async def _pause(self, steps: int | None, delay: float) -> None:
        if steps is None:
            await self.sleep(delay)
        else:
            for _ in range(steps):
                await self.sleep(0)

    async def _cancel_trio(
        self, make: Callable[[], Awaitable[Any]], steps: int | None, delay: float
    ) -> bool:
        scope = trio.CancelScope()
        ended: list[bool] = []

        async def runner() -> None:
            with scope:
                with contextlib.suppress(Exception):  # ended its own way
                    await make()
                ended.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(runner)
            await self._pause(steps, delay)
            scope.cancel()
        return scope.cancelled_caught and not ended


@pytest.fixture(params=["asyncio", "trio"])
def lib(request: pytest.FixtureRequest) -> Lib:
    return Lib(request.param)


def cancel_everywhere(
    lib: Lib,
    make: Callable[[], Awaitable[Any]],
    check: Callable[[], Awaitable[None]],
    *,
    setup: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Cancel *make()* at every checkpoint and a few instants; *check* after each."""

    async def main() -> int:
        landed = 0
        points: list[tuple[int | None, float]] = [(n, 0.0) for n in range(MAX_STEPS)]
        points += [(None, d) for d in DELAYS]
        for steps, delay in points:
            if setup is not None:
                await setup()
            hit = await lib.cancel_after(make, steps, delay)
            landed += hit
            await check()
            if not hit and steps is not None and steps > 3:
                points = [p for p in points if p[0] is None]
        return landed

    with only_captured_events():
        landed = lib.run(main)
    assert landed > 0  # the scenario was cancellable at all
    return landed


# -- the library is detected ---------------------------------------------------


def test_current_library_names_the_running_library(lib: Lib) -> None:
    async def body() -> str:
        return _aio.current_library()

    assert lib.name == lib.run(body)


# -- timeout -------------------------------------------------------------------


def test_timeout_returns_in_time_and_publishes_its_deadline(lib: Lib) -> None:
    @fluxus.timeout(5)
    async def work() -> float | None:
        await lib.sleep(0)
        return fluxus.remaining()

    async def body() -> tuple[float | None, float | None]:
        return await work(), fluxus.remaining()

    left, after = lib.run(body)
    assert left is not None
    assert 4.0 < left <= 5.0
    assert after is None  # the deadline ends with the call


def test_timeout_cancels_a_late_call_with_the_librarys_cancellation(
    lib: Lib, events: list[fluxus.instrumentation.Event]
) -> None:
    reached: list[str] = []

    @fluxus.timeout(0.05)
    async def work() -> None:
        await lib.sleep(30)
        reached.append("end")  # never: the sleep is cancelled

    async def body() -> None:
        await work()

    with pytest.raises(fluxus.DeadlineExceeded):
        lib.run(body)
    assert reached == []
    timed_out = [e for e in events if isinstance(e, fluxus.instrumentation.TimedOut)]
    assert [lib.name] == [e.strategy for e in timed_out]


def test_nested_timeouts_shrink_to_the_enclosing_deadline(lib: Lib) -> None:
    @fluxus.timeout(10)
    async def inner() -> float | None:
        return fluxus.remaining()

    @fluxus.timeout(1)
    async def outer() -> float | None:
        return await inner()

    left = lib.run(outer)
    assert left is not None
    assert left <= 1.0


def test_an_outer_cancellation_is_not_taken_for_the_deadline(lib: Lib) -> None:
    @fluxus.timeout(30)
    async def work() -> None:
        await lib.sleep(30)

    async def body() -> str:
        if lib.name == "trio":
            with trio.move_on_after(0.02) as scope:
                await work()
            return "outer" if scope.cancelled_caught else "none"
        try:
            async with asyncio.timeout(0.02):
                await work()
        except TimeoutError:
            return "outer"
        return "none"

    assert "outer" == lib.run(body)


def test_cooperative_async_timeout_raises_after_a_late_call(lib: Lib) -> None:
    @fluxus.timeout(0.01, strategy="cooperative")
    async def work() -> str:
        await lib.sleep(0.05)
        return "late"

    with pytest.raises(fluxus.DeadlineExceeded):
        lib.run(work)


# -- retry ---------------------------------------------------------------------


def test_retry_sleeps_its_backoff_with_the_running_library(lib: Lib) -> None:
    calls: list[int] = []

    @fluxus.retry(3, backoff=constant(0.01))
    async def work() -> str:
        calls.append(1)
        await lib.sleep(0)
        if len(calls) < 3:
            raise Boom
        return "done"

    assert "done" == lib.run(work)
    assert 3 == len(calls)


def test_retry_backoff_stops_at_the_enclosing_deadline(lib: Lib) -> None:
    @fluxus.timeout(0.1)
    @fluxus.retry(100, backoff=constant(5))
    async def work() -> None:
        raise Boom

    async def body() -> float:
        start = trio.current_time() if lib.name == "trio" else 0.0
        with pytest.raises((fluxus.DeadlineExceeded, Boom)):
            await work()
        return (trio.current_time() - start) if lib.name == "trio" else 0.0

    assert lib.run(body) < 4  # not the 5 s backoff


def test_retry_cancelled_in_its_backoff_sleep(lib: Lib) -> None:
    calls: list[int] = []

    @fluxus.retry(3, backoff=constant(0.01), budget=fluxus.RetryBudget(0.2, 1000))
    async def work() -> str:
        calls.append(1)
        await lib.sleep(0)
        if len(calls) % 3:
            raise Boom
        return "done"

    async def check() -> None:
        calls.clear()
        assert "done" == await work()
        assert 3 == len(calls)
        calls.clear()

    cancel_everywhere(lib, work, check)


def test_retry_block_form_under_the_running_library(lib: Lib) -> None:
    tries: list[int] = []

    async def body() -> int:
        async for attempt in fluxus.retry(4, backoff=constant(0.001)).attempts():
            with attempt:
                tries.append(attempt.number)
                await lib.sleep(0)
                if attempt.number < 3:
                    raise Boom
        return len(tries)

    assert 3 == lib.run(body)
    assert [1, 2, 3] == tries


# -- rate limit ----------------------------------------------------------------


def test_testing_mode_makes_the_waits_instant(lib: Lib) -> None:
    limiter = fluxus.rate_limit(
        0.1, burst=1, timeout=60, name=f"trio-instant-{uuid.uuid4().hex}"
    )
    tries: list[int] = []

    @limiter
    @fluxus.retry(3, backoff=constant(60))
    async def work() -> str:
        tries.append(1)
        await lib.sleep(0)
        if len(tries) == 1:
            raise Boom
        return "ok"

    async def body() -> list[str]:
        # Real waits would be 60 s (backoff), then 10 s and 20 s (limiter).
        return [await work() for _ in range(3)]

    start = time.monotonic()
    with fluxus.testing.testing():
        assert ["ok"] * 3 == lib.run(body)
    assert time.monotonic() - start < 8


def test_rate_limit_waits_with_the_running_library(lib: Lib) -> None:
    limiter = fluxus.rate_limit(
        20, burst=1, timeout=1.0, name=f"trio-wait-{uuid.uuid4().hex}"
    )

    @limiter
    async def work() -> str:
        return "ok"

    async def body() -> list[str]:
        return [await work(), await work()]  # the second one waits ~50 ms

    assert ["ok", "ok"] == lib.run(body)


def test_rate_limit_cancelled_while_waiting_gives_its_permit_back(lib: Lib) -> None:
    limiter = fluxus.rate_limit(
        20, burst=1, timeout=1.0, name=f"trio-cancel-{uuid.uuid4().hex}"
    )

    @limiter
    async def work() -> None:
        await lib.sleep(0)

    async def setup() -> None:
        await lib.sleep(0.06)  # a full bucket...
        await limiter.acquire_async(timeout=0)  # ...emptied: the next one waits

    async def check() -> None:
        # The cancelled caller's slot is free: a newcomer waits one interval.
        with pytest.raises(fluxus.RateLimitExceeded) as refused:
            await limiter.acquire_async(timeout=0)
        assert refused.value.retry_after <= 0.05 + 0.005
        await limiter.acquire_async(timeout=0.06)

    cancel_everywhere(lib, work, check, setup=setup)


# -- circuit breaker -----------------------------------------------------------


def test_breaker_opens_and_refuses(lib: Lib) -> None:
    breaker = fluxus.circuit_breaker(2, 60, name=f"trio-open-{uuid.uuid4().hex}")

    @breaker
    async def work() -> None:
        await lib.sleep(0)
        raise Boom

    async def body() -> None:
        for _ in range(2):
            with pytest.raises(Boom):
                await work()
        with pytest.raises(fluxus.CircuitOpenError):
            await work()

    lib.run(body)
    assert fluxus.CircuitState.OPEN == breaker.state


def test_breaker_trial_cancelled_frees_its_slot(lib: Lib) -> None:
    now = [0.0]
    breaker = fluxus.CircuitBreaker(
        1, 0.05, half_open_max_requests=1, clock=lambda: now[0]
    )
    gates: list[Any] = []

    @breaker
    async def trial(gate: Any = None) -> str:
        if gate is None:
            raise Boom
        await gate.wait()
        return "ok"

    async def setup() -> None:
        breaker.reset()
        with pytest.raises(Boom):
            await trial()  # opens
        now[0] += 1

    async def hang() -> str:
        gates.append(lib.event())
        return await trial(gates[-1])

    async def check() -> None:
        gate = lib.event()
        gate.set()
        assert "ok" == await trial(gate)  # admitted: the slot was given back
        assert fluxus.CircuitState.CLOSED == breaker.state

    cancel_everywhere(lib, hang, check, setup=setup)


# -- dead letters and replay ---------------------------------------------------


def test_dead_letters_are_written_off_the_loop_and_replayed(
    lib: Lib, tmp_path: Path
) -> None:
    sink = fluxus.sinks.JsonlFile(tmp_path / "letters.jsonl")
    seen: list[int] = []

    @fluxus.dead_letter(sink)
    async def work(n: int) -> None:
        await lib.sleep(0)
        raise Boom(n)

    async def redo(n: int) -> None:
        await lib.sleep(0)
        seen.append(n)

    async def body() -> fluxus.ReplayResult:
        for n in range(3):
            with pytest.raises(Boom):
                await work(n)
        return await fluxus.replay_async(sink, redo)

    result = lib.run(body)
    assert 3 == result.replayed
    assert [0, 1, 2] == seen
    assert [] == list(sink.letters())


# -- the stack -----------------------------------------------------------------


def _stack(name: str, sink: Any) -> fluxus.Stack:
    return fluxus.stack(
        fluxus.dead_letter(sink),
        fluxus.rate_limit(1000, burst=1000, name=name),
        fluxus.circuit_breaker(100, 60, name=name),
        fluxus.timeout(0.5),
        fluxus.retry(3, backoff=constant(0.001)),
    )


def test_the_async_stack_runs_every_policy(lib: Lib) -> None:
    sink = fluxus.sinks.Memory()
    calls: list[int] = []

    @_stack(f"trio-stack-{uuid.uuid4().hex}", sink)
    async def work(fail: bool) -> str:
        calls.append(1)
        await lib.sleep(0)
        if fail:
            raise Boom
        if len(calls) < 2:
            raise Boom
        return "ok"

    @_stack(f"trio-slow-{uuid.uuid4().hex}", sink)
    async def slow() -> None:
        await lib.sleep(30)

    async def body() -> None:
        assert "ok" == await work(fail=False)  # retried once
        with pytest.raises(Boom):
            await work(fail=True)
        with pytest.raises(fluxus.DeadlineExceeded):
            await slow()

    lib.run(body)
    assert 2 == len(list(sink.letters()))


def test_the_async_stack_cancelled_anywhere_stays_sound(lib: Lib) -> None:
    sink = fluxus.sinks.Memory()
    name = f"trio-stack-cancel-{uuid.uuid4().hex}"
    stack = fluxus.stack(
        fluxus.dead_letter(sink),
        fluxus.rate_limit(10_000, burst=100, name=name),
        fluxus.circuit_breaker(1, 60, half_open_max_requests=1, name=name),
        fluxus.timeout(5),
        fluxus.retry(2, backoff=constant(0.001)),
    )
    runs: list[int] = []

    @stack
    async def work() -> str:
        runs.append(1)
        await lib.sleep(0)
        await lib.sleep(0)
        return "ok"

    async def check() -> None:
        assert "ok" == await work()
        assert fluxus.CircuitState.CLOSED == stack.policies[2].state  # type: ignore[attr-defined]

    cancel_everywhere(lib, work, check)
    # A cancellation is not a dead letter.
    assert [] == [letter.error for letter in sink.letters()]


# -- bulkhead and hedge --------------------------------------------------------


@pytest.mark.filterwarnings("ignore::fluxus.LayeringWarning")
def test_bulkhead_waiters_raced_by_a_hedge_cancelled_anywhere(lib: Lib) -> None:
    # Each hedged call's backup waits for the bulkhead's one slot; the
    # first call wins and the waiting backup is cancelled: the slot and
    # the waiting place always come back, wherever the cancellation lands.
    bh = fluxus.bulkhead(1, max_waiting=1, timeout=5)
    race = fluxus.hedge(0.0)

    @race
    @bh
    async def work() -> str:
        await lib.sleep(0)
        await lib.sleep(0)
        return "ok"

    async def check() -> None:
        assert (0, 0) == (bh.in_use, bh.waiting)
        assert "ok" == await work()
        assert (0, 0) == (bh.in_use, bh.waiting)

    cancel_everywhere(lib, work, check)
    # Backups started, and some waited for the slot.
    assert race.stats.hedges > 0
    assert bh.stats.calls > race.stats.calls


def test_bulkhead_waiter_times_out_with_the_running_library(lib: Lib) -> None:
    bh = fluxus.bulkhead(1, max_waiting=1, timeout=0.05)

    @bh
    async def work() -> str:
        return "ok"

    async def body() -> None:
        async with bh:
            started = time.monotonic()
            with pytest.raises(fluxus.BulkheadFull):
                await work()
            assert 0.04 <= time.monotonic() - started < 5
        assert "ok" == await work()

    lib.run(body)
    assert (0, 0) == (bh.in_use, bh.waiting)


def test_hedge_cancelled_anywhere_leaves_no_call_running(lib: Lib) -> None:
    running: list[int] = []

    @fluxus.hedge(0.001, max_hedges=2)
    async def work() -> str:
        running.append(1)
        try:
            await lib.sleep(0.002)
            return "ok"
        finally:
            running.pop()

    async def check() -> None:
        assert [] == running  # every loser's cancellation was awaited

    cancel_everywhere(lib, work, check)


# -- fluxus.testing ------------------------------------------------------------


def test_flaky_delay_sleeps_with_the_running_library(lib: Lib) -> None:
    @fluxus.timeout(0.02)
    @fluxus.testing.flaky(failure_rate=0, slow_rate=1, delay=30)
    async def work() -> str:
        return "never"

    with pytest.raises(fluxus.DeadlineExceeded):
        lib.run(work)


# -- Redis storages ------------------------------------------------------------


def test_redis_storages_refuse_trio_before_taking_anything(redis_url: str) -> None:
    name = f"trio-redis-{uuid.uuid4().hex}"
    limiter = fluxus.rate_limit(5, burst=1, storage=redis_url, name=name)
    breaker = fluxus.circuit_breaker(
        1, 60, name=name, storage=fluxus.CircuitRedisStorage(redis_url)
    )
    bulkhead = fluxus.bulkhead(1, name=name, storage=redis_url)
    calls: list[str] = []

    @limiter
    async def limited() -> None:
        calls.append("limited")

    @bulkhead
    async def bounded() -> None:
        calls.append("bounded")

    async def block() -> None:
        async with bulkhead:
            calls.append("block")

    @breaker
    async def guarded() -> None:
        calls.append("guarded")

    for func, storage in (
        (limited, "rate_limit"),
        (guarded, "circuit_breaker"),
        (bounded, "bulkhead"),
        (block, "bulkhead"),
    ):
        with pytest.raises(RuntimeError, match=rf"Redis storage of fluxus\.{storage}"):
            trio.run(func)
        with pytest.raises(RuntimeError, match="does not run under trio"):
            trio.run(func)
    assert [] == calls

    assert 0 == bulkhead.in_use  # no lease taken under trio

    async def under_asyncio() -> None:
        await limited()  # the one token is still there: trio took nothing
        await guarded()
        await bounded()

    asyncio.run(under_asyncio())
    assert ["limited", "guarded", "bounded"] == calls
