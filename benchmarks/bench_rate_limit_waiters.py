"""Many async waiters on one token bucket: time over the ideal, order, memory.

Run with ``python benchmarks/bench_rate_limit_waiters.py`` (``--waiters``,
``--seconds``, ``--rounds``; ``--before PATH`` adds the fluxus of another
checkout, say a ``git worktree`` of an older commit, as a contender).

*count* tasks are started at once and each awaits one permit of a bucket
of burst 1 refilled so that the last slot is due *seconds* after the start:
the ideal total time is ``(count - 1) / rate``. Every run is a fresh
process (no heap left over from the previous one); the contenders run in
turn, round after round, in a shuffled order. Reported per contender, as
medians with the spread (min-max) over the rounds:

- total time / ideal, and the CPU seconds the process used (on a loaded
  machine the wall clock also counts the time other processes had the CPU);
- the share of waiters admitted out of arrival order, and the most places
  one was late;
- bytes per waiter (tracemalloc, tasks included) once all have queued, in a
  run of its own (tracing slows everything down).

The reference ``asyncio`` is the least any waiting limiter can cost: the same
token-bucket arithmetic inline, each waiter awaiting a bare future that one
timer per bucket resolves in order.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()


# -- one run, in a child process ----------------------------------------------


def _fluxus_waiter(rate):
    import uuid  # noqa: PLC0415

    import fluxus  # noqa: PLC0415

    fluxus.instrumentation.set_hooks([])
    limiter = fluxus.rate_limit(rate, burst=1, timeout=None, name=uuid.uuid4().hex)
    return limiter.acquire_async


def _asyncio_waiter(rate):
    import asyncio  # noqa: PLC0415

    interval = 1 / rate
    queue = collections.deque()
    state = {"tat": 0.0, "timer": None}

    def ring():
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            queue.popleft()[1].set_result(None)
        state["timer"] = (
            loop.call_at(loop.time() + queue[0][0] - now, ring) if queue else None
        )

    async def acquire():
        now = time.monotonic()
        due = max(state["tat"], now)
        state["tat"] = due + interval
        if due > now:
            loop = asyncio.get_running_loop()
            future = loop.create_future()
            queue.append((due, future))
            if state["timer"] is None:
                state["timer"] = loop.call_at(loop.time() + due - now, ring)
            await future

    return acquire


def child(contender, count, seconds, memory):
    import asyncio  # noqa: PLC0415
    import tracemalloc  # noqa: PLC0415

    rate = count / seconds
    make = _asyncio_waiter if contender == "asyncio" else _fluxus_waiter
    acquire = make(rate)
    admitted = []

    async def waiter(i):
        await acquire()
        admitted.append(i)

    async def main():
        if memory:
            tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0] if memory else 0
        cpu, started = time.process_time(), time.perf_counter()
        tasks = [asyncio.ensure_future(waiter(i)) for i in range(count)]
        await asyncio.sleep(0)  # every waiter has taken its slot
        if memory:
            held = tracemalloc.get_traced_memory()[0] - before
            print(json.dumps({"bytes": held / count}), flush=True)
            os._exit(0)  # no need to wait, nor to cancel them all
        queued = time.perf_counter() - started
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
        return elapsed, queued, time.process_time() - cpu

    elapsed, queued, cpu = asyncio.run(main())
    late = [place - i for place, i in enumerate(admitted) if i < place]
    ideal = (count - 1) / rate
    print(
        json.dumps(
            {
                "ratio": elapsed / ideal,
                "cpu": cpu,
                "queued": queued,
                "out_of_order": sum(i != place for place, i in enumerate(admitted))
                / count,
                "late": max(late, default=0),
            }
        )
    )


# -- the rounds ---------------------------------------------------------------


def run(contender, tree, count, seconds, *, memory=False):
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
    args = ["--child", contender, str(count), str(seconds)] + (["--memory"] * memory)
    out = subprocess.run(  # noqa: S603 - this very script
        [sys.executable, str(HERE), *args],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=tree or None,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def spread(values, fmt):
    return (
        f"{fmt.format(statistics.median(values))} "
        f"({fmt.format(min(values))}-{fmt.format(max(values))})"
    )


def measure(contenders, count, seconds, rounds):
    samples = {name: [] for name in contenders}
    names = list(contenders)
    for _ in range(rounds):
        random.shuffle(names)
        for name in names:
            kind, tree = contenders[name]
            samples[name].append(run(kind, tree, count, seconds))
    lines = [
        f"{count:,} waiters, ideal {seconds:g} s, {rounds} rounds: median (min-max)",
        (
            f"  {'contender':<18}{'total / ideal':>22}{'CPU s':>22}"
            f"{'out of order':>24}{'places late':>18}{'B / waiter':>12}"
        ),
    ]
    for name, runs in samples.items():
        kind, tree = contenders[name]
        memory = run(kind, tree, count, seconds, memory=True)["bytes"]
        lines.append(
            f"  {name:<18}"
            f"{spread([r['ratio'] for r in runs], '{:.2f}x'):>22}"
            f"{spread([r['cpu'] for r in runs], '{:.2f}'):>22}"
            f"{spread([r['out_of_order'] * 100 for r in runs], '{:.2f}%'):>24}"
            f"{spread([r['late'] for r in runs], '{:,}'):>18}"
            f"{memory:>12,.0f}"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--waiters", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument(
        "--seconds",
        type=float,
        nargs="*",
        default=[2.0, 5.0],
        help="the ideal time for each --waiters count (the last one repeats)",
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--before", help="another checkout's root, run as 'before'")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        contender, count, seconds = args.child
        child(contender, int(count), float(seconds), args.memory)
        return 0
    contenders = {"asyncio": ("asyncio", None), "fluxus": ("fluxus", None)}
    if args.before:
        contenders["fluxus before"] = ("fluxus", str(Path(args.before).resolve()))
    lines = []
    for i, count in enumerate(args.waiters):
        seconds = args.seconds[min(i, len(args.seconds) - 1)]
        lines += [*measure(contenders, count, seconds, args.rounds), ""]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
