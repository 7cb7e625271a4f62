"""What fallback, bulkhead and hedge cost, and what a hedge buys.

Run with ``python benchmarks/bench_fallback_bulkhead_hedge.py``.

1. Happy paths, interleaved rounds in one process, medians:
   ``@fluxus.fallback`` against a bare call (goal: within 0.1 us);
   ``@fluxus.bulkhead`` against a ``threading.BoundedSemaphore`` (sync) and
   an ``asyncio.Semaphore`` (async) acquired and released around the same
   call (goal: at most 1.5x).
2. Tail latency: a loopback HTTP server (its own process) answers 95% of
   requests after ~2 ms and the slowest 5% after 200 ms. The same requests
   run unhedged and through ``fluxus.hedge(0.01)``, interleaved in rounds;
   the table gives the latency percentiles and the extra calls the hedge
   made (goals: p99 at most 0.2x the unhedged p99, at most 10% extra
   calls).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import compare, report, time_async, time_sync

SLOW_SHARE, SLOW, FAST = 0.05, 0.200, 0.002


def work(x: int = 1) -> int:
    return x


async def awork(x: int = 1) -> int:
    return x


def _table(
    title: str,
    contenders: dict[str, Callable[[], float]],
    rounds: int,
    reference: str,
) -> list[str]:
    medians = compare(contenders, rounds)
    return report(title, medians, baseline="bare call", reference=reference)


def happy_paths(rounds: int, calls: int) -> list[str]:
    """Time the happy paths against their floors."""
    lines: list[str] = []
    fallback = fluxus.fallback(value=0)
    # dead_letter's happy path is the same one try around the call: the
    # floor of a fluxus wrapper, for comparison.
    letters = fluxus.dead_letter(fluxus.sinks.Memory())
    for mode, bare, timer in (("sync", work, time_sync), ("async", awork, time_async)):
        lines += _table(
            f"fallback, {mode}, {rounds} rounds x {calls} calls, medians",
            {
                "bare call": lambda f=bare, t=timer: t(f, calls),
                "fluxus.fallback": lambda f=fallback(bare), t=timer: t(f, calls),
                "fluxus.dead_letter": lambda f=letters(bare), t=timer: t(f, calls),
            },
            rounds,
            reference="fluxus.fallback",
        )
        lines.append("")

    semaphore = threading.BoundedSemaphore(8)

    def with_semaphore() -> int:
        with semaphore:
            return work()

    bulkhead = fluxus.bulkhead(8)
    lines += _table(
        f"bulkhead, sync, {rounds} rounds x {calls} calls, medians",
        {
            "bare call": lambda: time_sync(work, calls),
            "BoundedSemaphore": lambda: time_sync(with_semaphore, calls),
            "fluxus.bulkhead": lambda: time_sync(bulkhead(work), calls),
        },
        rounds,
        reference="BoundedSemaphore",
    )
    lines.append("")

    def async_contenders() -> dict[str, Callable[[], Awaitable[int]]]:
        # asyncio.Semaphore binds to the loop of its first wait: one per run.
        semaphore = asyncio.Semaphore(8)

        async def with_async_semaphore() -> int:
            async with semaphore:
                return await awork()

        return {
            "bare call": awork,
            "asyncio.Semaphore": with_async_semaphore,
            "fluxus.bulkhead": fluxus.bulkhead(8)(awork),
        }

    lines += _table(
        f"bulkhead, async, {rounds} rounds x {calls} calls, medians",
        {
            name: (lambda name=name: time_async(async_contenders()[name], calls))
            for name in ("bare call", "asyncio.Semaphore", "fluxus.bulkhead")
        },
        rounds,
        reference="asyncio.Semaphore",
    )
    return lines


# -- tail latency --------------------------------------------------------------


async def _serve(seed: int) -> None:
    rng = random.Random(seed)

    async def answer(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            slow = rng.random() < SLOW_SHARE
            hang_up = asyncio.ensure_future(reader.read(1))
            await asyncio.wait({hang_up}, timeout=SLOW if slow else FAST)
            if not hang_up.done():
                hang_up.cancel()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=1024)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def _get(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        await writer.drain()
        return await reader.read()
    finally:
        writer.close()


def _percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def tail_latency(requests: int, rounds: int, concurrency: int) -> list[str]:
    """Time the same load unhedged and hedged; return the latency table."""
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None  # noqa: S101 - piped above
    port = int(server.stdout.readline())
    made = {"calls": 0}

    async def get() -> bytes:
        made["calls"] += 1
        return await _get(port)

    hedged = fluxus.hedge(0.01)(get)
    contenders: dict[str, Callable[[], Awaitable[bytes]]] = {
        "unhedged": get,
        "hedge(0.01)": hedged,
    }
    latencies: dict[str, list[float]] = {name: [] for name in contenders}
    calls: dict[str, int] = dict.fromkeys(contenders, 0)

    async def run(name: str) -> None:
        fn = contenders[name]
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                started = time.perf_counter()
                await fn()
                latencies[name].append(time.perf_counter() - started)

        before = made["calls"]
        await asyncio.gather(*(one() for _ in range(requests)))
        calls[name] += made["calls"] - before

    try:
        for _ in range(rounds):
            names = list(contenders)
            random.shuffle(names)
            for name in names:
                asyncio.run(run(name))
    finally:
        server.communicate("", timeout=30)

    head = f"  {'':<14}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}{'calls/request':>15}"
    lines = [
        f"hedge, {rounds} rounds x {requests} requests, {concurrency} at once; "
        f"server: {SLOW_SHARE:.0%} of answers after {SLOW * 1000:.0f} ms, "
        f"the rest after ~{FAST * 1000:.0f} ms",
        head,
    ]
    for name, samples in latencies.items():
        cells = "".join(
            f"{_percentile(samples, q) * 1000:>7.1f}ms"
            for q in (0.5, 0.9, 0.99, 0.999, 1.0)
        )
        lines.append(f"  {name:<14}{cells}{calls[name] / (requests * rounds):>15.3f}")
    p99 = {name: _percentile(s, 0.99) for name, s in latencies.items()}
    lines.append(
        f"  p99 hedged / unhedged: {p99['hedge(0.01)'] / p99['unhedged']:.3f}  "
        f"extra calls: {calls['hedge(0.01)'] / calls['unhedged'] - 1:.1%}  "
        f"hedges won: {hedged_stats(hedged)}"
    )
    return lines


def hedged_stats(fn: object) -> str:
    (policy,) = fluxus.layers(fn)
    stats = policy.stats
    return f"{stats.hedges_won} of {stats.hedges} started"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--hedge-rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(seed=7))
        return
    fluxus.instrumentation.set_hooks([])  # the hedges' events would flood stdout
    lines = happy_paths(args.rounds, args.calls)
    lines.append("")
    lines += tail_latency(args.requests, args.hedge_rounds, args.concurrency)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
