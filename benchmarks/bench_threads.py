"""The in-memory policies called from many threads at once, beside their peers.

Run with ``python benchmarks/bench_threads.py [--threads 1,8,64]``.

Each policy admits every call (limits far above the demand), so what is
measured is what a call costs when nothing fails, with every thread calling
ONE shared policy: calls per second (medians of interleaved rounds, in one
process) and the voluntary thread switches a call took. A switch a call
means the callers queue on a lock: a ``threading.Lock`` is handed to a
waiter that sleeps without the GIL, so once a holder loses the GIL inside
its section every caller waits for a switch (a convoy). fluxus's memory
stores take a mutex only a thread holding the GIL takes (``fluxus._mutex``).

Peers: limits' ``MovingWindowRateLimiter.hit`` and ``FixedWindowRateLimiter.hit``
on its ``MemoryStorage`` (beside fluxus's token bucket and fixed window),
and a ``threading.BoundedSemaphore`` around the call (beside the bulkhead).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import limits
import limits.storage
import limits.strategies

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import compare_throughput, throughput

fluxus.instrumentation.set_hooks([])

HUGE = 10**9  # a limit no benchmark reaches


def work(x=1):
    return x


def limits_hit(strategy) -> Callable[[], object]:
    limiter = strategy(limits.storage.MemoryStorage())
    item = limits.parse(f"{HUGE}/second")

    def limited():
        if not limiter.hit(item, "bench"):
            raise RuntimeError("refused")
        return work()

    return limited


def semaphore(size: int) -> Callable[[], object]:
    gate = threading.BoundedSemaphore(size)

    def guarded():
        with gate:
            return work()

    return guarded


def contenders() -> dict[str, Callable[[], object]]:
    return {
        "bare call": work,
        "fluxus token bucket": fluxus.rate_limit(HUGE, burst=HUGE)(work),
        "fluxus fixed window": fluxus.rate_limit(
            f"{HUGE}/second", strategy="fixed-window"
        )(work),
        "limits moving window": limits_hit(limits.strategies.MovingWindowRateLimiter),
        "limits fixed window": limits_hit(limits.strategies.FixedWindowRateLimiter),
        "fluxus bulkhead": fluxus.bulkhead(10_000)(work),
        "BoundedSemaphore": semaphore(10_000),
        "fluxus breaker": fluxus.circuit_breaker()(work),
    }


def switches_per_call(fn: Callable[[], object], threads: int, seconds: float) -> float:
    """Voluntary switches of the whole process per call, over one throughput run."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
    started = time.perf_counter()
    rate, _ = throughput(fn, threads, seconds)
    calls = rate * (time.perf_counter() - started)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw - before) / calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=0.3)
    parser.add_argument("--threads", default="1,8,64")
    args = parser.parse_args()
    for threads in [int(n) for n in args.threads.split(",") if n]:
        policies = contenders()
        medians, failed = compare_throughput(
            policies, threads, rounds=args.rounds, seconds=args.seconds
        )
        print(f"\n{threads} thread(s), {args.rounds} rounds x {args.seconds}s, medians")
        print(
            f"  {'contender':<24}{'calls/s':>12}{'us/call':>10}"
            f"{'switches/call':>15}{'failed':>8}"
        )
        for name, rate in medians.items():
            switches = statistics.median(
                switches_per_call(policies[name], threads, args.seconds)
                for _ in range(3)
            )
            print(
                f"  {name:<24}{rate:>12,.0f}{1e6 / rate:>10.2f}"
                f"{switches:>15.3f}{failed[name]:>8}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
