"""Cancellation at every await point inside each policy.

Each scenario runs a call as an asyncio task and cancels it after 0, 1, 2,
... turns of the event loop (and at a few points in time for real waits),
until the call finishes before the cancellation comes. After every
cancellation the policy must be as good as new: no leaked half-open slot,
no state stuck, no permit lost, no half-written dead letter.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fluxus
import pytest
from fluxus._aio import _FINISHING
from fluxus.backoff import constant

from _faults import only_captured_events
from _figures import record

#: tox -e soak tries more instants.
SOAK = os.environ.get("FLUXUS_SOAK") == "1"
MAX_STEPS = 40
DELAYS = tuple(n / 1000 for n in range(1, 40)) if SOAK else (0.001, 0.005, 0.02)


class Boom(Exception):
    """The protected function's own failure."""


async def _cancel_after(
    make: Callable[[], Awaitable[Any]], steps: int | None, delay: float = 0.0
) -> bool:
    """Run *make()* as a task, cancel it; return whether the cancel landed."""
    task = asyncio.ensure_future(make())
    if steps is None:
        await asyncio.sleep(delay)
    else:
        for _ in range(steps):
            await asyncio.sleep(0)
    if task.done():
        task.exception() if not task.cancelled() else None
        return False
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    except Exception:  # the call ended in its own way meanwhile  # noqa: S110
        pass
    return False


