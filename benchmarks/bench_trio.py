"""The async happy path of every policy and of the stack, under asyncio and trio.

Each contender awaits a trivial ``async def`` through one policy (or the
whole stack) many times; rounds are interleaved and shuffled, medians
reported, per library. The asyncio figures are the ones that must not move
when trio support changes; the trio figures are shown beside them.

``--compare-with PATH`` also times, in this process and interleaved, the
async timeout and the stack built with the timeout drivers of another
checkout (e.g. ``git worktree add ../base main``), and the hedge built
with its ``Hedge``: the async happy paths that trio support touches. It
does so before trio is imported and again after (the asyncio path of a
program that also uses trio).

    python benchmarks/bench_trio.py [--rounds 15] [--calls 3000]
    python benchmarks/bench_trio.py --compare-with ../base
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import random
import statistics
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import fluxus
from fluxus._timeout import _policy
from fluxus.backoff import constant


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
        "fallback": fluxus.fallback(value=0)(awork),
        "bulkhead": fluxus.bulkhead(8)(awork),
        "hedge": fluxus.hedge(10.0)(awork),
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


def _load_before(
    base: str, module: str = "_timeout/_strategies", name: str = "_timeout._strategies"
) -> Any:
    """Load *base*'s *module* beside this tree's (default: the timeout drivers)."""
    path = Path(base) / "fluxus" / f"{module}.py"
    spec = importlib.util.spec_from_file_location(f"fluxus.{name}_before", path)
    assert spec is not None  # noqa: S101
    assert spec.loader is not None  # noqa: S101
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def before_after(base: str) -> dict[str, Callable[[], Awaitable[object]]]:
    """Return the timeout and the stack built with *base*'s drivers and ours.

    The async happy path of the other policies has no line changed by trio
    support, so only these two are compared; the drivers of *base* run in
    this process, interleaved with ours.
    """
    before = _load_before(base)
    ours = _policy._strategies  # noqa: SLF001
    built: dict[str, Callable[[], Awaitable[object]]] = {}
    for label, module in (("before", before), ("after", ours)):
        _policy._strategies = module  # noqa: SLF001
        try:
            funcs = contenders()
        finally:
            _policy._strategies = ours  # noqa: SLF001
        built[f"timeout {label}"] = funcs["timeout"]
        built[f"stack {label}"] = funcs["stack"]
    hedge_before = _load_before(base, "_hedge", "_hedge")
    built["hedge before"] = hedge_before.Hedge(10.0)(awork)
    built["hedge after"] = fluxus.hedge(10.0)(awork)
    return built


def compare(base: str, rounds: int, calls: int) -> list[str]:
    """Time *base*'s and our asyncio happy path in this process, side by side."""
    funcs = before_after(base)
    lines = [
        "asyncio happy path, before (--compare-with) and after, one process",
        f"  {'contender':<18}{'before':>12}{'after':>12}{'after/before':>14}",
    ]
    for label, phase in (("", False), (" +trio", True)):
        if phase:
            import trio  # noqa: F401, PLC0415 - the asyncio path with trio imported
        samples: dict[str, list[float]] = {name: [] for name in funcs}

        async def all_rounds(samples: dict[str, list[float]] = samples) -> None:
            names = list(funcs)
            for _ in range(rounds):
                random.shuffle(names)
                for name in names:
                    samples[name].append(await _timed(calls, funcs[name])())

        asyncio.run(all_rounds())
        for kind in ("timeout", "stack", "hedge"):
            before = statistics.median(samples[f"{kind} before"])
            after = statistics.median(samples[f"{kind} after"])
            lines.append(
                f"  {kind + label:<18}{before * 1e6:>10.3f}us{after * 1e6:>10.3f}us"
                f"{after / before:>14.3f}"
            )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=3_000)
    parser.add_argument("--compare-with", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    before: list[str] = []
    if args.compare_with:
        before = compare(args.compare_with, args.rounds, args.calls)
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
    lines += before
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
