"""What fallback, bulkhead and hedge cost, and what a hedge buys.

Run with ``python benchmarks/bench_fallback_bulkhead_hedge.py``.

1. Happy paths, interleaved rounds in one process, medians:
   ``@fluxus.fallback`` against a bare call (goal: within 0.1 us);
   ``@fluxus.bulkhead`` against a ``threading.BoundedSemaphore`` (sync) and
   an ``asyncio.Semaphore`` (async) acquired and released around the same
   call (goal: at most 1.5x).
2. Tail latency: a loopback HTTP server answers 95% of
   requests after ~2 ms and the slowest 5% after 200 ms. The same requests
   run unhedged and through ``fluxus.hedge(0.01)``, interleaved in rounds
   (the server shares the client's event loop; see :func:`tail_latency`);
   the table gives the latency percentiles and the extra calls the hedge
   made (goals: p99 at most 0.2x the unhedged p99, at most 10% extra
   calls). It also gives the share of unhedged calls slower than the
   delay, as the client saw them: the extra calls even a perfect timer
   would make at the machine's load. When the loop is busy, fast answers
   take longer than the delay and are hedged, by design; extra calls well
   above that share would point at the hedge's timer.
"""

from __future__ import annotations

import argparse
import asyncio
import random
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


def _floor(func: Callable[..., object]) -> Callable[..., object]:
    """Return the least a Python wrapper can be: one try around the call."""

    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except Exception:
            return None

    return wrapper


def _afloor(func: Callable[..., Awaitable[object]]) -> Callable[..., Awaitable[object]]:
    """Return the least an async Python wrapper can be."""

    async def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return await func(*args, **kwargs)
        except Exception:
            return None

    return wrapper


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
    modes = (
        ("sync", work, time_sync, _floor(work)),
        ("async", awork, time_async, _afloor(awork)),
    )
    for mode, bare, timer, floor in modes:
        answered, kept = fallback(bare), letters(bare)
        lines += _table(
            f"fallback, {mode}, {rounds} rounds x {calls} calls, medians",
            {
                "bare call": lambda f=bare, t=timer: t(f, calls),
                "try wrapper": lambda f=floor, t=timer: t(f, calls),
                "fluxus.fallback": lambda f=answered, t=timer: t(f, calls),
                "fluxus.dead_letter": lambda f=kept, t=timer: t(f, calls),
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


async def _server(seed: int) -> asyncio.Server:
    """Start the straggling loopback server in the running loop."""
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

    return await asyncio.start_server(answer, "127.0.0.1", 0, backlog=1024)


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
    """Time the same load unhedged and hedged; return the latency table.

    The server runs in the client's event loop, on real loopback sockets:
    on a loaded machine a second process would add its own scheduling
    delays to every answer, and they would dwarf the 2 ms being measured.
    """
    made = {"calls": 0}
    capped = "+budget(0.1)"
    latencies: dict[str, list[float]] = {"unhedged": [], "hedge(0.01)": [], capped: []}
    calls: dict[str, int] = dict.fromkeys(latencies, 0)
    policy = fluxus.hedge(0.01)
    # The same hedge, its extra calls capped at 10% of the calls.
    budgeted = fluxus.hedge(0.01, budget=fluxus.RetryBudget(0.1, min_per_second=0))

    async def main() -> None:
        server = await _server(seed=7)
        port = server.sockets[0].getsockname()[1]

        async def get() -> bytes:
            made["calls"] += 1
            return await _get(port)

        contenders: dict[str, Callable[[], Awaitable[bytes]]] = {
            "unhedged": get,
            "hedge(0.01)": policy(get),
            capped: budgeted(get),
        }

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

        async with server:
            for _ in range(rounds):
                names = list(contenders)
                random.shuffle(names)
                for name in names:
                    await run(name)

    asyncio.run(main())

    heads = "".join(f"{h:>9}" for h in ("p50", "p90", "p99", "p99.9", "max"))
    lines = [
        (
            f"hedge, {rounds} rounds x {requests} requests, {concurrency} at once; "
            f"server: {SLOW_SHARE:.0%} of answers after {SLOW * 1000:.0f} ms, "
            f"the rest after ~{FAST * 1000:.0f} ms"
        ),
        f"  {'':<14}{heads}{'calls/request':>15}",
    ]
    for name, samples in latencies.items():
        cells = "".join(
            f"{_percentile(samples, q) * 1000:>7.1f}ms"
            for q in (0.5, 0.9, 0.99, 0.999, 1.0)
        )
        lines.append(f"  {name:<14}{cells}{calls[name] / (requests * rounds):>15.3f}")
    p99 = {name: _percentile(s, 0.99) for name, s in latencies.items()}
    for name, hedged in (("hedge(0.01)", policy), (capped, budgeted)):
        stats = hedged.stats
        lines.append(
            f"  {name}: p99 / unhedged p99: {p99[name] / p99['unhedged']:.3f}  "
            f"extra calls: {calls[name] / calls['unhedged'] - 1:.1%}  "
            f"hedges won: {stats.hedges_won} of {stats.hedges} started"
        )
    late = sum(s > policy.delay for s in latencies["unhedged"])
    lines.append(
        "  unhedged calls slower than the delay: "
        f"{late / len(latencies['unhedged']):.1%} (server: {SLOW_SHARE:.0%})"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--hedge-rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    fluxus.instrumentation.set_hooks([])  # the hedges' events would flood stdout
    lines = happy_paths(args.rounds, args.calls)
    lines.append("")
    lines += tail_latency(args.requests, args.hedge_rounds, args.concurrency)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
