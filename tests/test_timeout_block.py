"""The block form of the timeout: ``with fluxus.timeout(s):`` and ``async with``.

Each test body runs as a block and, where it compares, as a decorated
function: the two forms must report the same events, stats and observer
calls. Async bodies run under asyncio and trio alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time

import fluxus
import pytest
from fluxus.instrumentation import (
    RetriesExhausted,
    TimedOut,
    add_observer,
    remove_observer,
)

from conftest import Mode

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")

#: Generous slack for a loaded machine (precision belongs to the benchmarks).
SLACK = 0.5


def strategies(mode):
    """The strategies a body of *mode* is compared under."""
    if mode.is_async:
        return ["thread", "cooperative"]  # cancelled, or judged on exit
    return ["cooperative", "signal"]


def run_block(mode, policy, body):
    """Run *body* (sync, or awaited in async modes) inside ``with policy:``."""
    if not mode.is_async:

        def block():
            with policy:
                return body()

        return block()

    async def block_async():
        async with policy:
            return await body()

    return mode.run(block_async)


def run_decorated(mode, policy, body):
    """Run *body* decorated with *policy*."""
    return mode.run(policy(body))


def slow_body(mode, seconds, seen=None):
    """A body that takes *seconds*: a blocking sleep, or the library's sleep."""
    if not mode.is_async:

        def body():
            time.sleep(seconds)
            return "done"

        return body

    async def body_async():
        try:
            await mode.sleep(seconds)
        except mode.cancelled:
            if seen is not None:
                seen.append("cancelled")
            raise
        return "done"

    return body_async


def fast_body(mode, value="ok"):
    if not mode.is_async:
        return lambda: value

    async def body_async():
        await mode.checkpoint()
        return value

    return body_async


def without_function(events):
    """The events as comparable dicts: a block is named by its function."""
    return [
        {k: v for k, v in dataclasses.asdict(e).items() if k != "function"}
        | {"type": type(e).__name__}
        for e in events
    ]


@pytest.mark.parametrize("form", ["block", "decorator"])
def test_a_quick_block_returns_and_counts_a_call(mode, form, events):
    policy = fluxus.timeout(5, name="t")
    run = run_block if form == "block" else run_decorated

    assert "ok" == run(mode, policy, fast_body(mode))
    assert [] == events
    assert (1, 0) == (policy.stats.calls, policy.stats.timeouts)


def test_the_deadline_is_published_for_the_block_only(mode):
    seen = []

    def look():
        seen.append(fluxus.remaining())
        return "ok"

    body = look if not mode.is_async else mode.make(look)
    run_block(mode, fluxus.timeout(2), body)

    assert 0 < seen[0] <= 2
    assert fluxus.remaining() is None


@pytest.mark.parametrize("index", [0, 1])
def test_a_late_block_and_a_late_call_report_the_same(mode, index, events):
    strategy = strategies(mode)[index]
    reports = []
    for run in (run_block, run_decorated):
        events.clear()
        policy = fluxus.timeout(0.05, strategy=strategy, name="late")
        with pytest.raises(fluxus.DeadlineExceeded) as caught:
            run(mode, policy, slow_body(mode, 0.2))
        reports.append(
            (
                without_function(events),
                policy.stats.calls,
                policy.stats.timeouts,
                type(caught.value.__cause__),
                str(caught.value),
            )
        )
        assert all(isinstance(e, TimedOut) for e in events)

    assert reports[0] == reports[1]
    assert 1 == len(reports[0][0])


def test_events_name_the_function_the_block_is_in(mode, events):
    policy = fluxus.timeout(0.02, strategy="cooperative")
    with pytest.raises(fluxus.DeadlineExceeded):
        run_block(mode, policy, slow_body(mode, 0.1))

    [event] = events
    assert event.function.startswith(f"{__name__}.run_block.")


@pytest.mark.parametrize("mode", [Mode("async"), Mode("trio")], ids=str)
def test_an_async_block_is_cancelled_at_the_deadline(mode):
    seen = []
    started = time.monotonic()
    with pytest.raises(fluxus.DeadlineExceeded) as caught:
        run_block(mode, fluxus.timeout(0.05), slow_body(mode, 30, seen))

    assert time.monotonic() - started < 0.05 + SLACK
    assert ["cancelled"] == seen
    assert isinstance(caught.value.__cause__, mode.cancelled)


