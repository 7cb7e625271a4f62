"""The block form: ``for attempt in policy.attempts(): with attempt: ...``.

Each test body runs twice, once with ``for`` and once with ``async for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools

import fluxus
import pytest
from fluxus import _deadline
from fluxus.instrumentation import RetriesExhausted, RetryScheduled


class Block:
    """Run a block body under a policy's attempts, sync or async."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name

    def run(self, policy, body):
        """Return the attempt numbers the loop saw; raise what leaves it."""
        numbers = []
        if self.name == "sync":
            for attempt in policy.attempts():
                with attempt:
                    numbers.append(attempt.number)
                    body()
            return numbers

        async def main():
            async for attempt in policy.attempts():
                with attempt:
                    numbers.append(attempt.number)
                    await asyncio.sleep(0)
                    body()

        asyncio.run(main())
        return numbers


@pytest.fixture(params=["sync", "async"])
def block(request):
    return Block(request.param)


class Flaky:
    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)


def test_a_block_that_succeeds_runs_once(block, events):
    policy = fluxus.retry(3)
    body = Flaky()

    assert [1] == block.run(policy, body)
    assert [] == events
    assert (1, 0, 0) == (
        policy.stats.calls,
        policy.stats.retries,
        policy.stats.failures,
    )


def test_failures_are_swallowed_until_success(block, events, instant):
    policy = fluxus.retry(3, backoff=fluxus.backoff.constant(0.5))
    body = Flaky(OSError("a"), OSError("b"))

    assert [1, 2, 3] == block.run(policy, body)
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(1, 0.5, "a"), (2, 0.5, "b")] == [
        (e.attempt, e.delay, e.error_message) for e in scheduled
    ]
    assert "test_retry_block.Block.run" in scheduled[0].function
    assert (1, 2, 0) == (
        policy.stats.calls,
        policy.stats.retries,
        policy.stats.failures,
    )


def test_the_last_failure_is_raised_as_itself(block, events, instant):
    last = OSError("last")
    seen = []
    policy = fluxus.retry(2, on_exhausted=seen.append)

    with pytest.raises(OSError) as info:
        block.run(policy, Flaky(OSError("first"), last))

    assert last is info.value
    assert ["fluxus.retry gave up after 2 attempts: no attempts left"] == (
        info.value.__notes__
    )
    assert [last] == seen
    (exhausted,) = [e for e in events if isinstance(e, RetriesExhausted)]
    assert (2, "no attempts left") == (exhausted.attempts, exhausted.reason)
    assert 1 == policy.stats.failures


def test_on_exhausted_replacement_leaves_the_block(block, instant):
    class ServiceDownError(Exception):
        pass

    last = OSError("down")
    policy = fluxus.retry(1, on_exhausted=lambda e: ServiceDownError(str(e)))
    with pytest.raises(ServiceDownError) as info:
        block.run(policy, Flaky(last))
    assert last is info.value.__cause__


def test_a_refused_error_leaves_at_once(block, events):
    policy = fluxus.retry(5, on=OSError)
    body = Flaky(KeyError("k"))

    with pytest.raises(KeyError):
        block.run(policy, body)
    assert (1, []) == (body.calls, events)


def test_a_refusal_after_a_retry_is_a_give_up(block, events, instant):
    policy = fluxus.retry(5, should_retry=lambda e: "fatal" not in str(e))
    fatal = OSError("fatal")

    with pytest.raises(OSError) as info:
        block.run(policy, Flaky(OSError("again"), fatal))
    assert fatal is info.value
    assert [
        (
            "fluxus.retry gave up after 2 attempts: "
            "should_retry returned False for builtins.OSError"
        )
    ] == fatal.__notes__
    assert 1 == len([e for e in events if isinstance(e, RetriesExhausted)])


def test_rejections_are_never_retried(block):
    body = Flaky(fluxus.RateLimitExceeded("api", 0.5))
    with pytest.raises(fluxus.RateLimitExceeded):
        block.run(fluxus.retry(5), body)
    assert 1 == body.calls


def test_the_block_shares_the_policys_budget(block, instant):
    now = [100.0]
    budget = fluxus.RetryBudget(ratio=0.0, min_per_second=0.1, clock=lambda: now[0])
    policy = fluxus.retry(3, budget=budget)

    decorated = policy(Flaky(OSError()))
    decorated()  # spends the budget's one retry
    with pytest.raises(OSError) as info:
        block.run(policy, Flaky(OSError("spent")))
    assert ["fluxus.retry gave up after 1 attempt: the retry budget is spent"] == (
        info.value.__notes__
    )


def test_the_block_respects_the_deadline(block, events):
    policy = fluxus.retry(5, backoff=fluxus.backoff.constant(10))
    token = _deadline.DEADLINE.set(_deadline.monotonic() + 1.0)
    try:
        with pytest.raises(OSError) as info:
            block.run(policy, Flaky(OSError("slow")))
    finally:
        _deadline.DEADLINE.reset(token)
    assert "past the deadline" in info.value.__notes__[0]


