"""``python -m fluxus dlq``: inspect and re-drive a dead letter store.

::

    python -m fluxus dlq list failed.jsonl
    python -m fluxus dlq show failed.db 3f2a
    python -m fluxus dlq replay failed.jsonl --call shop.orders:submit
    python -m fluxus dlq list redis://localhost:6379/0 --stream orders:dlq
    python -m fluxus dlq purge failed.jsonl --yes
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sqlite3
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from ._dead_letter import DeadLetter
from ._redis import SCHEMES, mask_password
from ._replay import ReplayResult, replay, replay_async
from .sinks import JsonlFile, RedisStream, SQLite
from .sinks._base import CorruptRecordWarning, StoringSink
from .sinks._codec import encode

_DEFAULT_STREAM = "fluxus:dead-letters"
_REDIS_SCHEMES = tuple(f"{scheme}://" for scheme in sorted(SCHEMES))
_SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class StoreError(Exception):
    """The store named on the command line cannot be used; exit status 2."""


def add_parser(commands: Any) -> None:
    """Add the ``dlq`` command and its subcommands to *commands*."""
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument(
        "sink",
        metavar="SINK",
        help="a .jsonl file, a .db/.sqlite SQLite database or a redis:// URL",
    )
    store.add_argument(
        "--stream",
        default=None,
        help=f"the Redis stream's key (default: {_DEFAULT_STREAM})",
    )
    dlq = commands.add_parser("dlq", help="inspect and replay a dead letter store")
    actions = dlq.add_subparsers(dest="action", required=True)
    listing = actions.add_parser(
        "list", parents=[store], help="one line per letter: id, time, function, error"
    )
    listing.add_argument("--json", action="store_true", help="one JSON record a line")
    show = actions.add_parser(
        "show", parents=[store], help="one letter in full, traceback included"
    )
    show.add_argument("letter_id", metavar="ID", help="the letter's id or a prefix")
    again = actions.add_parser(
        "replay",
        parents=[store],
        help="call a function with each letter's arguments; remove the successes",
    )
    again.add_argument(
        "--call",
        "--target",
        dest="call",
        required=True,
        metavar="MODULE:FUNCTION",
        help=(
            "the importable function to call, such as shop.orders:submit "
            "(give the undecorated one; an async def function is awaited)"
        ),
    )
    again.add_argument(
        "--function",
        default=None,
        metavar="NAME",
        help="only replay letters of this module.qualname",
    )
    purge = actions.add_parser("purge", parents=[store], help="remove every letter")
    purge.add_argument("--yes", action="store_true", help="do not ask first")


def open_sink(spec: str, stream: str | None) -> StoringSink:
    """Return the sink *spec* names.

    Raises:
        StoreError: If *spec* names no store fluxus can open.
    """
    if spec.startswith(_REDIS_SCHEMES):
        import redis  # noqa: PLC0415 - only Redis stores need it

        sink = RedisStream(spec, stream=stream or _DEFAULT_STREAM)
        try:
            sink.client.ping()
        except redis.RedisError as exc:
            msg = f"cannot reach Redis at {mask_password(spec)}: {exc}"
            raise StoreError(msg) from exc
        return sink
    if stream is not None:
        msg = "--stream is for Redis stores only"
        raise StoreError(msg)
    path = Path(spec)
    if path.suffix == ".jsonl":
        store: StoringSink = JsonlFile(path)
    elif path.suffix in _SQLITE_SUFFIXES:
        store = SQLite(path)
    else:
        msg = (
            f"cannot tell what kind of store {spec!r} is: name a .jsonl file, "
            "a .db/.sqlite database or a redis:// URL"
        )
        raise StoreError(msg)
    if not path.is_file():
        msg = f"no dead letter store at {spec}"
        raise StoreError(msg)
    return store


def _read(sink: StoringSink, err: TextIO) -> list[DeadLetter]:
    """Return the letters; report unreadable records; refuse a corrupt store."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CorruptRecordWarning)
        try:
            letters = list(sink.letters())
        except sqlite3.DatabaseError as exc:
            msg = f"{sink!r} is not a readable SQLite database: {exc}"
            raise StoreError(msg) from exc
    skipped = [w for w in caught if issubclass(w.category, CorruptRecordWarning)]
    for warning in skipped:
        print(f"warning: {warning.message}", file=err)
    if skipped and not letters:
        msg = f"{sink!r} holds no readable dead letter: is it a fluxus store?"
        raise StoreError(msg)
    return letters


