"""The async happy path of every policy and of the stack, under asyncio and trio.

Each contender awaits a trivial ``async def`` through one policy (or the
whole stack) many times; rounds are interleaved and shuffled, medians
reported, per library. The asyncio figures are the ones that must not move
when trio support changes; the trio figures are shown beside them.

``--compare-with PATH`` also runs the asyncio half from another checkout
(e.g. ``git worktree add ../base main``) in alternating child processes,
so before and after are measured side by side on the same machine.

    python benchmarks/bench_trio.py [--rounds 15] [--calls 3000]
    python benchmarks/bench_trio.py --compare-with ../base
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fluxus
from fluxus.backoff import constant

HERE = Path(__file__).resolve()


async def awork(x: int = 1) -> int:
    return x


def contenders() -> dict[str, Callable[[], Awaitable[object]]]:
    """Return each policy wrapping :func:`awork`, by name."""
    name = f"bench-trio-{uuid.uuid4().hex}"
    sink = fluxus.sinks.Memory()
    return {
        "bare": awork,
        "timeout": fluxus.timeout(10)(awork),
        "retry": fluxus.retry(3, backoff=constant(0.001))(awork),
        "rate_limit": fluxus.rate_limit(1e9, burst=10**9, name=name)(awork),
        "circuit_breaker": fluxus.circuit_breaker(5, 60, name=name)(awork),
        "dead_letter": fluxus.dead_letter(sink)(awork),
        "stack": fluxus.stack(
            fluxus.dead_letter(sink),
            fluxus.rate_limit(1e9, burst=10**9, name=name + "-stack"),
            fluxus.circuit_breaker(5, 60, name=name + "-stack"),
            fluxus.timeout(10),
            fluxus.retry(3, backoff=constant(0.001)),
        )(awork),
    }


def _timed(calls: int, fn: Callable[[], Awaitable[object]]) -> Callable[[], Any]:
    async def loop() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await fn()
        return (time.perf_counter() - start) / calls

    return loop


def measure(library: str, rounds: int, calls: int) -> dict[str, float]:
    """Return the median seconds per call of each contender under *library*."""
    funcs = contenders()
    samples: dict[str, list[float]] = {name: [] for name in funcs}

    async def all_rounds() -> None:
        names = list(funcs)
        for _ in range(rounds):
            random.shuffle(names)
            for name in names:
                samples[name].append(await _timed(calls, funcs[name])())

    if library == "trio":
        import trio  # noqa: PLC0415 - optional

        trio.run(all_rounds)
    else:
        asyncio.run(all_rounds())
    return {name: statistics.median(values) for name, values in samples.items()}


def _child(
    tree: str, rounds: int, calls: int, *, with_trio: bool = False
) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": tree}
    if with_trio:
        env["FLUXUS_BENCH_IMPORT_TRIO"] = "1"
    out = subprocess.run(  # noqa: S603 - our own script
        [
            sys.executable,
            str(HERE),
            "--child",
            "--rounds",
            str(rounds),
            "--calls",
            str(calls),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=tree,
    ).stdout
    return json.loads(out.splitlines()[-1])


def compare(base: str, rounds: int, calls: int, repeats: int) -> list[str]:
    """Alternate child processes of *base* and of this tree; median of medians."""
    here = str(HERE.parent.parent)
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": [], "+trio": []}
    children = [
        ("before", base, False),
        ("after", here, False),
        ("+trio", here, True),
    ]
    for _ in range(repeats):
        random.shuffle(children)
        for label, tree, with_trio in children:
            runs[label].append(_child(tree, rounds, calls, with_trio=with_trio))
    lines = [
        "asyncio happy path: before (--compare-with), after (this tree), and",
        "after with trio imported in the process (+trio); medians of child runs",
        (
            f"  {'contender':<18}{'before':>12}{'after':>12}{'+trio':>12}"
            f"{'after/before':>14}{'+trio/before':>14}"
        ),
    ]
    for name in runs["after"][0]:
        before, after, with_trio = (
            statistics.median(run[name] for run in runs[label])
            for label in ("before", "after", "+trio")
        )
        lines.append(
            f"  {name:<18}{before * 1e6:>10.3f}us{after * 1e6:>10.3f}us"
            f"{with_trio * 1e6:>10.3f}us{after / before:>14.3f}"
            f"{with_trio / before:>14.3f}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--compare-with", default=None)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    if args.child:
        if os.environ.get("FLUXUS_BENCH_IMPORT_TRIO"):
            import trio  # noqa: F401, PLC0415 - the asyncio path with trio imported
        print(json.dumps(measure("asyncio", args.rounds, args.calls)))
        return 0
    libraries = {
        library: measure(library, args.rounds, args.calls)
        for library in ("asyncio", "trio")
    }
    lines = [
        "async happy path per call, same process",
        f"  {'contender':<18}{'asyncio':>12}{'trio':>12}",
    ]
    lines.extend(
        f"  {name:<18}{seconds * 1e6:>10.3f}us{libraries['trio'][name] * 1e6:>10.3f}us"
        for name, seconds in libraries["asyncio"].items()
    )
    if args.compare_with:
        lines += compare(args.compare_with, args.rounds, args.calls, args.repeats)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
