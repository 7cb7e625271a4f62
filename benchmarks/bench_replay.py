"""What replaying and listing a large dead letter store costs.

Run with ``python benchmarks/bench_replay.py``. Part one fills a JSON Lines
file and a SQLite database with the same letters and replays each with
``fluxus.replay`` against a function that does nothing, in interleaved
rounds (each round starts from a fresh copy of the stores): the JSONL store
should take at most 3x the SQLite one, and SQLite should replay at least
1,000 letters a second. Part two runs ``python -m fluxus dlq list`` over a
SQLite store of ``--list-letters`` letters in a child process and reports
when the first line arrived and the child's peak RSS (``wait4``).

Both parts use only ``put``, ``replay`` and the command line, so the same
file runs against an older fluxus for a before/after comparison.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import fluxus
from fluxus import sinks
from fluxus.sinks._codec import encode


def make_letter(n: int) -> fluxus.DeadLetter:
    return fluxus.DeadLetter(
        id=uuid.uuid4().hex,
        function="shop.orders.submit",
        args=(f"order-{n}",),
        kwargs={"qty": n % 7, "note": "x" * 200},
        error=None,
        error_type="builtins.ConnectionError",
        error_message="payment service unreachable",
        traceback="Traceback (most recent call last):\n" + "  frame\n" * 20,
        failed_at=datetime.now(UTC),
    )


def build_stores(directory: Path, count: int) -> tuple[Path, Path]:
    """Write *count* letters to a JSONL file and a SQLite database."""
    letters = [make_letter(n) for n in range(count)]
    jsonl = directory / "template.jsonl"
    with jsonl.open("w") as file:
        file.writelines(encode(letter) + "\n" for letter in letters)
    jsonl.chmod(0o600)
    db = directory / "template.db"
    sinks.SQLite(db).put(letters[0])  # the table, as the sink makes it
    connection = sqlite3.connect(db)
    with connection:
        connection.executemany(
            "INSERT INTO fluxus_dead_letters "
            "(id, failed_at, function, error_type, record) VALUES (?, ?, ?, ?, ?)",
            [
                (x.id, x.failed_at.isoformat(), x.function, x.error_type, encode(x))
                for x in letters[1:]
            ],
        )
    connection.close()
    return jsonl, db


def replay_once(template: Path, kind: str, directory: Path) -> float:
    """Copy *template*, replay it all; return the seconds the replay took."""
    copy = directory / f"round-{uuid.uuid4().hex}{template.suffix}"
    shutil.copy(template, copy)
    sink = sinks.JsonlFile(copy) if kind == "jsonl" else sinks.SQLite(copy)
    start = time.perf_counter()
    result = fluxus.replay(sink, lambda *_, **__: None)
    elapsed = time.perf_counter() - start
    if result.replayed != sum(1 for _ in open(template, "rb")) and kind == "jsonl":  # noqa: PTH123, SIM115 - a count
        msg = f"replayed {result.replayed} only"
        raise SystemExit(msg)
    for leftover in directory.glob(f"{copy.name}*"):
        leftover.unlink()
    return elapsed


def replay_part(count: int, rounds: int) -> list[str]:
    fluxus.instrumentation.set_hooks([])
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        jsonl, db = build_stores(directory, count)
        samples: dict[str, list[float]] = {"jsonl": [], "sqlite": []}
        for round_number in range(rounds):
            order = ["jsonl", "sqlite"] if round_number % 2 else ["sqlite", "jsonl"]
            for kind in order:
                template = jsonl if kind == "jsonl" else db
                samples[kind].append(replay_once(template, kind, directory))
    fluxus.instrumentation.set_hooks(None)
    medians = {kind: statistics.median(values) for kind, values in samples.items()}
    lines = [f"replay {count:,} letters, {rounds} rounds, medians"]
    for kind, seconds in medians.items():
        lines.append(
            f"  {kind:<8}{seconds:>9.2f}s{count / seconds:>12,.0f} letters/s"
            f"{seconds / medians['sqlite']:>8.2f}x sqlite"
        )
    return lines


def list_part(count: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        # Built in a child: the peak RSS of a child process counts the
        # memory of the parent it was forked from.
        subprocess.run(  # noqa: S603 - our own interpreter
            [sys.executable, __file__, "--build", str(directory), str(count)],
            check=True,
        )
        db = directory / "template.db"
        start = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter
            [sys.executable, "-m", "fluxus", "dlq", "list", str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdout is not None  # noqa: S101 - asked for above
        first = proc.stdout.readline()
        first_at = time.perf_counter() - start
        lines = 1 if first else 0
        for _ in proc.stdout:
            lines += 1
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        total = time.perf_counter() - start
    return [
        f"dlq list over {count:,} SQLite letters (child process)",
        (
            f"  first line after {first_at:.2f}s, all {lines:,} lines after "
            f"{total:.2f}s,"
            f" peak RSS {usage.ru_maxrss / 1024:.0f} MB, exit {proc.returncode}"
        ),
    ]


def main() -> int:
    if sys.argv[1:2] == ["--build"]:
        build_stores(Path(sys.argv[2]), int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--letters", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--list-letters", type=int, default=100_000)
    parser.add_argument("--skip-list", action="store_true")
    parser.add_argument("--skip-replay", action="store_true")
    args = parser.parse_args()
    lines: list[str] = []
    if not args.skip_replay:
        lines += replay_part(args.letters, args.rounds)
    if not args.skip_list:
        lines += list_part(args.list_letters)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