def _short_error(letter: DeadLetter, width: int = 60) -> str:
    kind = letter.error_type.rpartition(".")[2]
    text = f"{kind}: {letter.error_message}".replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _list(letters: list[DeadLetter], *, as_json: bool, out: TextIO) -> int:
    if as_json:
        for letter in letters:
            print(encode(letter), file=out)
        return 0
    rows = [
        (
            letter.id,
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.function + ("" if letter.replayable else " *"),
            _short_error(letter),
        )
        for letter in letters
    ]
    header = ("ID", "FAILED AT (UTC)", "FUNCTION", "ERROR")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[3]]).rstrip(), file=out)
    plural = "" if len(letters) == 1 else "s"
    note = " (* arguments redacted or not serializable: not replayable)"
    print(
        f"{len(letters)} letter{plural}"
        + (note if any(not x.replayable for x in letters) else ""),
        file=out,
    )
    return 0


def _show(letters: list[DeadLetter], prefix: str, out: TextIO, err: TextIO) -> int:
    matches = [letter for letter in letters if letter.id.startswith(prefix)]
    if len(matches) != 1:
        problem = "no letter" if not matches else f"{len(matches)} letters"
        print(f"error: {problem} with an id starting with {prefix!r}", file=err)
        return 1
    (letter,) = matches
    for label, value in (
        ("id", letter.id),
        ("function", letter.function),
        ("failed at", letter.failed_at.isoformat()),
        ("error", f"{letter.error_type}: {letter.error_message}"),
        ("args", repr(letter.args)),
        ("kwargs", repr(letter.kwargs)),
        ("placeholders", ", ".join(letter.placeholders) or "none (replayable)"),
    ):
        print(f"{label + ':':<14}{value}", file=out)
    print(file=out)
    print(letter.traceback.rstrip("\n"), file=out)
    return 0


def load_target(spec: str) -> Callable[..., Any]:
    """Import ``module:function`` (the function may be ``Class.method``).

    Raises:
        StoreError: If it cannot be imported or is not callable.
    """
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        msg = f"--call must be module:function, got {spec!r}"
        raise StoreError(msg)
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as exc:
        msg = f"cannot import {spec}: {exc}"
        raise StoreError(msg) from exc
    if not callable(target):
        msg = f"{spec} is not callable"
        raise StoreError(msg)
    return target  # type: ignore[no-any-return]  # checked callable above


class _ProgressBar:
    """Draw ``[#####.....] done/total`` on a terminal; stay silent elsewhere."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._live = err.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self._live:
            return
        filled = 30 * done // total
        bar = "#" * filled + "." * (30 - filled)
        end = "\n" if done == total else ""
        print(f"\rreplaying [{bar}] {done}/{total}", end=end, file=self._err)
        self._err.flush()


def _replay(
    sink: StoringSink, call: str, function: str | None, out: TextIO, err: TextIO
) -> int:
    target = load_target(call)
    progress = _ProgressBar(err)
    result: ReplayResult
    if inspect.iscoroutinefunction(target):
        result = asyncio.run(
            replay_async(sink, target, function=function, progress=progress)
        )
    else:
        result = replay(sink, target, function=function, progress=progress)
    print(
        f"replayed {result.replayed}, failed {result.failed} (kept), "
        f"skipped {result.skipped} (kept)",
        file=out,
    )
    return 1 if result.failed else 0


def _purge(
    sink: StoringSink, count: int, *, yes: bool, out: TextIO, stdin: TextIO
) -> int:
    if not yes:
        print(f"remove {count} letters from {sink!r}? [y/N] ", end="", file=out)
        out.flush()
        if stdin.readline().strip().lower() not in {"y", "yes"}:
            print("nothing removed", file=out)
            return 1
    print(f"removed {sink.clear()} letters", file=out)
    return 0


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Carry out the parsed ``dlq`` command; return the exit status."""
    try:
        sink = open_sink(args.sink, args.stream)
        letters = _read(sink, err)
        if args.action == "list":
            return _list(letters, as_json=args.json, out=out)
        if args.action == "show":
            return _show(letters, args.letter_id, out, err)
        if args.action == "replay":
            return _replay(sink, args.call, args.function, out, err)
        return _purge(sink, len(letters), yes=args.yes, out=out, stdin=stdin)
    except StoreError as exc:
        print(f"error: {exc}", file=err)
        return 2
