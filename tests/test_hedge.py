from __future__ import annotations

import inspect
import time

import fluxus
import httpx
import pytest
from fluxus.instrumentation import HedgeStarted, HedgeWon, Stats

from _loopback import straggler_server
from _tasks import CANCELLED, tasks

#: The ``mode`` fixture runs every body under asyncio and under trio.
MODES = ("async", "trio")


def test_a_straggler_loses_to_the_hedge_and_the_server_sees_it_cancelled(mode, events):
    # Request 0 straggles for 10 s; the hedge (request 1) answers at once.
    with straggler_server(lambda n: 10.0 if n == 0 else 0.0) as server:
        policy = fluxus.hedge(0.05)

        @policy
        async def get(client: httpx.AsyncClient) -> str:
            response = await client.get(server.url)
            return response.text

        async def main():
            async with httpx.AsyncClient() as client:
                started = time.monotonic()
                answer = await get(client)
                return answer, time.monotonic() - started

        answer, took = mode.run(main)
        deadline = time.monotonic() + 5
        while server.hung_up < 1 and time.monotonic() < deadline:
            time.sleep(0.01)

    assert "1" == answer  # the hedge's answer
    assert took < 5
    assert (2, 1, 1) == (server.received, server.answered, server.hung_up)
    assert Stats(calls=1, hedges=1, hedges_won=1) == policy.stats
    assert [HedgeStarted, HedgeWon] == [type(e) for e in events]
    assert ("slow", 1) == (events[0].reason, events[0].hedge)


def test_a_fast_call_is_not_hedged(mode, events):
    with straggler_server(lambda n: 0.0) as server:
        policy = fluxus.hedge(5.0)

        @policy
        async def get():
            async with httpx.AsyncClient() as client:
                return (await client.get(server.url)).text

        assert "0" == mode.run(get)
    assert 1 == server.received
    assert Stats(calls=1) == policy.stats
    assert [] == events


class Calls:
    """An async function whose n-th call does what ``plan[n]`` says."""

    def __init__(self, mode, *plan):
        self.mode = mode
        self.plan = plan
        self.started = 0
        self.ended = []

    async def run(self, *args, **kwargs):
        number = self.started
        self.started += 1
        delay, outcome = self.plan[number]
        try:
            await self.mode.sleep(delay)
            if isinstance(outcome, BaseException):
                raise outcome
            return outcome
        except self.mode.cancelled:
            self.ended.append((number, "cancelled"))
            raise
        finally:
            if not self.ended or self.ended[-1][0] != number:
                self.ended.append((number, "ended"))


def test_first_success_wins_among_several_hedges(mode):
    calls = Calls(mode, (10, "slow"), (10, "slower"), (0.01, "third"))
    policy = fluxus.hedge(0.02, max_hedges=2)
    assert "third" == mode.run(policy(calls.run))
    assert 3 == calls.started
    assert {(0, "cancelled"), (1, "cancelled"), (2, "ended")} == set(calls.ended)
    assert Stats(calls=1, hedges=2, hedges_won=1) == policy.stats


def test_a_failure_matching_on_starts_the_next_hedge_at_once(mode, events):
    calls = Calls(mode, (0, ConnectionError("reset")), (0, "second"))
    policy = fluxus.hedge(10.0, on=ConnectionError)
    started = time.monotonic()
    assert "second" == mode.run(policy(calls.run))
    assert time.monotonic() - started < 5
    assert "failed" == events[0].reason


def test_when_every_call_fails_the_last_failure_is_raised(mode):
    last = ConnectionError("second")
    calls = Calls(mode, (0, ConnectionError("first")), (0, last))
    with pytest.raises(ConnectionError) as info:
        mode.run(fluxus.hedge(0.01)(calls.run))
    assert last is info.value


def test_a_failure_not_matching_on_is_raised_at_once_and_the_others_cancelled(
    mode,
):
    error = KeyError("bad request")
    calls = Calls(mode, (10, "slow"), (0.01, error))
    with pytest.raises(KeyError) as info:
        mode.run(fluxus.hedge(0.01, on=ConnectionError)(calls.run))
    assert error is info.value
    # The loser's cancellation ended before the hedged call returned.
    assert (0, "cancelled") in calls.ended


