from __future__ import annotations

import asyncio
import time

import fluxus
import pytest
import tenacity
from fluxus import _deadline
from fluxus.instrumentation import RetriesExhausted, RetryScheduled
from fluxus.testing import capture_events
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import Mode

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")


class Flaky:
    """Fail with the given exceptions, one per call, then return "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_returns_first_success_without_retrying(mode, events):
    body = Flaky()
    fn = fluxus.retry(3)(mode.make(body))

    assert "ok" == mode.run(fn)
    assert 1 == body.calls
    assert [] == events


def test_retries_until_success(mode, events, instant):
    body = Flaky(OSError("a"), OSError("b"))
    fn = fluxus.retry(3)(mode.make(body))

    assert "ok" == mode.run(fn)
    assert 3 == body.calls
    assert [1, 2] == [e.attempt for e in events if isinstance(e, RetryScheduled)]


def test_attempts_is_the_total_number_of_calls(mode, instant):
    errors = [OSError(str(i)) for i in range(5)]
    body = Flaky(*errors)
    fn = fluxus.retry(3)(mode.make(body))

    with pytest.raises(OSError) as info:
        mode.run(fn)

    assert 3 == body.calls
    assert errors[2] is info.value


def test_last_exception_reraised_as_itself_with_a_note(mode, events, instant):
    last = ValueError("last")
    fn = fluxus.retry(2)(mode.make(Flaky(ValueError("first"), last)))

    with pytest.raises(ValueError) as info:
        mode.run(fn)

    assert last is info.value
    assert [
        "fluxus.retry gave up after 2 attempts: no attempts left"
    ] == info.value.__notes__
    (exhausted,) = [e for e in events if isinstance(e, RetriesExhausted)]
    assert (2, "builtins.ValueError", "last") == (
        exhausted.attempts,
        exhausted.error_type,
        exhausted.error_message,
    )


def test_one_attempt_never_retries(mode, events):
    body = Flaky(OSError("once"))
    fn = fluxus.retry(1)(mode.make(body))

    with pytest.raises(OSError, match="once") as info:
        mode.run(fn)

    assert 1 == body.calls
    assert ["fluxus.retry gave up after 1 attempt: no attempts left"] == (
        info.value.__notes__
    )


def test_on_exhausted_replacement_raised_from_last(mode, instant):
    class ServiceDownError(Exception):
        pass

    last = OSError("down")
    fn = fluxus.retry(2, on_exhausted=lambda exc: ServiceDownError(str(exc)))(
        mode.make(Flaky(OSError("x"), last))
    )

    with pytest.raises(ServiceDownError, match="down") as info:
        mode.run(fn)

    assert last is info.value.__cause__


def test_on_exhausted_returning_none_reraises_last(mode, instant):
    seen = []
    last = OSError("down")
    fn = fluxus.retry(2, on_exhausted=seen.append)(mode.make(Flaky(OSError(), last)))

    with pytest.raises(OSError) as info:
        mode.run(fn)

    assert [last] == seen
    assert last is info.value


def test_on_exhausted_returning_garbage_is_a_type_error(mode, instant):
    fn = fluxus.retry(1, on_exhausted=lambda exc: "nope")(mode.make(Flaky(OSError())))

    with pytest.raises(TypeError, match="on_exhausted"):
        mode.run(fn)


def test_only_listed_exceptions_are_retried(mode, instant):
    body = Flaky(OSError(), KeyError("not retried"))
    fn = fluxus.retry(5, on=OSError)(mode.make(body))

    with pytest.raises(KeyError):
        mode.run(fn)
    assert 2 == body.calls


def test_tuple_of_exception_types(mode, instant):
    body = Flaky(OSError(), KeyError())
    fn = fluxus.retry(3, on=(OSError, KeyError))(mode.make(body))

    assert "ok" == mode.run(fn)


def test_should_retry_narrows(mode, instant):
    body = Flaky(OSError("retry me"), OSError("fatal"))
    fn = fluxus.retry(5, should_retry=lambda exc: "fatal" not in str(exc))(
        mode.make(body)
    )

    with pytest.raises(OSError, match="fatal") as info:
        mode.run(fn)
    assert 2 == body.calls
    assert [
        (
            "fluxus.retry gave up after 2 attempts: "
            "should_retry returned False for builtins.OSError"
        )
    ] == info.value.__notes__


@pytest.mark.parametrize(
    "rejection",
    [fluxus.CircuitOpenError("db", 1.0), fluxus.RateLimitExceeded("api", 0.5)],
)
def test_fluxus_rejections_are_never_retried(mode, rejection):
    body = Flaky(rejection)
    fn = fluxus.retry(5)(mode.make(body))

    with pytest.raises(type(rejection)):
        mode.run(fn)
    assert 1 == body.calls


def test_keyboard_interrupt_is_never_retried():
    body = Flaky(KeyboardInterrupt())
    fn = fluxus.retry(5)(body)

    with pytest.raises(KeyboardInterrupt):
        fn()
    assert 1 == body.calls


def test_cancellation_is_never_retried():
    body = Flaky(asyncio.CancelledError())

    @fluxus.retry(5)
    async def fn():
        return body()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(fn())
    assert 1 == body.calls


def test_backoff_delays_follow_the_strategy(mode, events, instant):
    body = Flaky(OSError(), OSError(), OSError())
    fn = fluxus.retry(4, backoff=fluxus.backoff.exponential(0.5, factor=3.0))(
        mode.make(body)
    )

    mode.run(fn)

    assert [0.5, 1.5, 4.5] == [e.delay for e in events if isinstance(e, RetryScheduled)]


def test_backoff_callable_receives_the_retry_index(mode, events, instant):
    seen = []

    def backoff(retry_index):
        seen.append(retry_index)
        return retry_index / 10

    fn = fluxus.retry(4, backoff=backoff)(mode.make(Flaky(OSError(), OSError())))
    mode.run(fn)

    # Called for the two waits that happen: never when the decorator is
    # built, never after the last attempt.
    assert [0, 1] == seen
    assert [0.0, 0.1] == [e.delay for e in events if isinstance(e, RetryScheduled)]


def test_tenacity_wait_objects_are_accepted(mode, events, instant):
    fn = fluxus.retry(3, backoff=tenacity.wait_fixed(2))(
        mode.make(Flaky(OSError(), OSError()))
    )
    mode.run(fn)

    assert [2.0, 2.0] == [e.delay for e in events if isinstance(e, RetryScheduled)]


def test_backoff_really_waits(mode):
    body = Flaky(OSError(), OSError())
    fn = fluxus.retry(3, backoff=fluxus.backoff.constant(0.05))(mode.make(body))

    start = time.monotonic()
    mode.run(fn)

    assert time.monotonic() - start >= 0.1


def test_backoff_turning_negative_later_is_a_value_error(mode, instant):
    fn = fluxus.retry(3, backoff=lambda i: 1.0 - i * 2)(
        mode.make(Flaky(OSError(), OSError()))
    )

    with pytest.raises(ValueError, match="backoff must return seconds >= 0"):
        mode.run(fn)


def test_async_backoff_sleep_is_cancellable():
    body = Flaky(OSError(), OSError())

    @fluxus.retry(3, backoff=fluxus.backoff.constant(30))
    async def fn():
        return body()

    async def main():
        task = asyncio.create_task(fn())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    start = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - start < 5
    assert 1 == body.calls


def test_no_retry_when_backoff_would_pass_the_deadline(mode, events):
    body = Flaky(OSError("slow down"), OSError())
    fn = fluxus.retry(5, backoff=fluxus.backoff.constant(10))(mode.make(body))

    token = _deadline.DEADLINE.set(_deadline.monotonic() + 1.0)
    try:
        with pytest.raises(OSError, match="slow down") as info:
            mode.run(fn)
    finally:
        _deadline.DEADLINE.reset(token)

    assert 1 == body.calls
    (note,) = info.value.__notes__
    assert "past the deadline" in note
    assert not any(isinstance(e, RetryScheduled) for e in events)


def test_retries_while_the_deadline_allows(mode):
    body = Flaky(OSError(), OSError())
    fn = fluxus.retry(3, backoff=fluxus.backoff.constant(0.01))(mode.make(body))

    token = _deadline.DEADLINE.set(_deadline.monotonic() + 30)
    try:
        assert "ok" == mode.run(fn)
    finally:
        _deadline.DEADLINE.reset(token)


def test_testing_mode_caps_attempts(mode):
    body = Flaky(OSError(), OSError())
    fn = fluxus.retry(10)(mode.make(body))

    with fluxus.testing.testing(attempts=1), pytest.raises(OSError):
        mode.run(fn)
    assert 1 == body.calls


def test_budget_stops_retries_once_spent(mode, events, instant):
    now = [1000.0]
    budget = fluxus.RetryBudget(ratio=0.0, min_per_second=0.2, clock=lambda: now[0])
    # 0.2 retries a second over ten seconds: two retries in all.
    first = fluxus.retry(3, budget=budget)(mode.make(Flaky(OSError(), OSError())))
    second = fluxus.retry(3, budget=budget)(mode.make(Flaky(OSError("spent"))))

    assert "ok" == mode.run(first)
    with pytest.raises(OSError, match="spent") as info:
        mode.run(second)
    assert ["fluxus.retry gave up after 1 attempt: the retry budget is spent"] == (
        info.value.__notes__
    )

    now[0] += 11  # the window slides past the spent retries
    assert "ok" == mode.run(fluxus.retry(2, budget=budget)(mode.make(Flaky(OSError()))))


def test_one_policy_shares_its_budget_between_functions(instant):
    now = [50.0]
    policy = fluxus.retry(2, budget=fluxus.RetryBudget(0.0, 0.1, clock=lambda: now[0]))
    a = policy(Flaky(OSError(), OSError()))
    b = policy(Flaky(OSError()))

    with pytest.raises(OSError):
        a()  # one retry spends the whole budget of one
    with pytest.raises(OSError):
        b()
    assert (policy, policy) == (fluxus.layers(a)[0], fluxus.layers(b)[0])


def test_policy_name_defaults_to_first_function(events, instant):
    policy = fluxus.retry(2)

    def first():
        raise OSError

    wrapped = policy(first)
    other = policy(Flaky(OSError()))
    other()

    assert f"{__name__}.test_policy_name_defaults_to_first_function.<locals>.first" == (
        policy.name
    )
    (event,) = events
    assert policy.name == event.policy
    assert event.function.endswith("Flaky")
    assert wrapped is not other


def test_events_never_carry_arguments(events, instant):
    fn = fluxus.retry(2)(Flaky(OSError("boom"), OSError("boom")))

    with pytest.raises(OSError):
        fn("hunter2", token="s3cr3t")

    assert events
    for event in events:
        text = repr(event.fields())
        assert "hunter2" not in text
        assert "s3cr3t" not in text


def test_concurrent_async_calls_retry_independently(events, instant):
    policy = fluxus.retry(3)
    bodies = [Flaky(OSError(), OSError()) for _ in range(50)]

    async def main():
        fns = [policy(Mode_async(b)) for b in bodies]
        return await asyncio.gather(*(fn() for fn in fns))

    assert ["ok"] * 50 == asyncio.run(main())
    assert all(3 == b.calls for b in bodies)
    assert 100 == len(events)


def Mode_async(body):  # noqa: N802 - reads like a constructor
    async def fn():
        await asyncio.sleep(0)
        return body()

    return fn


def test_threads_share_one_policy(instant):
    import threading

    policy = fluxus.retry(3)
    bodies = [Flaky(OSError(), OSError()) for _ in range(16)]
    fns = [policy(b) for b in bodies]
    results = []
    threads = [threading.Thread(target=lambda f=f: results.append(f())) for f in fns]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert ["ok"] * 16 == results


# -- on_result ---------------------------------------------------------------


class Returns:
    """Return the given values, one per call, then "done"."""

    def __init__(self, *values):
        self.values = list(values)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.values.pop(0) if self.values else "done"


def test_on_result_retries_rejected_values(mode, events, instant):
    body = Returns("pending", "pending")
    fn = fluxus.retry(5, on_result=lambda value: value == "pending")(mode.make(body))

    assert "done" == mode.run(fn)
    assert 3 == body.calls
    scheduled = [e for e in events if isinstance(e, RetryScheduled)]
    assert [(1, None, None), (2, None, None)] == [
        (e.attempt, e.error_type, e.error_message) for e in scheduled
    ]
    assert (1, 2) == (
        fluxus.layers(fn)[0].stats.calls,
        fluxus.layers(fn)[0].stats.retries,
    )


def test_on_result_returns_the_last_value_when_attempts_run_out(mode, events, instant):
    body = Returns(503, 502, 504)
    seen = []
    fn = fluxus.retry(
        3, on_result=lambda status: status >= 500, on_exhausted=seen.append
    )(mode.make(body))

    assert 504 == mode.run(fn)
    assert 3 == body.calls
    (exhausted,) = [e for e in events if isinstance(e, RetriesExhausted)]
    assert (3, "on_result rejected the result; no attempts left", None) == (
        exhausted.attempts,
        exhausted.reason,
        exhausted.error_type,
    )
    assert [] == seen  # on_exhausted is for exceptions
    assert 1 == fluxus.layers(fn)[0].stats.failures


def test_on_result_false_returns_at_once(mode, events):
    body = Returns("ready")
    fn = fluxus.retry(3, on_result=lambda value: value is None)(mode.make(body))

    assert "ready" == mode.run(fn)
    assert (1, []) == (body.calls, events)


def test_failures_and_rejected_results_mix(mode, instant):
    calls = []

    def body():
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError
        return "pending" if len(calls) == 2 else "ok"

    fn = fluxus.retry(3, on_result=lambda v: v == "pending")(mode.make(body))
    assert "ok" == mode.run(fn)
    assert 3 == len(calls)


def test_an_error_after_a_rejected_result_is_raised_when_attempts_run_out(
    mode, instant
):
    calls = []

    def body():
        calls.append(1)
        if len(calls) == 1:
            return "pending"
        raise OSError("down")

    fn = fluxus.retry(2, on_result=lambda v: v == "pending")(mode.make(body))
    with pytest.raises(OSError, match="down") as info:
        mode.run(fn)
    assert ["fluxus.retry gave up after 2 attempts: no attempts left"] == (
        info.value.__notes__
    )


def test_on_result_respects_the_budget_and_the_deadline(mode, events):
    budget = fluxus.RetryBudget(ratio=0.0, min_per_second=0.0)
    fn = fluxus.retry(3, on_result=bool, budget=budget)(mode.make(Returns(1)))
    assert 1 == mode.run(fn)
    (exhausted,) = [e for e in events if isinstance(e, RetriesExhausted)]
    assert "on_result rejected the result; the retry budget is spent" == (
        exhausted.reason
    )


# -- giving up ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "second", "reason"),
    [
        ({"on": OSError}, lambda: KeyError("k"), "builtins.KeyError is not in on"),
        (
            {"should_retry": lambda e: "fatal" not in str(e)},
            lambda: OSError("fatal"),
            "should_retry returned False for builtins.OSError",
        ),
        (
            {},
            lambda: fluxus.CircuitOpenError("db", 1.0),
            "fluxus.exceptions.CircuitOpenError is a fluxus rejection, never retried",
        ),
    ],
)
def test_a_refusal_after_a_retry_is_a_give_up(  # noqa: PLR0917 - fixtures and params
    mode, events, instant, kwargs, second, reason
):
    seen = []
    second = second()
    body = Flaky(OSError("first"), second)
    fn = fluxus.retry(5, on_exhausted=seen.append, **kwargs)(mode.make(body))

    with pytest.raises(type(second)) as info:
        mode.run(fn)

    assert second is info.value
    assert [f"fluxus.retry gave up after 2 attempts: {reason}"] == info.value.__notes__
    (exhausted,) = [e for e in events if isinstance(e, RetriesExhausted)]
    assert (2, reason) == (exhausted.attempts, exhausted.reason)
    assert [second] == seen
    assert 1 == fluxus.layers(fn)[0].stats.failures


def test_a_refusal_on_the_first_attempt_is_raised_untouched(mode, events):
    seen = []
    error = KeyError("k")
    fn = fluxus.retry(5, on=OSError, on_exhausted=seen.append)(mode.make(Flaky(error)))

    with pytest.raises(KeyError):
        mode.run(fn)
    assert (None, [], []) == (getattr(error, "__notes__", None), seen, events)


def test_the_note_does_not_pile_up_on_a_reused_exception(mode, instant):
    shared = OSError("the same object every time")
    fn = fluxus.retry(2)(mode.make(lambda: (_ for _ in ()).throw(shared)))

    for _ in range(3):
        with pytest.raises(OSError):
            mode.run(fn)

    assert [
        "fluxus.retry gave up after 2 attempts: no attempts left"
    ] == shared.__notes__


def test_nested_retries_keep_each_note_and_the_users_notes(instant):
    shared = OSError("same")
    shared.add_note("from the user")

    def fail():
        raise shared

    fn = fluxus.retry(2)(fluxus.retry(3)(fail))
    for _ in range(2):
        with pytest.raises(OSError):
            fn()

    assert [
        "from the user",
        "fluxus.retry gave up after 3 attempts: no attempts left",
        "fluxus.retry gave up after 2 attempts: no attempts left",
    ] == shared.__notes__


# -- backoff -----------------------------------------------------------------


def test_backoff_is_called_only_for_waits_that_happen(mode, instant):
    seen = []

    def backoff(retry_index):
        seen.append(retry_index)
        return 0.0

    fn = fluxus.retry(3, backoff=backoff)(mode.make(Flaky(*[OSError()] * 5)))
    with pytest.raises(OSError):
        mode.run(fn)
    assert [0, 1] == seen  # two waits for three attempts


def test_a_two_parameter_backoff_sees_the_error(mode, events, instant):
    seen = []
    first, second = OSError("a"), OSError("b")

    def backoff(retry_index, error):
        seen.append((retry_index, error))
        return 0.25

    fn = fluxus.retry(4, backoff=backoff, on_result=lambda v: v == "again")(
        mode.make(Flaky(first, second))
    )
    body_values = iter(["again", "ok"])
    fn2 = fluxus.retry(3, backoff=backoff, on_result=lambda v: v == "again")(
        mode.make(lambda: next(body_values))
    )

    assert "ok" == mode.run(fn)
    assert "ok" == mode.run(fn2)
    assert [(0, first), (1, second), (0, None)] == seen
    assert [0.25] * 3 == [e.delay for e in events if isinstance(e, RetryScheduled)]


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, "backoff must return seconds >= 0, got -1"),
        (float("nan"), ValueError, "backoff must return seconds >= 0, got nan"),
        ("1s", TypeError, "backoff must return seconds as a number, got '1s'"),
        (None, TypeError, "backoff must return seconds as a number, got None"),
    ],
)
def test_a_bad_wait_is_reported_when_returned(mode, instant, value, error, message):
    failure = OSError("down")
    fn = fluxus.retry(3, backoff=lambda i: value)(mode.make(Flaky(failure)))

    with pytest.raises(error) as info:
        mode.run(fn)
    assert message == str(info.value)
    assert failure is info.value.__cause__


def test_a_timedelta_wait_is_seconds(mode, events, instant):
    from datetime import timedelta

    fn = fluxus.retry(2, backoff=lambda i: timedelta(milliseconds=1500))(
        mode.make(Flaky(OSError()))
    )
    mode.run(fn)
    assert [1.5] == [e.delay for e in events if isinstance(e, RetryScheduled)]


def test_a_tenacity_wait_sees_the_attempt_and_its_outcome(mode, events, instant):
    outcomes = []

    class Wait(tenacity.wait.wait_base):
        def __call__(self, retry_state):
            outcomes.append((retry_state.attempt_number, retry_state.outcome.failed))
            return 0.5

    fn = fluxus.retry(3, backoff=Wait(), on_result=lambda v: v == "again")(
        mode.make(Flaky(OSError()))
    )
    assert "ok" == mode.run(fn)
    assert [(1, True)] == outcomes


# -- the schedule, against a plainly written model ---------------------------

outcome_lists = st.lists(st.sampled_from(["raise", "reject", "ok"]), max_size=8)


@settings(max_examples=60, deadline=None)
@given(attempts=st.integers(1, 6), outcomes=outcome_lists, is_async=st.booleans())
def test_the_schedule_matches_a_model(attempts, outcomes, is_async):
    mode = Mode("async" if is_async else "sync")
    indexes = []
    errors = [OSError(str(i)) for i in range(len(outcomes))]
    calls = []

    def body():
        i = len(calls)
        calls.append(i)
        kind = outcomes[i] if i < len(outcomes) else "ok"
        if kind == "raise":
            raise errors[i]
        return "pending" if kind == "reject" else "done"

    def backoff(retry_index):
        indexes.append(retry_index)
        return 0.0

    fn = fluxus.retry(attempts, backoff=backoff, on_result=lambda v: v == "pending")(
        mode.make(body)
    )
    with capture_events() as events:
        try:
            outcome = mode.run(fn)
        except OSError as exc:
            outcome = exc

    # The model: call until a success or until attempts run out.
    padded = [*outcomes, "ok"]
    expected_calls = min(attempts, padded.index("ok") + 1)
    last = padded[expected_calls - 1]
    assert expected_calls == len(calls)
    assert list(range(expected_calls - 1)) == indexes
    assert expected_calls - 1 == sum(isinstance(e, RetryScheduled) for e in events)
    gave_up = last != "ok"
    assert int(gave_up) == sum(isinstance(e, RetriesExhausted) for e in events)
    expected = {"ok": "done", "reject": "pending", "raise": None}[last]
    if last == "raise":
        assert errors[expected_calls - 1] is outcome
        assert 1 == len(outcome.__notes__)
    else:
        assert expected == outcome
    stats = fluxus.layers(fn)[0].stats
    assert (1, expected_calls - 1, int(gave_up)) == (
        stats.calls,
        stats.retries,
        stats.failures,
    )


def test_no_attempt_starts_after_a_late_wake_up(mode, events, instant, monkeypatch):
    # The clock reads 100 when the wait is decided (0.5 s wait, 1 s left) and
    # 102 once it is over: the wait overslept the deadline.
    readings = iter([100.0, 100.0])
    monkeypatch.setattr(_deadline, "monotonic", lambda: next(readings, 102.0))
    body = Flaky(OSError("late"), OSError("never raised"))
    fn = fluxus.retry(5, backoff=fluxus.backoff.constant(0.5))(mode.make(body))
    token = _deadline.DEADLINE.set(101.0)
    try:
        with pytest.raises(OSError, match="late") as info:
            mode.run(fn)
    finally:
        _deadline.DEADLINE.reset(token)

    assert 1 == body.calls
    assert [
        (
            "fluxus.retry gave up after 1 attempt: "
            "the deadline passed during the backoff wait"
        )
    ] == info.value.__notes__
