"""A tiny benchmark harness: interleaved rounds in one process, medians.

Every contender runs once per round, in a shuffled order, so drift in the
machine's speed spreads evenly over all of them.
"""

from __future__ import annotations

import asyncio
import random
import statistics
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