def test_no_hedge_starts_past_the_enclosing_deadline(mode):
    # Cooperative: the call runs on past its deadline, long enough for a
    # hedge to be due, but none may start.
    calls = Calls(mode, (0.5, "late"), (0, "hedge"))
    policy = fluxus.hedge(0.2)
    outer = fluxus.timeout(0.1, strategy="cooperative")

    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(outer(_through(policy(calls.run))))
    assert 1 == calls.started
    assert Stats(calls=1) == policy.stats


def _through(fn):
    async def call():
        return await fn()

    return call


def test_cancelling_the_hedged_call_cancels_and_awaits_every_call(mode):
    calls = Calls(mode, (10, "a"), (10, "b"))
    fn = fluxus.hedge(0.01)(calls.run)

    async def main():
        async with tasks(mode) as start:
            task = start(fn)
            while calls.started < 2:
                await mode.sleep(0.005)
            task.cancel()
            assert CANCELLED == await task.outcome()
            return list(calls.ended)

    assert {(0, "cancelled"), (1, "cancelled")} == set(mode.run(main))


def test_a_timeout_around_hedged_calls_raises_its_deadline(mode):
    # The enclosing timeout cancels the race and both calls; under trio
    # the nursery's cancellations reach the timeout as one cancellation.
    calls = Calls(mode, (10, "a"), (10, "b"))
    fn = fluxus.timeout(0.1)(fluxus.hedge(0.01)(calls.run))
    started = time.monotonic()
    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn)
    assert time.monotonic() - started < 5
    assert {(0, "cancelled"), (1, "cancelled")} == set(calls.ended)


class Stop(BaseException):
    """Not an Exception: no policy may swallow it."""


def test_a_base_exception_of_a_call_is_raised_as_itself(mode):
    stop = Stop()
    calls = Calls(mode, (10, "slow"), (0.01, stop))
    with pytest.raises(Stop) as info:
        mode.run(fluxus.hedge(0.01)(calls.run))
    assert stop is info.value
    assert (0, "cancelled") in calls.ended


def test_plain_functions_are_refused_when_applied():
    with pytest.raises(TypeError, match="async def functions only"):
        fluxus.hedge(0.1)(lambda: None)


def test_keeps_signature_and_coroutine_nature(mode):
    async def fetch(url: str, *, retries: int = 2) -> str:
        return url

    wrapped = fluxus.hedge(0.1)(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(fetch) == inspect.signature(wrapped)
    assert "u" == mode.run(wrapped, "u")


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((-1,), {}, ValueError, "delay must be finite and >= 0"),
        (("1",), {}, TypeError, "delay must be seconds"),
        ((0.1,), {"max_hedges": 0}, ValueError, "max_hedges must be >= 1"),
        ((0.1,), {"on": BaseException}, TypeError, "on must be an Exception"),
    ],
)
def test_bad_configuration_fails_when_built(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.hedge(*args, **kwargs)


def test_a_spent_retry_budget_starts_no_hedge(mode):
    budget = fluxus.RetryBudget(ratio=0.0, min_per_second=0.1)  # 1 in 10 s
    policy = fluxus.hedge(0.01, budget=budget)
    first = Calls(mode, (10, "slow"), (0, "hedge"))
    second = Calls(mode, (0.1, "waited"), (0, "hedge"))

    assert "hedge" == mode.run(policy(first.run))
    assert "waited" == mode.run(policy(second.run))  # budget spent

    assert (2, 1) == (first.started, second.started)
    assert 0 == budget.available()
    assert Stats(calls=2, hedges=1, hedges_won=1) == policy.stats


def test_budget_must_be_a_retry_budget():
    with pytest.raises(TypeError, match=r"budget must be a fluxus\.RetryBudget"):
        fluxus.hedge(0.1, budget=3)