def cancel_everywhere(
    make: Callable[[], Awaitable[Any]],
    check: Callable[[], Awaitable[None]],
    *,
    setup: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Cancel *make()* at every loop turn and a few instants; *check* after each."""

    async def main() -> int:
        landed = 0
        points: list[tuple[int | None, float]] = [(n, 0.0) for n in range(MAX_STEPS)]
        points += [(None, d) for d in DELAYS]
        for steps, delay in points:
            if setup is not None:
                await setup()
            hit = await _cancel_after(make, steps, delay)
            landed += hit
            await check()
            if not hit and steps is not None and steps > 3:
                # The call finishes before this many turns: later ones too.
                points = [p for p in points if p[0] is None]
                continue
        return landed

    with only_captured_events():
        landed = asyncio.run(asyncio.wait_for(main(), 60))
    assert landed > 0  # the scenario was cancellable at all
    record(cancellations_tried=landed)
    return landed


# -- retry: the backoff sleep -------------------------------------------------


def test_retry_cancelled_in_its_backoff_sleep() -> None:
    calls: list[int] = []

    @fluxus.retry(3, backoff=constant(0.01), budget=fluxus.RetryBudget(0.2, 1000))
    async def work() -> str:
        calls.append(1)
        await asyncio.sleep(0)
        if len(calls) % 3:
            raise Boom
        return "done"

    async def check() -> None:
        calls.clear()
        assert "done" == await work()  # retries still work: no stuck state
        assert 3 == len(calls)
        calls.clear()

    cancel_everywhere(work, check)


# -- rate limit: the wait for a reserved permit --------------------------------


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_rate_limit_cancelled_while_waiting_gives_its_permit_back(
    storage: str, request: pytest.FixtureRequest
) -> None:
    uri = "memory://" if storage == "memory" else request.getfixturevalue("redis_url")
    limiter = fluxus.rate_limit(
        20, burst=1, timeout=1.0, storage=uri, name=f"cancel-{uuid.uuid4().hex}"
    )

    @limiter
    async def work() -> None:
        await asyncio.sleep(0)

    async def setup() -> None:
        # Wait for a full bucket, then take its one token: the next caller
        # has to wait 50 ms for a reserved slot.
        await asyncio.sleep(0.06)
        await limiter.acquire_async(timeout=0)

    async def check() -> None:
        # The cancelled caller's slot is free again (a Redis one after a
        # round trip in the background, awaited here rather than given a
        # few milliseconds a loaded machine may not have): a newcomer waits
        # one interval, not two.
        while _FINISHING:
            await asyncio.gather(*_FINISHING, return_exceptions=True)
        # (On a loaded machine more than an interval may have passed since:
        # then the newcomer gets in at once, which a lost slot would not
        # allow before two intervals.)
        try:
            await limiter.acquire_async(timeout=0)
        except fluxus.RateLimitExceeded as refused:
            assert refused.retry_after <= 0.05 + 0.005  # noqa: PT017 - admission passes too
            await limiter.acquire_async(timeout=0.06)

    cancel_everywhere(work, check, setup=setup)


# -- circuit breaker: the half-open trial ---------------------------------------


async def _admitted_within(seconds: float, call: Callable[[], Awaitable[Any]]) -> Any:
    """Return *call()*'s result once the circuit admits it, within *seconds*."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + seconds
    while True:
        await asyncio.sleep(0.02)
        try:
            return await call()
        except fluxus.CircuitOpenError:
            if loop.time() > give_up:
                raise


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_breaker_trial_cancelled_frees_its_slot(
    storage: str, request: pytest.FixtureRequest
) -> None:
    now = [0.0]
    if storage == "memory":
        breaker = fluxus.CircuitBreaker(
            1, 0.05, half_open_max_requests=1, clock=lambda: now[0]
        )
    else:
        breaker = fluxus.circuit_breaker(
            1,
            0.05,
            half_open_max_requests=1,
            name=f"cancel-{uuid.uuid4().hex}",
            storage=fluxus.CircuitRedisStorage(request.getfixturevalue("redis_url")),
        )
    release = asyncio.Event

    @breaker
    async def trial(gate: asyncio.Event | None = None) -> str:
        if gate is None:
            raise Boom
        await gate.wait()
        return "ok"

    async def setup() -> None:
        breaker.reset()
        with pytest.raises(Boom):
            await trial()  # opens
        now[0] += 1
        await asyncio.sleep(0.06)  # the Redis circuit reads the server's clock

    gates: list[asyncio.Event] = []

    async def hang() -> str:
        gates.append(release())
        return await trial(gates[-1])

    async def check() -> None:
        # The slot is free (a Redis one after a round trip in the
        # background, which a busy machine may take a while to make): a new
        # trial is admitted within seconds, not after the 60 s a kept slot
        # would hold, and closes the circuit.
        gate = release()
        gate.set()
        state = breaker.state
        assert state in (fluxus.CircuitState.HALF_OPEN, fluxus.CircuitState.OPEN)
        assert "ok" == await _admitted_within(5.0, lambda: trial(gate))
        assert fluxus.CircuitState.CLOSED == breaker.state

    cancel_everywhere(hang, check, setup=setup)


# -- timeout: inside asyncio.timeout ----------------------------------------------


def test_timeout_cancelled_from_outside_stays_a_cancellation() -> None:
    @fluxus.timeout(5)
    async def slow() -> None:
        assert fluxus.remaining() is not None
        await asyncio.sleep(10)

    @fluxus.timeout(0.01)
    async def short() -> None:
        await asyncio.sleep(10)

    async def check() -> None:
        assert fluxus.remaining() is None  # no deadline left behind
        with pytest.raises(fluxus.DeadlineExceeded):
            await short()

    cancel_everywhere(slow, check)


# -- dead letter: the write through an async sink -----------------------------------


@pytest.mark.parametrize("kind", ["jsonl", "sqlite", "redis"])
def test_dead_letter_write_cancelled_leaves_whole_records(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "jsonl":
        sink: Any = fluxus.sinks.JsonlFile(tmp_path / "letters.jsonl")
    elif kind == "sqlite":
        sink = fluxus.sinks.SQLite(tmp_path / "letters.db")
    else:
        sink = fluxus.sinks.RedisStream(
            request.getfixturevalue("redis_url"), stream=f"cancel:{uuid.uuid4().hex}"
        )
    attempts: list[int] = []

    @fluxus.dead_letter(sink)
    async def fail(n: int) -> None:
        await asyncio.sleep(0)
        raise Boom(n)

    async def one() -> None:
        attempts.append(len(attempts))
        await fail(attempts[-1], "x" * 5000)  # type: ignore[call-arg]

    async def check() -> None:
        await asyncio.sleep(0.02)  # a write already in its thread finishes
        letters = list(sink.letters())  # a torn record would warn: an error here
        numbers = [letter.args[0] for letter in letters]
        assert len(set(numbers)) == len(numbers)
        assert set(numbers) <= set(attempts)
        assert all(letter.args[1] == "x" * 5000 for letter in letters)

    cancel_everywhere(one, check)


def test_a_full_stack_cancelled_anywhere_keeps_every_invariant(tmp_path: Path) -> None:
    sink = fluxus.sinks.JsonlFile(tmp_path / "letters.jsonl")
    breaker = fluxus.circuit_breaker(2, 0.02, half_open_max_requests=1)
    limiter = fluxus.rate_limit(200, burst=2, timeout=1.0, name=uuid.uuid4().hex)
    calls: list[int] = []

    @fluxus.stack(
        fluxus.dead_letter(sink),
        limiter,
        breaker,
        fluxus.timeout(1),
        fluxus.retry(2, backoff=constant(0.002)),
    )
    async def work(n: int) -> int:
        calls.append(n)
        await asyncio.sleep(0.001)
        if n % 3 == 0:
            raise Boom(n)
        return n

    count = [0]

    async def make() -> int:
        count[0] += 1
        return await work(count[0])

    async def check() -> None:
        await asyncio.sleep(0.03)  # past reset_timeout: trials allowed again
        assert fluxus.remaining() is None
        circuit = breaker._circuit
        assert 0 <= circuit.trials <= 1
        results = []
        for n in (1, 2, 4):  # successes close any half-open circuit
            try:
                results.append(await work(n))
            except fluxus.CircuitOpenError:
                await asyncio.sleep(0.03)
                results.append(await work(n))
        assert [1, 2, 4] == results
        assert fluxus.CircuitState.CLOSED == breaker.state
        list(sink.letters())  # whole records only

    cancel_everywhere(make, check)