def test_a_deadline_passed_during_the_wait_ends_the_block(
    block, events, instant, monkeypatch
):
    # The clock reads 100 when the wait is decided (0.5 s wait, 1 s left) and
    # 102 once it is over: the wait overslept the deadline.
    readings = iter([100.0, 100.0])
    monkeypatch.setattr(_deadline, "monotonic", lambda: next(readings, 102.0))
    policy = fluxus.retry(5, backoff=fluxus.backoff.constant(0.5))
    failure = OSError("late")
    body = Flaky(failure, OSError("never raised"))
    token = _deadline.DEADLINE.set(101.0)
    try:
        with pytest.raises(OSError) as info:
            block.run(policy, body)
    finally:
        _deadline.DEADLINE.reset(token)

    assert (failure, 1) == (info.value, body.calls)
    assert [
        (
            "fluxus.retry gave up after 1 attempt: "
            "the deadline passed during the backoff wait"
        )
    ] == failure.__notes__


def test_block_and_decorator_report_the_same(block, instant):
    def events_of(run):
        with fluxus.testing.capture_events() as captured, pytest.raises(OSError):
            run()
        return [
            {k: v for k, v in e.fields().items() if k not in ("function", "policy")}
            for e in captured
        ]

    decorated = fluxus.retry(3, backoff=fluxus.backoff.linear(1))
    blocked = fluxus.retry(3, backoff=fluxus.backoff.linear(1))
    fn = decorated(Flaky(OSError("1"), OSError("2"), OSError("3")))

    assert events_of(fn) == events_of(
        lambda: block.run(blocked, Flaky(OSError("1"), OSError("2"), OSError("3")))
    )
    assert decorated.stats == blocked.stats


def test_cancellation_leaves_the_async_block():
    policy = fluxus.retry(5)
    calls = []

    async def main():
        async for attempt in policy.attempts():
            with attempt:
                calls.append(attempt.number)
                raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(main())
    assert [1] == calls


def test_a_loop_without_with_attempt_runs_once():
    policy = fluxus.retry(3)
    assert [1] == [attempt.number for attempt in policy.attempts()]


def test_reprs_say_where_they_are():
    attempts = fluxus.retry(2, name="quotes").attempts()
    attempt = next(attempts)
    assert "<fluxus.retry attempt 1>" == repr(attempt)
    assert "<fluxus.retry attempts of 'quotes' at 1>" == repr(attempts)


class Recorder:
    """An observer that writes down what it is told, attempts included."""

    attempts = True

    def __init__(self):
        self.seen = []

    def start(self, policy, function, attempt):
        self.seen.append(("start", policy.name, attempt))
        return attempt

    def end(self, state, error):
        self.seen.append(("end", state, type(error).__name__ if error else None))


def run_decorated(block, policy, body):
    """Run *body* decorated with *policy*, as a plain or an async function."""
    if block.name == "sync":
        return policy(body)()

    async def async_body():
        await asyncio.sleep(0)
        body()

    return asyncio.run(policy(async_body)())


OUTCOMES = {
    "at once": (),
    "after two failures": (OSError("a"), OSError("b")),
    "attempts spent": (OSError("a"), OSError("b"), OSError("c")),
    "refused": (KeyError("k"),),
    "refused after a retry": (OSError("a"), KeyError("k")),
}


@pytest.mark.parametrize("outcome", OUTCOMES)
@pytest.mark.parametrize("attempts", [True, False])
def test_observers_see_a_block_as_a_decorated_call(block, instant, outcome, attempts):
    from fluxus.instrumentation import add_observer, remove_observer

    recorder = Recorder()
    recorder.attempts = attempts
    seen = []
    add_observer(recorder)
    try:
        for run in (functools.partial(run_decorated, block), block.run):
            recorder.seen.clear()
            policy = fluxus.retry(3, on=OSError, name="r")
            with contextlib.suppress(OSError, KeyError):
                run(policy, Flaky(*OUTCOMES[outcome]))
            seen.append((list(recorder.seen), policy.stats))
    finally:
        remove_observer(recorder)

    assert seen[0] == seen[1]
    assert ("start", "r", 0) == seen[0][0][0]
    assert attempts == (("start", "r", 1) in seen[0][0])


def test_prometheus_counts_a_block_as_a_decorated_call(block, instant):
    from fluxus.instrumentation import prometheus
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    prometheus.install(registry)
    try:
        decorated = fluxus.retry(3, name="decorated")
        blocked = fluxus.retry(3, name="blocked")
        run_decorated(block, decorated, Flaky(OSError("a")))
        block.run(blocked, Flaky(OSError("a")))
    finally:
        prometheus.uninstall(registry)

    def sample(metric, policy):
        labels = {"policy": policy}
        if metric != "fluxus_retries_total":  # labelled by policy alone
            labels["kind"] = "retry"
        return registry.get_sample_value(metric, labels)

    for metric in (
        "fluxus_calls_total",
        "fluxus_retries_total",
        "fluxus_call_duration_seconds_count",
    ):
        assert 1 == sample(metric, "decorated") == sample(metric, "blocked"), metric
    assert sample("fluxus_failures_total", "blocked") in {None, 0}


def test_no_first_attempt_under_an_expired_deadline(block):
    policy = fluxus.retry(3)
    body = Flaky()
    token = _deadline.DEADLINE.set(_deadline.monotonic() - 1.0)
    try:
        with pytest.raises(fluxus.DeadlineExceeded):
            block.run(policy, body)
    finally:
        _deadline.DEADLINE.reset(token)
    assert (0, 1) == (body.calls, policy.stats.calls)
