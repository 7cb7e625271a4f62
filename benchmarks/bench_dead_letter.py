"""What fluxus.dead_letter costs: nothing on success, a write per failure.

Run with ``python benchmarks/bench_dead_letter.py``. Part one wraps a
trivial function that never fails and compares ``@fluxus.dead_letter`` with
a bare call and with a pass-through ``wrapt.decorator`` (the floor of any
decorator built on wrapt). Part two makes every call fail and measures what
one captured letter costs in each sink, fsync and commit included: the
Redis part starts a ``redis-server`` on a free port when one is installed,
or uses ``--redis URL``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import wrapt

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus import sinks

from _harness import compare, report, time_async, time_sync


@wrapt.decorator
def passthrough(wrapped, instance, args, kwargs):  # noqa: ARG001 - wrapt's signature
    return wrapped(*args, **kwargs)


def work(x=1):
    return x


async def awork(x=1):
    return x


def happy_path(rounds: int, calls: int) -> list[str]:
    sink = sinks.Memory()
    lines: list[str] = []
    for title, fn, timer in (("sync", work, time_sync), ("async", awork, time_async)):
        contenders = {
            "bare call": fn,
            "fluxus.dead_letter": fluxus.dead_letter(sink)(fn),
            "wrapt pass-through": passthrough(fn),
        }
        medians = compare(
            {
                name: (lambda f=f, timer=timer: timer(f, calls))
                for name, f in contenders.items()
            },
            rounds,
        )
        lines += [
            *report(
                f"happy path, {title}, {rounds} rounds x {calls} calls, medians",
                medians,
                baseline="bare call",
                reference="wrapt pass-through",
            ),
            "",
        ]
    return lines


def fails(order, qty=1):  # noqa: ARG001 - a realistic signature
    raise ValueError("payment declined")


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes] | None, str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        return None, None
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen(  # noqa: S603 - the installed redis-server
        [binary, "--port", str(port), *options, "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"redis://127.0.0.1:{port}/0"


def per_letter(rounds: int, letters: int, redis_url: str | None) -> list[str]:
    fluxus.instrumentation.set_hooks([])  # time the sinks, not the event logging
    quiet = logging.getLogger("bench.dead_letter")
    quiet.addHandler(logging.NullHandler())
    quiet.propagate = False
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        contenders = {
            "Memory": sinks.Memory(),
            "Log (NullHandler)": sinks.Log(quiet),
            "JsonlFile (fsync)": sinks.JsonlFile(directory / "a.jsonl"),
            "JsonlFile (no fsync)": sinks.JsonlFile(directory / "b.jsonl", fsync=False),
            "SQLite (WAL, FULL)": sinks.SQLite(directory / "c.db"),
        }
        if redis_url is not None:
            contenders["RedisStream"] = sinks.RedisStream(
                redis_url, stream="bench:dead-letters"
            )
        functions = {
            name: fluxus.dead_letter(sink, reraise=False)(fails)
            for name, sink in contenders.items()
        }
        medians = compare(
            {
                name: (lambda f=f: time_sync(lambda: f("order-42", qty=3), letters))
                for name, f in functions.items()
            },
            rounds,
        )
        for sink in contenders.values():
            sink.clear()
    fluxus.instrumentation.set_hooks(None)
    lines = [f"one failed call captured, {rounds} rounds x {letters} letters, medians"]
    lines.append(f"  {'sink':<22}{'per letter':>14}{'letters/s':>14}")
    for name, seconds in medians.items():
        lines.append(f"  {name:<22}{seconds * 1e6:>12.1f}us{1 / seconds:>14,.0f}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--letter-rounds", type=int, default=7)
    parser.add_argument("--letters", type=int, default=200)
    parser.add_argument("--redis", default=None, help="a Redis URL to use")
    args = parser.parse_args()

    lines = happy_path(args.rounds, args.calls)
    with tempfile.TemporaryDirectory() as workdir:
        proc, url = (None, args.redis) if args.redis else start_redis(Path(workdir))
        try:
            lines += per_letter(args.letter_rounds, args.letters, url)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