def test_a_signal_block_is_interrupted_in_the_main_thread(events):
    started = time.monotonic()
    with (
        pytest.raises(fluxus.DeadlineExceeded),
        fluxus.timeout(0.05, strategy="signal", name="sig"),
    ):
        time.sleep(30)

    assert time.monotonic() - started < 0.05 + SLACK
    assert ["signal"] == [e.strategy for e in events]


def test_a_signal_block_restores_the_handler_and_the_outer_timer():
    import signal

    before = signal.getsignal(signal.SIGALRM)
    timer = signal.getitimer(signal.ITIMER_REAL)  # pytest-timeout's, if any
    with fluxus.timeout(5, strategy="signal"):
        pass

    assert before is signal.getsignal(signal.SIGALRM)
    delay, interval = signal.getitimer(signal.ITIMER_REAL)
    assert interval == timer[1]
    assert timer[0] - SLACK <= delay <= timer[0]


def test_a_signal_block_off_the_main_thread_is_a_clear_error():
    errors = []

    def run():
        try:
            with fluxus.timeout(1, strategy="signal", name="sig"):
                pass
        except ValueError as exc:
            errors.append(str(exc))

    worker = threading.Thread(target=run, name="worker-1")
    worker.start()
    worker.join(5)

    assert 1 == len(errors)
    assert "main thread" in errors[0]
    assert "'worker-1'" in errors[0]


def test_a_thread_strategy_block_is_judged_on_exit(events):
    policy = fluxus.timeout(0.02, name="t")  # the default, "thread"
    with pytest.raises(fluxus.DeadlineExceeded), policy:
        time.sleep(0.1)

    assert ["cooperative"] == [e.strategy for e in events]


def test_a_failure_in_time_passes_through_and_a_late_one_is_the_cause(mode):
    def failing(delay):
        if not mode.is_async:

            def body():
                time.sleep(delay)
                raise KeyError("mine")

            return body

        async def body_async():
            await mode.sleep(delay)
            raise KeyError("mine")

        return body_async

    with pytest.raises(KeyError):
        run_block(mode, fluxus.timeout(5), failing(0))
    with pytest.raises(fluxus.DeadlineExceeded) as caught:
        run_block(mode, fluxus.timeout(0.02, strategy="cooperative"), failing(0.1))
    assert isinstance(caught.value.__cause__, KeyError)


def test_on_timeout_replaces_the_error_of_a_block(mode):
    class Late(Exception):
        pass

    policy = fluxus.timeout(0.02, on_timeout=lambda exc: Late(str(exc)))
    with pytest.raises(Late) as caught:
        run_block(mode, policy, slow_body(mode, 0.2))
    assert isinstance(caught.value.__cause__, fluxus.DeadlineExceeded)


def test_nested_block_deadlines_only_shrink(mode):
    seen = []
    outer, inner = fluxus.timeout(0.5), fluxus.timeout(5)

    def look():
        seen.append(fluxus.remaining())

    if not mode.is_async:
        with outer:
            with inner:
                look()
            look()
    else:

        async def main():
            async with outer:
                async with inner:
                    look()
                look()

        mode.run(main)

    assert all(0 < left <= 0.5 for left in seen)


def test_the_inner_block_that_runs_out_raises_its_own(mode):
    outer, inner = fluxus.timeout(5, name="outer"), fluxus.timeout(0.05, name="in")
    body = slow_body(mode, 0.3)
    if not mode.is_async:

        def main():
            with outer, inner:
                body()

    else:

        async def main():
            async with outer, inner:
                await body()

    with pytest.raises(fluxus.DeadlineExceeded) as caught:
        mode.run(main)

    assert "'in'" in str(caught.value)
    assert (1, 0) == (outer.stats.calls, outer.stats.timeouts)
    assert (1, 1) == (inner.stats.calls, inner.stats.timeouts)


