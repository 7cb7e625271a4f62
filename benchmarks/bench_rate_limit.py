"""fluxus.rate_limit against limits: happy-path cost, accuracy, memory.

Run with ``python benchmarks/bench_rate_limit.py`` (add ``--redis URL`` for
the multi-process accuracy run, ``--long`` for 10-second accuracy runs).

1. Happy path: every contender admits every call (the limits are far above
   the demand), so what is measured is what admission costs. The reference
   is limits' own ``MovingWindowRateLimiter.hit`` on its memory storage.
2. Accuracy: demand at twice the limit for a few seconds (10 with
   ``--long``), calls failing fast; admitted calls are compared with what the
   token bucket allows (``burst + rate x t``) over the run and in every
   window. Through Redis, four processes share one limit.
3. Memory: one million calls in a fresh process per contender; per-call cost
   of the first and the last 100,000 calls and the peak RSS.

Many async waiters on one bucket: ``bench_rate_limit_waiters.py``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import compare, report, time_async, time_sync

fluxus.instrumentation.set_hooks([])

HUGE = 10**9  # a limit no benchmark reaches


def work(x=1):
    return x


async def awork(x=1):
    return x


def limits_hit(strategy, item, fn, *, keyed=False):
    storage = limits.storage.MemoryStorage()
    limiter = strategy(storage)

    def limited(*args):
        if not limiter.hit(item, str(args[0]) if keyed else "bench"):
            raise RuntimeError
        return fn(*args)

    return limited


def limits_hit_async(strategy, item, fn):
    storage = limits.aio.storage.MemoryStorage()
    limiter = strategy(storage)

    async def limited(*args):
        if not await limiter.hit(item, "bench"):
            raise RuntimeError
        return await fn(*args)

    return limited


def build(fn, *, is_async):
    """Return a factory per contender: each round times a fresh limiter.

    Fresh limiters keep the rounds alike: limits' moving window slows down as
    its entries pile up (see the memory section), so every round starts it,
    like every other contender, empty.
    """
    per_second = limits.RateLimitItemPerSecond(HUGE)
    hit = limits_hit_async if is_async else limits_hit
    strategies = limits.aio.strategies if is_async else limits.strategies
    return {
        "bare call": lambda: fn,
        "fluxus numeric (GCRA)": lambda: fluxus.rate_limit(HUGE, name=uuid.uuid4().hex)(
            fn
        ),
        "fluxus string (FW)": lambda: fluxus.rate_limit(
            f"{HUGE}/second", name=uuid.uuid4().hex
        )(fn),
        "fluxus string (SWC)": lambda: fluxus.rate_limit(
            f"{HUGE}/second", name=uuid.uuid4().hex, strategy="sliding-window-counter"
        )(fn),
        "fluxus string (MW)": lambda: fluxus.rate_limit(
            f"{HUGE}/second", name=uuid.uuid4().hex, strategy="moving-window"
        )(fn),
        "limits moving-window": lambda: hit(
            strategies.MovingWindowRateLimiter, per_second, fn
        ),
        "limits sliding-window": lambda: hit(
            strategies.SlidingWindowCounterRateLimiter, per_second, fn
        ),
        "limits fixed-window": lambda: hit(
            strategies.FixedWindowRateLimiter, per_second, fn
        ),
    }


def happy_path(rounds, calls):
    lines = []
    for is_async, fn, timer in ((False, work, time_sync), (True, awork, time_async)):
        contenders = build(fn, is_async=is_async)
        medians = compare(
            {
                n: (lambda make=make, timer=timer: timer(make(), calls))
                for n, make in contenders.items()
            },
            rounds,
        )
        kind = "async" if is_async else "sync"
        lines += [
            *report(
                f"happy path, {kind}, {rounds} rounds x {calls} calls, medians "
                "(a fresh limiter per round)",
                medians,
                baseline="bare call",
                reference="limits moving-window",
            ),
            "",
        ]
    return lines


def happy_path_redis(url, rounds, calls):
    """fluxus's string rates on Redis against limits' same strategy, same server.

    fluxus bounds every Redis I/O with a socket timeout (0.5 s), so that a
    Redis that hangs fails the call instead of hanging it; a socket with a
    timeout costs Python a ``poll()`` per read. limits runs both ways: with
    its defaults (no timeout) and with fluxus's timeouts.
    """
    per_second = limits.RateLimitItemPerSecond(HUGE)
    strategies = {
        "fixed-window": limits.strategies.FixedWindowRateLimiter,
        "sliding-window-counter": limits.strategies.SlidingWindowCounterRateLimiter,
        "moving-window": limits.strategies.MovingWindowRateLimiter,
    }
    timeouts = {"socket_timeout": 0.5, "socket_connect_timeout": 2.0}
    contenders = {}
    for strategy, limiter_class in strategies.items():
        for label, options in (("", {}), (", timeouts", timeouts)):
            storage = limits.storage.storage_from_string(url, **options)
            theirs = limiter_class(storage)

            def limited(theirs=theirs):
                if not theirs.hit(per_second, uuid.uuid4().hex[:8]):
                    raise RuntimeError
                return work()

            contenders[f"limits {strategy}{label}"] = limited
        contenders[f"fluxus {strategy}"] = fluxus.rate_limit(
            f"{HUGE}/second",
            name=uuid.uuid4().hex,
            strategy=strategy,
            storage=url,
            key=lambda: uuid.uuid4().hex[:8],
        )(work)
    medians = compare(
        {n: (lambda fn=fn: time_sync(fn, calls)) for n, fn in contenders.items()},
        rounds,
    )
    lines = [
        (
            f"happy path, sync, through Redis ({url}), a fresh key per call, "
            f"{rounds} rounds x {calls} calls, medians (us per call)"
        ),
        (
            f"  {'strategy':<24}{'fluxus':>9}{'limits':>9}{'ratio':>8}"
            f"{'limits, timeouts':>18}{'ratio':>8}"
        ),
    ]
    for strategy in strategies:
        ours = medians[f"fluxus {strategy}"]
        bare = medians[f"limits {strategy}"]
        timed = medians[f"limits {strategy}, timeouts"]
        lines.append(
            f"  {strategy:<24}{ours * 1e6:9.1f}{bare * 1e6:9.1f}{ours / bare:8.3f}"
            f"{timed * 1e6:18.1f}{ours / timed:8.3f}"
        )
    return [*lines, ""]


# -- accuracy ----------------------------------------------------------------


def max_window_excess(times, rate, burst):
    """Return max over windows [t_i, t_j] of admitted - (burst + rate * length).

    With a_k = k - rate * t_k, a window i..j admits j - i + 1 calls, so the
    excess is a_j - a_i + 1 - burst: one pass keeping the smallest a_i.
    """
    worst = -float("inf")
    lowest = float("inf")
    for k, t in enumerate(times):
        a = k - rate * t
        lowest = min(lowest, a)
        worst = max(worst, a - lowest + 1 - burst)
    return worst


def demand(limiter, rate, seconds, start, lag=None):
    """Call at 2 x rate, open loop, failing fast; return the admitted times.

    *lag*, a list, receives the caller's worst delay behind its schedule: a
    caller descheduled for longer than the bucket lasts loses tokens.
    """
    admitted = []
    interval = 1.0 / (2 * rate)
    worst = 0.0
    k = 0
    while True:
        due = start + k * interval
        now = time.time()
        if due > start + seconds:
            if lag is not None:
                lag.append(worst)
            return admitted
        if due > now:
            time.sleep(due - now)
        else:
            worst = max(worst, now - due)
        k += 1
        try:
            limiter.acquire(timeout=0)
        except fluxus.RateLimitExceeded:
            continue
        admitted.append(time.time() - start)


def accuracy_line(label, times, rate, burst, seconds):
    allowed = burst + rate * seconds
    steady = (len(times) - burst) / seconds
    excess = max_window_excess(sorted(times), rate, burst)
    return (
        f"  {label:<34}{len(times):>8} admitted / {allowed:>8.0f} allowed "
        f"= {len(times) / allowed:7.4f}; steady rate {steady:8.2f}/s "
        f"({(steady / rate - 1) * 100:+.2f}%); worst window "
        f"{excess:+.2f} calls vs burst + rate x t"
    )


def accuracy_memory(seconds):
    rate, burst = 500.0, 50
    limiter = fluxus.rate_limit(rate, burst=burst, name=uuid.uuid4().hex)
    times = demand(limiter, rate, seconds, time.time())
    return accuracy_line("memory, 1 process", times, rate, burst, seconds)


def _redis_worker(url, name, limit, seconds, sync):
    barrier, start_at, queue = sync
    rate, burst = limit
    fluxus.instrumentation.set_hooks([])
    limiter = fluxus.rate_limit(rate, burst=burst, name=name, storage=url)
    limiter.allow()  # connected before the clock starts
    barrier.wait()  # every worker is ready: the parent sets the start
    barrier.wait()
    lag = []
    # each of the 4 workers demands a quarter of 2 x rate
    admitted = demand(limiter, rate / 4, seconds, start_at.value, lag)
    queue.put((admitted, lag[0]))


def accuracy_redis(url, seconds, processes=4):
    rate, burst = 400.0, 40
    name = uuid.uuid4().hex
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(processes + 1)
    start_at = ctx.Value("d", 0.0)
    workers = [
        ctx.Process(
            target=_redis_worker,
            args=(url, name, (rate, burst), seconds, (barrier, start_at, queue)),
        )
        for _ in range(processes)
    ]
    for w in workers:
        w.start()
    barrier.wait(timeout=120)
    start_at.value = time.time() + 0.2
    barrier.wait(timeout=120)
    results = [queue.get(timeout=seconds + 60) for _ in workers]
    for w in workers:
        w.join()
    times = [t for admitted, _ in results for t in admitted]
    lag = max(worst for _, worst in results)
    return (
        accuracy_line(f"redis, {processes} processes", times, rate, burst, seconds)
        + f"; worst caller lag {lag * 1000:.0f} ms (bucket lasts "
        f"{burst / rate * 1000:.0f} ms)"
    )


# -- memory --------------------------------------------------------------------

MEMORY_CONTENDERS = (
    "fluxus numeric (GCRA)",
    "fluxus numeric, a key per call",
    "fluxus string (FW)",
    "fluxus string (SWC)",
    "fluxus string (MW)",
    "limits moving-window",
    "fluxus string (FW), a key per call",
    "limits fixed-window, a key per call",
)


def peak_rss_kib():
    """Return this process's peak RSS in KiB.

    Linux's ``VmHWM`` starts afresh with the process image, whereas
    ``ru_maxrss`` carries the parent's peak over a fork and an exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(name, calls):
    """Run *calls* admissions; print JSON: cost of the first/last 100k, RSS."""
    if name == "fluxus numeric (GCRA)":
        fn = fluxus.rate_limit(HUGE, name="m")(work)
    elif name == "fluxus numeric, a key per call":
        fn = fluxus.rate_limit(HUGE, name="m", key=str)(work)
    elif name == "fluxus string (FW)":
        fn = fluxus.rate_limit("1000000/second", name="m")(work)
    elif name == "fluxus string (SWC)":
        fn = fluxus.rate_limit(
            "1000000/second", name="m", strategy="sliding-window-counter"
        )(work)
    elif name == "fluxus string (MW)":
        fn = fluxus.rate_limit("1000000/second", name="m", strategy="moving-window")(
            work
        )
    elif name == "fluxus string (FW), a key per call":
        fn = fluxus.rate_limit("1000000/second", name="m", key=str)(work)
    elif name == "limits fixed-window, a key per call":
        fn = limits_hit(
            limits.strategies.FixedWindowRateLimiter,
            limits.RateLimitItemPerSecond(1_000_000),
            work,
            keyed=True,
        )
    else:
        fn = limits_hit(
            limits.strategies.MovingWindowRateLimiter,
            limits.RateLimitItemPerSecond(1_000_000),
            work,
        )
    chunk = 100_000
    costs = []
    rss_start = peak_rss_kib()
    for c in range(calls // chunk):
        base = c * chunk
        started = time.perf_counter()
        for i in range(base, base + chunk):
            fn(i)
        costs.append((time.perf_counter() - started) / chunk)
    rss_peak = peak_rss_kib()
    print(
        json.dumps(
            {"first": costs[0], "last": costs[-1], "rss0": rss_start, "rss": rss_peak}
        )
    )


def memory(calls, only=None):
    lines = [f"memory, {calls:,} calls each in a fresh process"]
    lines.append(
        f"  {'contender':<32}{'first 100k':>12}{'last 100k':>12}{'RSS before':>12}"
        f"{'peak RSS':>12}"
    )
    for name in only or MEMORY_CONTENDERS:
        # our own interpreter running this very script
        out = subprocess.run(  # noqa: S603
            [
                sys.executable,
                __file__,
                "--memory-child",
                name,
                "--memory-calls",
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        ).stdout
        r = json.loads(out.strip().splitlines()[-1])
        lines.append(
            f"  {name:<32}{r['first'] * 1e6:>10.2f}us{r['last'] * 1e6:>10.2f}us"
            f"{r['rss0'] / 1024:>10.1f}MB{r['rss'] / 1024:>10.1f}MB"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--long", action="store_true", help="10 s accuracy runs")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument(
        "--redis",
        default=None,
        help="a Redis URL: the happy path through it, and 4 processes' accuracy",
    )
    parser.add_argument("--memory-calls", type=int, default=1_000_000)
    parser.add_argument("--only", choices=["happy", "accuracy", "memory"])
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    parser.add_argument("--memory-only", nargs="*", help="memory contenders to run")
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.memory_calls)
        return 0
    seconds = args.seconds or (10.0 if args.long else 3.0)
    lines = []
    if args.only in (None, "happy"):
        lines += happy_path(args.rounds, args.calls)
        if args.redis:
            lines += happy_path_redis(args.redis, args.rounds, args.calls // 10)
    if args.only in (None, "accuracy"):
        lines.append(f"accuracy, demand at 2 x the limit for {seconds:g} s")
        lines.append(accuracy_memory(seconds))
        if args.redis:
            lines.append(accuracy_redis(args.redis, seconds))
        lines.append("")
    if args.only in (None, "memory"):
        lines += memory(args.memory_calls, args.memory_only)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
