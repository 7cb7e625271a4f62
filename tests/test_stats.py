from __future__ import annotations

import asyncio
import contextlib
import threading

import fluxus
import pytest
from fluxus.instrumentation import Stats

THREADS = 16
CALLS = 500


def hammer(fn, calls=CALLS):
    barrier = threading.Barrier(THREADS)
    errors = []

    def worker():
        barrier.wait()
        for i in range(calls):
            try:
                fn(i)
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


def test_retry_counts_exactly_under_16_threads(instant):
    # Odd arguments fail once then succeed; multiples of 10 never succeed.
    seen = set()
    lock = threading.Lock()

    def fn(i):
        key = (threading.get_ident(), i)
        with lock:
            first = key not in seen
            seen.add(key)
        if i % 10 == 0:
            raise OSError("never")
        if i % 2 and first:
            raise OSError("once")

    policy = fluxus.retry(2)
    errors = hammer(policy(fn))

    per_thread_never = CALLS // 10
    per_thread_once = CALLS // 2
    assert THREADS * per_thread_never == len(errors)
    assert (
        Stats(
            calls=THREADS * CALLS,
            failures=THREADS * per_thread_never,
            retries=THREADS * (per_thread_never + per_thread_once),
        )
        == policy.stats
    )


def test_breaker_counts_exactly_under_16_threads():
    policy = fluxus.circuit_breaker(10**9, exclude=KeyError)

    def fn(i):
        if i % 5 == 0:
            raise OSError("counted")
        if i % 5 == 1:
            raise KeyError("excluded")

    hammer(policy(fn))

    assert Stats(calls=THREADS * CALLS, failures=THREADS * CALLS // 5) == policy.stats


def test_rejections_are_counted(mode):
    breaker = fluxus.circuit_breaker(name=f"stats-{mode.name}")
    breaker.open()
    fn = breaker(mode.make(lambda: "ok"))
    limiter = fluxus.rate_limit("2/minute", name=f"stats-rl-{mode.name}")
    limited = limiter(mode.make(lambda: "ok"))

    for _ in range(3):
        with pytest.raises(fluxus.CircuitOpenError):
            mode.run(fn)
    for _ in range(5):
        with contextlib.suppress(fluxus.RateLimitExceeded):
            mode.run(limited)

    assert Stats(calls=3, rejections=3) == breaker.stats
    assert Stats(calls=5, rejections=3) == limiter.stats


def test_rate_limiter_counts_exactly_under_16_threads():
    # A bucket of half the calls that refills too slowly to matter.
    policy = fluxus.rate_limit(0.001, burst=THREADS * CALLS // 2)

    errors = hammer(policy(lambda i: i))

    assert THREADS * CALLS // 2 == len(errors)
    assert Stats(calls=THREADS * CALLS, rejections=len(errors)) == policy.stats


def test_timeout_and_dead_letter_count_under_16_threads():
    timeout = fluxus.timeout(60, strategy="cooperative")
    sink = fluxus.sinks.Memory()
    dlq = fluxus.dead_letter(sink)

    def fn(i):
        if i % 4 == 0:
            raise OSError("kept")

    hammer(dlq(timeout(fn)), calls=100)

    assert Stats(calls=THREADS * 100) == timeout.stats
    assert (
        Stats(calls=THREADS * 100, failures=THREADS * 25, dead_letters=THREADS * 25)
        == dlq.stats
    )
    assert THREADS * 25 == len(list(sink.letters()))


def test_timeouts_are_counted(mode):
    import time

    policy = fluxus.timeout(0.01, strategy="cooperative")
    fn = policy(mode.make(lambda: time.sleep(0.02)))

    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn)

    assert Stats(calls=1, timeouts=1) == policy.stats


def test_stats_are_a_frozen_snapshot():
    policy = fluxus.retry()
    fn = policy(lambda: "ok")
    before = policy.stats
    fn()

    assert Stats() == before
    assert Stats(calls=1) == policy.stats
    with pytest.raises(AttributeError):
        before.calls = 5  # type: ignore[misc]


def test_policies_in_a_stack_count_their_decisions(mode, instant):
    breaker = fluxus.circuit_breaker(2, 60.0, name=f"stack-cb-{mode.name}")
    limiter = fluxus.rate_limit(1000, name=f"stack-rl-{mode.name}")
    retry = fluxus.retry(2)
    sink = fluxus.sinks.Memory()
    dlq = fluxus.dead_letter(sink, reraise=False)

    def fail():
        raise OSError("down")

    fn = fluxus.stack(dlq, limiter, breaker, retry)(mode.make(fail))
    for _ in range(4):
        mode.run(fn)

    assert Stats(calls=4, failures=2, rejections=2) == breaker.stats
    assert Stats(calls=4) == limiter.stats
    assert Stats(calls=2, failures=2, retries=2) == retry.stats
    assert Stats(calls=4, failures=4, dead_letters=4) == dlq.stats


def test_every_policy_of_a_stack_is_observed(mode, instant):
    from fluxus.instrumentation import add_observer, remove_observer

    seen = []

    class Recorder:
        attempts = False

        def start(self, policy, function, attempt):
            return policy._kind

        def end(self, state, error):
            seen.append((state, type(error).__name__ if error else None))

    policies = [
        fluxus.dead_letter(fluxus.sinks.Memory(), reraise=False),
        fluxus.rate_limit(1000, name=f"observed-{mode.name}"),
        fluxus.circuit_breaker(name=f"observed-{mode.name}"),
        fluxus.retry(2),
    ]
    calls = iter([OSError("once"), None, OSError("a"), OSError("b")])

    def body():
        error = next(calls)
        if error is not None:
            raise error
        return "ok"

    fn = fluxus.stack(*policies)(mode.make(body))
    recorder = Recorder()
    add_observer(recorder)
    try:
        assert "ok" == mode.run(fn)
        assert mode.run(fn) is None  # dead-lettered, reraise=False
    finally:
        remove_observer(recorder)

    assert [
        ("retry", None),
        ("circuit_breaker", None),
        ("rate_limit", None),
        ("dead_letter", None),
        ("retry", "OSError"),
        ("circuit_breaker", "OSError"),
        ("rate_limit", "OSError"),
        ("dead_letter", None),
    ] == seen
    assert 2 == policies[0].stats.calls
    assert 2 == policies[2].stats.calls


def test_remote_async_breaker_counts_each_call_once(redis_url):
    breaker = fluxus.circuit_breaker(name="remote-count", storage=redis_url)
    breaker.reset()

    @breaker
    async def ok():
        return 1

    async def main():
        for _ in range(3):
            await ok()

    asyncio.run(main())
    assert 3 == breaker.stats.calls
