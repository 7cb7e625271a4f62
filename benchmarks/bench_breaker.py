"""fluxus.circuit_breaker against a bare call, pybreaker and async peers.

Run with ``tox -e bench -- ...`` or ``python benchmarks/bench_breaker.py``.
Four measurements, each in this one process with interleaved rounds:

- happy path, sync: a closed breaker around a trivial function, against
  ``pybreaker.CircuitBreaker.call``; also the windowed breaker (failure
  rate, and failure rate plus slow calls);
- happy path, async: against aiobreaker and purgatory;
- rejection while open: the cost of refusing a call;
- contention: 8 threads x 50 calls x 10 ms through ONE breaker, wall time
  against the same threads without a breaker;
- with ``--redis URL`` (or a local ``redis-server`` started on a free port),
  the happy path with the circuit in Redis, against pybreaker's
  ``CircuitRedisStorage``, and the commands each call sends to Redis
  (counted with ``MONITOR``, leaving out those a script runs).

Events go to no hook during the measurements, as pybreaker has no listener:
what is measured is the breaker, not the logging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

import aiobreaker
import purgatory
import pybreaker
import redis

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import compare, report, time_async, time_sync


def work(x=1):
    return x


async def awork(x=1):
    return x


def happy_sync(calls, rounds):
    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    contenders = {
        "bare call": work,
        "fluxus.circuit_breaker": fluxus.circuit_breaker(5, 30.0)(work),
        "fluxus, failure_rate": fluxus.circuit_breaker(5, 30.0, failure_rate=0.5)(work),
        "fluxus, rate + slow": fluxus.circuit_breaker(
            5, 30.0, failure_rate=0.5, slow_call_duration=1.0
        )(work),
        "pybreaker .call": functools.partial(pb.call, work),
        "pybreaker decorator": pb(work),
    }
    medians = compare(
        {n: (lambda f=f: time_sync(f, calls)) for n, f in contenders.items()}, rounds
    )
    return report(
        f"happy path, sync, {rounds} rounds x {calls} calls, medians",
        medians,
        baseline="bare call",
        reference="pybreaker .call",
    )


def happy_async(calls, rounds):
    aio = aiobreaker.CircuitBreaker(fail_max=5, timeout_duration=timedelta(seconds=30))
    factory = purgatory.AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)
    contenders = {
        "bare call": awork,
        "fluxus.circuit_breaker": fluxus.circuit_breaker(5, 30.0)(awork),
        "aiobreaker": aio(awork),
        "purgatory": factory("bench")(awork),
    }
    medians = compare(
        {n: (lambda f=f: time_async(f, calls)) for n, f in contenders.items()}, rounds
    )
    ratio = medians["fluxus.circuit_breaker"] / medians["purgatory"]
    return [
        *report(
            f"happy path, async, {rounds} rounds x {calls} calls, medians",
            medians,
            baseline="bare call",
            reference="aiobreaker",
        ),
        f"  fluxus / purgatory: {ratio:.3f}",
    ]


def fail():
    raise OSError


def rejecting(fn, error):
    def attempt():
        # try/except, not contextlib.suppress: the frame is what it measures
        try:  # noqa: SIM105 - see above
            fn()
        except error:
            pass

    return attempt


def rejection(calls, rounds):
    ours = fluxus.circuit_breaker(1, 3600.0)(fail)
    with contextlib.suppress(OSError):
        ours()
    pb = pybreaker.CircuitBreaker(
        fail_max=1, reset_timeout=3600, throw_new_error_on_trip=False
    )
    with contextlib.suppress(OSError):
        pb.call(fail)
    contenders = {
        "bare raise": rejecting(fail, OSError),
        "fluxus.circuit_breaker": rejecting(ours, fluxus.CircuitOpenError),
        "pybreaker .call": rejecting(
            functools.partial(pb.call, fail), pybreaker.CircuitBreakerError
        ),
    }
    medians = compare(
        {n: (lambda f=f: time_sync(f, calls)) for n, f in contenders.items()}, rounds
    )
    return report(
        f"rejection while open, {rounds} rounds x {calls} calls, medians",
        medians,
        baseline="bare raise",
        reference="pybreaker .call",
    )


def contention(rounds, threads=8, calls=50, delay=0.01):
    def slow():
        time.sleep(delay)

    pb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    contenders = {
        "no breaker": slow,
        "fluxus.circuit_breaker": fluxus.circuit_breaker(5, 30.0)(slow),
        "pybreaker .call": functools.partial(pb.call, slow),
    }

    def wall(fn):
        def worker():
            for _ in range(calls):
                fn()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        start = time.perf_counter()
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return time.perf_counter() - start

    medians = compare({n: (lambda f=f: wall(f)) for n, f in contenders.items()}, rounds)
    base = medians["no breaker"]
    lines = [f"contention, {threads} threads x {calls} calls x {delay * 1e3:g} ms"]
    lines += [
        f"  {name:<24}{seconds:>8.3f}s wall{seconds / base:>10.3f}x no breaker"
        for name, seconds in medians.items()
    ]
    return lines


def happy_redis(url, calls, rounds):
    client = redis.Redis.from_url(url)
    client.flushdb()
    pb = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=30,
        state_storage=pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client),
    )
    ours = fluxus.circuit_breaker(5, 30.0, name="bench", storage=url)
    windowed = fluxus.circuit_breaker(
        5, 30.0, failure_rate=0.5, name="bench-window", storage=url
    )
    contenders = {
        "bare call": work,
        "fluxus, Redis": ours(work),
        "fluxus windowed, Redis": windowed(work),
        "pybreaker, Redis": functools.partial(pb.call, work),
    }
    medians = compare(
        {n: (lambda f=f: time_sync(f, calls)) for n, f in contenders.items()}, rounds
    )
    lines = report(
        f"happy path, circuit in Redis, sync, {rounds} rounds x {calls} calls",
        medians,
        baseline="bare call",
        reference="pybreaker, Redis",
    )
    async_fn = ours(awork)
    seconds = statistics_median(
        [time_async(async_fn, calls) for _ in range(max(3, rounds // 2))]
    )
    lines.append(f"  fluxus, Redis, async{seconds * 1e6:>14.3f}us per call")
    lines.append("commands sent to Redis per call (MONITOR, script internals left out)")
    for name, fn in contenders.items():
        if name != "bare call":
            lines.append(f"  {name:<24}{commands_per_call(url, fn, 200):>8.2f}")
    return lines


def commands_per_call(url, fn, calls):
    """Count the commands *fn* sends to Redis per call, with ``MONITOR``."""
    fn()  # connections and scripts loaded before counting
    seen = []
    ready = threading.Event()

    def watch():
        with redis.Redis.from_url(url).monitor() as monitor:
            ready.set()
            for command in monitor.listen():
                if "fluxus-bench-stop" in command["command"]:
                    return
                if command.get("client_type") != "lua":
                    seen.append(command["command"])

    watcher = threading.Thread(target=watch)
    watcher.start()
    ready.wait()
    time.sleep(0.2)  # MONITOR is on once the server answered it
    for _ in range(calls):
        fn()
    redis.Redis.from_url(url).echo("fluxus-bench-stop")
    watcher.join()
    return len(seen) / calls


def statistics_median(values):
    values = sorted(values)
    return values[len(values) // 2]


@contextlib.contextmanager
def local_redis(url):
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(  # noqa: S603 - the redis-server on PATH
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
            cwd=workdir,
            stdout=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                with contextlib.suppress(OSError):
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--contention-rounds", type=int, default=3)
    parser.add_argument("--redis", default=None, help="a Redis URL to measure on")
    args = parser.parse_args()

    fluxus.instrumentation.set_hooks([])
    pybreaker_log = pybreaker.CircuitRedisStorage.logger  # quiet during benches
    pybreaker_log.disabled = True
    lines = happy_sync(args.calls, args.rounds)
    lines += ["", *happy_async(args.calls, args.rounds)]
    lines += ["", *rejection(args.calls, args.rounds)]
    lines += ["", *contention(args.contention_rounds)]
    with local_redis(args.redis) as url:
        if url is None:
            lines += ["", "happy path in Redis: skipped (no redis-server, no --redis)"]
        else:
            lines += ["", *happy_redis(url, args.calls // 10, args.rounds)]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    sys.exit(main())
