"""A tiny benchmark harness: interleaved rounds in one process, medians.

Every contender runs once per round, in a shuffled order, so drift in the
machine's speed spreads evenly over all of them.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable


def time_sync(fn: Callable[[], object], calls: int) -> float:
    """Return seconds per call of *fn*, over *calls* calls."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls


def time_async(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Return seconds per awaited call of *fn*, over *calls* calls."""

    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - start) / calls

    return asyncio.run(loop())


def compare(
    contenders: dict[str, Callable[[], float]], rounds: int
) -> dict[str, float]:
    """Run each timing callable once per round; return the median of each."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            samples[name].append(contenders[name]())
    return {name: statistics.median(samples[name]) for name in contenders}


def report(
    title: str, medians: dict[str, float], *, baseline: str, reference: str
) -> list[str]:
    """Format a table: per-call time, overhead over *baseline*, ratios."""
    base = medians[baseline]
    ref_overhead = medians[reference] - base
    name_width = max(len(name) for name in medians) + 2
    ratio_heads = (f"time / {reference}", f"overhead / {reference}")
    widths = [len(head) + 2 for head in ratio_heads]
    lines = [
        title,
        (
            f"  {'contender':<{name_width}}{'per call':>12}{'overhead':>12}"
            f"{ratio_heads[0]:>{widths[0]}}{ratio_heads[1]:>{widths[1]}}"
        ),
    ]
    for name, seconds in medians.items():
        overhead = seconds - base
        lines.append(
            f"  {name:<{name_width}}{seconds * 1e6:>10.3f}us{overhead * 1e6:>10.3f}us"
            f"{seconds / medians[reference]:>{widths[0]}.3f}"
            f"{overhead / ref_overhead:>{widths[1]}.3f}"
        )
    return lines


def sync_and_async(
    build: Callable[..., dict[str, Callable[..., object]]],
    work: Callable[[], object],
    awork: Callable[[], Awaitable[object]],
    *,
    rounds: int,
    calls: int,
    reference: str,
) -> list[str]:
    """Time *build(work)* and *build(awork)*; return both report tables."""
    lines: list[str] = []
    for mode, fn, timer in (("sync", work, time_sync), ("async", awork, time_async)):
        contenders = build(fn)
        medians = compare(
            {
                name: (lambda f=f, timer=timer: timer(f, calls))
                for name, f in contenders.items()
            },
            rounds,
        )
        if lines:
            lines.append("")
        lines += report(
            f"{mode}, {rounds} rounds x {calls} calls, medians",
            medians,
            baseline="bare call",
            reference=reference,
        )
    return lines


def throughput(
    fn: Callable[[], object], threads: int, seconds: float
) -> tuple[float, int]:
    """Call *fn* from *threads* threads for *seconds*; return calls/s and failures.

    Every thread starts at once (a barrier) and stops at the same signal;
    a call that raises counts as a failure (and as a call).
    """
    stop = threading.Event()
    gate = threading.Barrier(threads + 1)
    counts = [0] * threads
    failures = [0] * threads

    def run(index: int) -> None:
        gate.wait()
        calls = failed = 0
        while not stop.is_set():
            try:
                fn()
            except Exception:
                failed += 1
            calls += 1
        counts[index], failures[index] = calls, failed

    pool = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for thread in pool:
        thread.join()
    return sum(counts) / (time.perf_counter() - start), sum(failures)


def compare_throughput(
    contenders: dict[str, Callable[[], object]],
    threads: int,
    *,
    rounds: int,
    seconds: float,
) -> tuple[dict[str, float], dict[str, int]]:
    """Interleave :func:`throughput` rounds; return median calls/s and failures."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    failed = dict.fromkeys(contenders, 0)
    names = list(contenders)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            rate, failures = throughput(contenders[name], threads, seconds)
            samples[name].append(rate)
            failed[name] += failures
    return {n: statistics.median(samples[n]) for n in contenders}, failed


def report_throughput(
    title: str,
    medians: dict[str, float],
    failed: dict[str, int],
    *,
    baseline: str,
    reference: str,
) -> list[str]:
    """Format a table: calls/s, per-call time, ratios to *baseline* and *reference*."""
    width = max(len(name) for name in medians) + 2
    heads = (f"x {baseline}", f"x {reference}")
    wide = [len(head) + 2 for head in heads]
    lines = [
        title,
        (
            f"  {'contender':<{width}}{'calls/s':>12}{'us/call':>10}"
            f"{heads[0]:>{wide[0]}}{heads[1]:>{wide[1]}}{'failed':>8}"
        ),
    ]
    for name, rate in medians.items():
        lines.append(
            f"  {name:<{width}}{rate:>12.0f}{1e6 / rate:>10.2f}"
            f"{rate / medians[baseline]:>{wide[0]}.3f}"
            f"{rate / medians[reference]:>{wide[1]}.3f}{failed[name]:>8}"
        )
    return lines
