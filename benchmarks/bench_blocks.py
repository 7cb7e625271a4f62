"""Block forms of the gates against their decorated calls, no observer installed.

Run with ``python benchmarks/bench_blocks.py``. For the circuit breaker, the
rate limiter and the bulkhead, in memory: a bare call, the decorated call
and the same work as a block (``with policy:``, ``async with policy:``), in
this one process with interleaved rounds. A block looks for observers with
one check, as a decorated call does; what it costs over the decorated call
is the name of the function it is written in (read from its frame, for
events) and the per-task record of its open blocks.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fluxus

sys.path.insert(0, str(Path(__file__).parent))
from _harness import sync_and_async


def _gates() -> dict[str, Callable[[], Any]]:
    return {
        "circuit_breaker": lambda: fluxus.circuit_breaker(name="bench-breaker"),
        "rate_limit": lambda: fluxus.rate_limit(1e12, name="bench-limiter"),
        "bulkhead": lambda: fluxus.bulkhead(4, name="bench-bulkhead"),
    }


def _work() -> int:
    return 1


async def _awork() -> int:
    return 1


def _build(make: Callable[[], Any]) -> Callable[..., dict[str, Callable[..., object]]]:
    def build(fn: Callable[..., object]) -> dict[str, Callable[..., object]]:
        policy = make()
        if asyncio.iscoroutinefunction(fn):

            async def block() -> object:
                async with policy:
                    return await fn()

        else:

            def block() -> object:  # type: ignore[misc] # one name, two modes
                with policy:
                    return fn()

        return {"bare call": fn, "decorated": policy(fn), "block": block}

    return build


def main() -> int:
    """Print one table per gate and mode."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    fluxus.instrumentation.set_hooks([])
    lines: list[str] = []
    for gate, make in _gates().items():
        if lines:
            lines.append("")
        lines.append(f"== {gate}")
        lines += sync_and_async(
            _build(make),
            _work,
            _awork,
            rounds=args.rounds,
            calls=args.calls,
            reference="decorated",
        )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