def test_no_block_starts_past_the_enclosing_deadline(mode, events):
    outer = fluxus.timeout(0.02, strategy="cooperative", name="outer")
    inner = fluxus.timeout(5, name="inner")
    entered = []
    if not mode.is_async:

        def main():
            with outer:
                time.sleep(0.05)
                with inner:
                    entered.append(1)

    else:

        async def main():
            async with outer:
                # Blocks the loop: the cooperative deadline passes meanwhile.
                time.sleep(0.05)  # noqa: ASYNC251
                async with inner:
                    entered.append(1)

    with pytest.raises(fluxus.DeadlineExceeded) as caught:
        mode.run(main)

    assert [] == entered
    assert "'inner'" in str(caught.value)
    assert ["enclosing deadline had passed" in e.reason for e in events] == [True]


def test_one_policy_guards_concurrent_blocks_of_its_own():
    policy = fluxus.timeout(0.1, name="shared")

    async def quick():
        async with policy:
            await asyncio.sleep(0)
            return fluxus.remaining()

    async def stuck():
        async with policy:
            await asyncio.sleep(30)

    async def main():
        return await asyncio.gather(quick(), stuck(), quick(), return_exceptions=True)

    first, second, third = asyncio.run(main())

    assert 0 < first <= 0.1
    assert isinstance(second, fluxus.DeadlineExceeded)
    assert 0 < third <= 0.1
    assert (3, 1) == (policy.stats.calls, policy.stats.timeouts)


def test_a_retry_inside_a_timeout_block_sees_the_deadline(mode, events):
    policy = fluxus.retry(100, backoff=fluxus.backoff.constant(0.05), name="r")
    calls = []

    def flaky():
        calls.append(1)
        raise OSError("down")

    fn = policy(mode.make(flaky))
    started = time.monotonic()
    with pytest.raises(OSError, match="down"):
        run_block(mode, fluxus.timeout(0.3), fn)

    assert time.monotonic() - started < 0.3 + SLACK
    assert 2 <= len(calls) < 100
    [exhausted] = [e for e in events if isinstance(e, RetriesExhausted)]
    assert "deadline" in exhausted.reason


def test_a_retried_block_inside_a_timeout_block_sees_the_deadline(mode, events):
    policy = fluxus.retry(100, backoff=fluxus.backoff.constant(0.05), name="r")
    calls = []
    if not mode.is_async:

        def main():
            with fluxus.timeout(0.3):
                for attempt in policy.attempts():
                    with attempt:
                        calls.append(1)
                        raise OSError("down")

    else:

        async def main():
            async with fluxus.timeout(0.3):
                async for attempt in policy.attempts():
                    with attempt:
                        calls.append(1)
                        raise OSError("down")

    with pytest.raises(OSError, match="down"):
        mode.run(main)

    assert 2 <= len(calls) < 100
    [exhausted] = [e for e in events if isinstance(e, RetriesExhausted)]
    assert "deadline" in exhausted.reason


class Recorder:
    """An observer that writes down what it is told."""

    attempts = True

    def __init__(self):
        self.seen = []

    def start(self, policy, function, attempt):
        self.seen.append(("start", policy.name, attempt))
        return len(self.seen) - 1

    def end(self, state, error):
        self.seen.append(("end", state, type(error).__name__ if error else None))


@pytest.fixture
def recorder():
    recorder = Recorder()
    add_observer(recorder)
    yield recorder
    remove_observer(recorder)


@pytest.mark.parametrize("late", [False, True])
def test_observers_see_a_block_as_a_decorated_call(mode, recorder, late):
    seen = []
    for run in (run_block, run_decorated):
        recorder.seen.clear()
        policy = fluxus.timeout(0.05 if late else 5, name="t")
        body = slow_body(mode, 0.2) if late else fast_body(mode)
        with contextlib.suppress(fluxus.DeadlineExceeded):
            run(mode, policy, body)
        seen.append(list(recorder.seen))

    assert seen[0] == seen[1]
    error = "DeadlineExceeded" if late else None
    assert [("start", "t", 0), ("end", 0, error)] == seen[0]


def test_an_async_block_outside_a_task_leaves_nothing_behind():
    policy = fluxus.timeout(1)
    block = policy.__aenter__()
    with pytest.raises(RuntimeError):
        block.send(None)  # driven by hand: no running task
    assert fluxus.remaining() is None
