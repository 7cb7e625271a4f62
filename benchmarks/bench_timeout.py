"""Cost and precision of fluxus.timeout against the stdlib and its peers.

Run with ``python benchmarks/bench_timeout.py`` (``tox -e bench`` installs
the peers). Three parts, all in one process:

- happy path, async: ``fluxus.timeout`` against a bare ``async with
  asyncio.timeout()`` and ``asyncio.wait_for``;
- happy path, sync hand-offs to another thread: the default strategy
  against ``ThreadPoolExecutor.submit(f).result(timeout)`` and
  ``func_timeout`` (a thread per call);
- happy path, sync in the calling thread: the ``"cooperative"`` and
  ``"signal"`` strategies against ``timeout_decorator`` (SIGALRM). Kept apart
  from the hand-offs: mixing them in one round makes the kernel stop placing
  the worker on the caller's CPU, which slows every hand-off alike;
- precision: how late the caller gets control back after the deadline,
  over many timeouts of a call that sleeps far longer (p50 / p99 / max);
- threads (``--threads 1,8,64``): calls/s and cost per call of each sync
  strategy called from that many threads at once, beside
  ``ThreadPoolExecutor.submit(f).result(timeout)`` (64 workers) and the bare
  call. ``"signal"`` runs in the main thread only, so it is timed from one
  thread.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import func_timeout
import timeout_decorator

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus.instrumentation import set_hooks

from _harness import (
    compare,
    compare_throughput,
    report,
    report_throughput,
    time_async,
    time_sync,
)


def work(x=1):
    return x


async def awork(x=1):
    return x


def build_async():
    async def with_asyncio_timeout():
        async with asyncio.timeout(1.0):
            return await awork()

    async def with_wait_for():
        return await asyncio.wait_for(awork(), 1.0)

    return {
        "bare call": awork,
        "asyncio.timeout": with_asyncio_timeout,
        "asyncio.wait_for": with_wait_for,
        "fluxus.timeout": fluxus.timeout(1.0)(awork),
        "fluxus cooperative": fluxus.timeout(1.0, strategy="cooperative")(awork),
    }


def build_handoffs(executor):
    """Contenders that run the call in another thread."""
    return {
        "bare call": work,
        "TPE submit().result()": lambda: executor.submit(work).result(1.0),
        "fluxus.timeout thread": fluxus.timeout(1.0)(work),
        "func_timeout": lambda: func_timeout.func_timeout(1.0, work),
    }


def build_in_thread():
    """Contenders that run the call in the calling thread."""
    return {
        "bare call": work,
        "fluxus cooperative": fluxus.timeout(1.0, strategy="cooperative")(work),
        "fluxus signal": fluxus.timeout(1.0, strategy="signal")(work),
        "timeout_decorator": timeout_decorator.timeout(1)(work),
    }


def threads_section(counts, rounds, seconds):
    """Cost per call of each strategy from 1, 8, 64 threads, beside a TPE."""
    lines = []
    with ThreadPoolExecutor(max_workers=64) as executor:
        for threads in counts:
            contenders = {
                "bare call": work,
                "TPE submit().result()": lambda: executor.submit(work).result(1.0),
                "fluxus thread": fluxus.timeout(1.0)(work),
                "fluxus cooperative": fluxus.timeout(1.0, strategy="cooperative")(work),
            }
            medians, failed = compare_throughput(
                contenders, threads, rounds=rounds, seconds=seconds
            )
            if threads == 1:
                signal_fn = fluxus.timeout(1.0, strategy="signal")(work)
                rate = statistics.median(
                    1 / time_sync(signal_fn, 3_000) for _ in range(rounds)
                )
                medians["fluxus signal"], failed["fluxus signal"] = rate, 0
            lines += [
                "",
                *report_throughput(
                    f"sync strategies from {threads} thread(s), {rounds} rounds x "
                    f"{seconds}s, medians",
                    medians,
                    failed,
                    baseline="bare call",
                    reference="TPE submit().result()",
                ),
            ]
    return lines


def lateness_sync(strategy, deadline, samples):
    fn = fluxus.timeout(deadline, strategy=strategy)(time.sleep)
    late = []
    for _ in range(samples):
        start = time.monotonic()
        try:
            fn(deadline * 5)
        except fluxus.DeadlineExceeded:
            late.append(time.monotonic() - start - deadline)
    return late


def lateness_async(deadline, samples):
    fn = fluxus.timeout(deadline)(asyncio.sleep)

    async def run():
        late = []
        for _ in range(samples):
            start = time.monotonic()
            try:
                await fn(deadline * 5)
            except fluxus.DeadlineExceeded:
                late.append(time.monotonic() - start - deadline)
        return late

    return asyncio.run(run())


def lateness_line(name, late):
    late_ms = sorted(x * 1e3 for x in late)
    p99 = late_ms[min(len(late_ms) - 1, int(len(late_ms) * 0.99))]
    return (
        f"  {name:<26}{len(late_ms):>6}{statistics.median(late_ms):>10.3f}ms"
        f"{p99:>10.3f}ms{late_ms[-1]:>10.3f}ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--deadline", type=float, default=0.01)
    parser.add_argument("--threads", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    set_hooks([])  # the precision runs time out on purpose: keep logs out

    coro = build_async()
    medians = compare(
        {name: (lambda f=f: time_async(f, args.calls)) for name, f in coro.items()},
        args.rounds,
    )
    lines = report(
        f"async, {args.rounds} rounds x {args.calls} calls, medians",
        medians,
        baseline="bare call",
        reference="asyncio.timeout",
    )
    with ThreadPoolExecutor(max_workers=4) as executor:
        sync = build_handoffs(executor)
        medians = compare(
            {name: (lambda f=f: time_sync(f, args.calls)) for name, f in sync.items()},
            args.rounds,
        )
    lines += [
        "",
        *report(
            f"sync hand-offs, {args.rounds} rounds x {args.calls} calls, medians",
            medians,
            baseline="bare call",
            reference="TPE submit().result()",
        ),
    ]
    sync = build_in_thread()
    medians = compare(
        {name: (lambda f=f: time_sync(f, args.calls)) for name, f in sync.items()},
        args.rounds,
    )
    lines += [
        "",
        *report(
            f"sync in the calling thread, {args.rounds} rounds x {args.calls} "
            "calls, medians",
            medians,
            baseline="bare call",
            reference="timeout_decorator",
        ),
    ]
    lines += [
        "",
        (
            f"precision: control back after a {args.deadline * 1e3:.0f} ms "
            "deadline (lateness)"
        ),
        f"  {'contender':<26}{'n':>6}{'p50':>12}{'p99':>12}{'max':>12}",
        lateness_line(
            "fluxus thread",
            lateness_sync("thread", args.deadline, args.samples),
        ),
        lateness_line(
            "fluxus signal",
            lateness_sync("signal", args.deadline, args.samples),
        ),
        lateness_line("fluxus async", lateness_async(args.deadline, args.samples)),
    ]
    counts = [int(n) for n in args.threads.split(",") if n]
    lines += threads_section(counts, args.rounds, args.seconds)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
