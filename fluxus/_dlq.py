"""``python -m fluxus dlq``: inspect and re-drive a dead letter store.

::

    python -m fluxus dlq list failed.jsonl --function 'shop.*' --error OSError
    python -m fluxus dlq show failed.db 3f2a
    python -m fluxus dlq replay failed.jsonl --call shop.orders:submit
    python -m fluxus dlq replay failed.db --call 'shop.clients:make_client().get_quote'
    python -m fluxus dlq replay failed.db --call shop.orders:pay --fill token=TOKEN
    python -m fluxus dlq list redis://localhost:6379/0 --stream orders:dlq --json
    python -m fluxus dlq purge failed.jsonl --yes

Letters are streamed: ``list`` prints its first line at once and its memory
does not grow with the store. ``list``, ``replay`` and ``purge`` report
progress on stderr when they work through more than 1,000 letters; stdout
carries only the result.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fnmatch
import importlib
import inspect
import os
import re
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
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
#: Above this many letters, list, replay and purge report progress.
PROGRESS_ABOVE = 1000
#: Without a terminal, a progress line at least this often (seconds).
PROGRESS_EVERY = 5.0
_STEP = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(\(\))?")


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
    listing.add_argument(
        "--json", action="store_true", help="one JSON record a line, no header"
    )
    listing.add_argument(
        "--limit", type=_count, default=None, metavar="N", help="at most N letters"
    )
    listing.add_argument(
        "--function",
        default=None,
        metavar="PATTERN",
        help="only letters whose module.qualname matches this glob ('shop.*')",
    )
    listing.add_argument(
        "--error",
        default=None,
        metavar="TYPE",
        help="only letters whose error is this class (name or module.qualname)",
    )
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
        metavar="MODULE:PATH",
        help=(
            "the function to call, such as shop.orders:submit, or a method "
            "reached through zero-argument factories, such as "
            "'shop.clients:make_client().get_quote' (give the undecorated "
            "one; an async def function is awaited)"
        ),
    )
    again.add_argument(
        "--fill",
        action="append",
        default=[],
        metavar="NAME=ENVVAR",
        help=(
            "give the redacted argument NAME the value of the environment "
            "variable ENVVAR (repeatable; never a value on the command line)"
        ),
    )
    again.add_argument(
        "--claim-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="a claim held longer expires, as when a replayer dies (default: 60)",
    )
    again.add_argument(
        "--function",
        default=None,
        metavar="NAME",
        help="only replay letters of this module.qualname",
    )
    purge = actions.add_parser(
        "purge",
        parents=[store],
        help="remove the letters stored now (lists them first)",
    )
    purge.add_argument("--yes", action="store_true", help="do not ask first")


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"must be a whole number >= 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        msg = f"must be seconds > 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def open_sink(spec: str, stream: str | None) -> StoringSink:
    """Return the sink *spec* names.

    Raises:
        StoreError: If *spec* names no store fluxus can open.
    """
    if spec.startswith(_REDIS_SCHEMES):
        sink = RedisStream(spec, stream=stream or _DEFAULT_STREAM)
        import redis  # noqa: PLC0415 - only Redis stores need it, and have it

        try:
            sink.client.ping()
        except redis.RedisError as exc:
            sink.close()
            msg = f"cannot reach Redis at {mask_password(spec)}: {exc}"
            raise StoreError(msg) from exc
        return sink
    if stream is not None:
        msg = "--stream is for Redis stores only"
        raise StoreError(msg)
    path = Path(spec)
    kind: type[StoringSink]
    if path.suffix == ".jsonl":
        kind = JsonlFile
    elif path.suffix in _SQLITE_SUFFIXES:
        kind = SQLite
    else:
        msg = (
            f"cannot tell what kind of store {spec!r} is: name a .jsonl file, "
            "a .db/.sqlite database or a redis:// URL"
        )
        raise StoreError(msg)
    if not path.is_file():
        msg = f"no dead letter store at {spec}"
        raise StoreError(msg)
    try:
        return kind(path)
    except OSError as exc:
        msg = f"cannot open {spec} for writing: {exc}"
        raise StoreError(msg) from exc


class _Progress:
    """Report progress on stderr: a bar on a terminal, else a line every few seconds."""

    def __init__(
        self, err: TextIO, verb: str, total: int, *, always: bool = False
    ) -> None:
        self._err = err
        self._verb = verb
        self._terminal = err.isatty()
        self._on = total > PROGRESS_ABOVE or (always and self._terminal)
        self._next = time.monotonic() + PROGRESS_EVERY
        self._drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self._on:
            return
        if self._terminal:
            filled = 30 * done // max(total, 1)
            bar = "#" * filled + "." * (30 - filled)
            end = "\n" if done == total else ""
            print(f"\r{self._verb} [{bar}] {done}/{total}", end=end, file=self._err)
            self._drawn = done != total
        elif time.monotonic() >= self._next or done == total:
            self._next = time.monotonic() + PROGRESS_EVERY
            print(f"{self._verb}: {done}/{total} letters", file=self._err)
        self._err.flush()

    def finish(self) -> None:
        """End a bar left unfinished (a filter or a limit stopped early)."""
        if self._drawn:
            print(file=self._err)
            self._drawn = False


class _Reading:
    """Count what a command read, so that a store of garbage is refused."""

    def __init__(self, sink: StoringSink) -> None:
        self.sink = sink
        self.letters = 0
        self.corrupt = 0

    def __call__(self, limit: int | None = None) -> Iterator[DeadLetter]:
        for letter in self.sink.letters(limit):
            self.letters += 1
            yield letter

    def check(self) -> None:
        if self.corrupt and not self.letters:
            msg = f"{self.sink!r} holds no readable dead letter: is it a fluxus store?"
            raise StoreError(msg)


@contextlib.contextmanager
def _reporting(reading: _Reading, err: TextIO) -> Iterator[None]:
    """Print skipped records as warnings on *err*; refuse a corrupt store."""

    def show(
        message: Warning | str, category: type[Warning], *_: object, **__: object
    ) -> None:
        if issubclass(category, CorruptRecordWarning):
            reading.corrupt += 1
        print(f"warning: {message}", file=err)

    with warnings.catch_warnings():
        warnings.simplefilter("always", CorruptRecordWarning)
        warnings.showwarning = show
        try:
            yield
        except sqlite3.DatabaseError as exc:
            msg = f"{reading.sink!r} is not a readable SQLite database: {exc}"
            raise StoreError(msg) from exc


def _matches(letter: DeadLetter, args: argparse.Namespace) -> bool:
    pattern = getattr(args, "function", None)
    if pattern is not None and not fnmatch.fnmatchcase(letter.function, pattern):
        return False
    error = getattr(args, "error", None)
    return error is None or error in (
        letter.error_type,
        letter.error_type.rpartition(".")[2],
    )


def _short_error(letter: DeadLetter, width: int = 60) -> str:
    kind = letter.error_type.rpartition(".")[2]
    text = f"{kind}: {letter.error_message}".replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _printable(text: str) -> str:
    """Escape what no terminal encoding can carry (lone surrogates)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _row(letter: DeadLetter) -> str:
    function = letter.function + ("" if letter.replayable else " *")
    when = letter.failed_at.strftime("%Y-%m-%d %H:%M:%S")
    row = f"{letter.id:<32}  {when:<19}  {function:<40}  {_short_error(letter)}"
    return _printable(row.rstrip())


def _header() -> str:
    return f"{'ID':<32}  {'FAILED AT (UTC)':<19}  {'FUNCTION':<40}  ERROR"


def _list(reading: _Reading, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if not args.json:
        print(_header(), file=out, flush=True)
    total = reading.sink.count()
    progress = _Progress(err, "listing", total)
    shown = 0
    placeholders = False
    limit = getattr(args, "limit", None)
    for done, letter in enumerate(reading(), 1):
        if limit is not None and shown >= limit:
            break
        if _matches(letter, args):
            shown += 1
            placeholders = placeholders or not letter.replayable
            print(encode(letter) if args.json else _row(letter), file=out)
            if shown == 1:
                out.flush()  # the first line at once, even into a pipe
        progress(done, max(done, total))
    progress.finish()
    reading.check()
    if not args.json:
        plural = "" if shown == 1 else "s"
        note = " (* arguments redacted or not serializable: not replayable)"
        print(f"{shown} letter{plural}" + (note if placeholders else ""), file=out)
    return 0


def _safe_repr(value: object) -> str:
    try:
        return repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        return f"<{type(value).__name__} holding an int too long to print>"


def _show(reading: _Reading, prefix: str, out: TextIO, err: TextIO) -> int:
    matches = [letter for letter in reading() if letter.id.startswith(prefix)]
    reading.check()
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
        ("args", _safe_repr(letter.args)),
        ("kwargs", _safe_repr(letter.kwargs)),
        ("placeholders", ", ".join(letter.placeholders) or "none (replayable)"),
    ):
        print(_printable(f"{label + ':':<14}{value}"), file=out)
    print(file=out)
    print(_printable(letter.traceback.rstrip("\n")), file=out)
    return 0


def load_target(spec: str) -> Callable[..., Any]:
    """Import ``module:path`` and return the callable it names.

    ``path`` is a dotted attribute path; a step written ``name()`` calls a
    zero-argument factory on the way, so that a method can be reached
    through the object that owns it: ``shop.clients:make_client().get_quote``.

    Raises:
        StoreError: If it cannot be imported or is not callable.
    """
    module_name, colon, attribute = spec.partition(":")
    steps = [_STEP.fullmatch(part) for part in attribute.split(".")]
    if not colon or not module_name or not attribute or None in steps:
        msg = (
            f"--call must be module:function (or module:factory().method), got {spec!r}"
        )
        raise StoreError(msg)
    try:
        target: Any = importlib.import_module(module_name)
        for step in steps:
            assert step is not None  # noqa: S101 - checked above
            target = getattr(target, step.group(1))
            if step.group(2):
                target = target()
    except (ImportError, AttributeError) as exc:
        msg = f"cannot import {spec}: {exc}"
        raise StoreError(msg) from exc
    except Exception as exc:
        msg = f"cannot build {spec}: {type(exc).__name__}: {exc}"
        raise StoreError(msg) from exc
    if not callable(target):
        msg = f"{spec} is not callable"
        raise StoreError(msg)
    return target  # type: ignore[no-any-return]  # checked callable above


def _fill(pairs: list[str]) -> dict[str, str] | None:
    """Read ``NAME=ENVVAR`` pairs: the values come from the environment."""
    values = {}
    for pair in pairs:
        name, equals, variable = pair.partition("=")
        if not equals or not name.isidentifier() or not variable:
            msg = f"--fill must be NAME=ENVVAR, got {pair!r}"
            raise StoreError(msg)
        if variable not in os.environ:
            msg = f"--fill {pair}: the environment variable {variable} is not set"
            raise StoreError(msg)
        values[name] = os.environ[variable]
    return values or None


def _replay(
    sink: StoringSink, args: argparse.Namespace, out: TextIO, err: TextIO
) -> int:
    target = load_target(args.call)
    fill = _fill(getattr(args, "fill", []))
    total = sink.count()
    progress = _Progress(err, "replaying", total, always=True)
    options: dict[str, Any] = {
        "function": args.function,
        "fill": fill,
        "claim_timeout": getattr(args, "claim_timeout", 60.0),
        "progress": progress,
    }
    result: ReplayResult
    try:
        if inspect.iscoroutinefunction(target):
            result = asyncio.run(replay_async(sink, target, **options))
        else:
            result = replay(sink, target, **options)
    except (TypeError, ValueError) as exc:
        raise StoreError(str(exc)) from exc
    progress.finish()
    for letter_id, failure in list(result.failures.items())[:20]:
        print(
            _printable(f"failed {letter_id}: {type(failure).__name__}: {failure}"),
            file=err,
        )
    print(
        f"replayed {result.replayed}, failed {result.failed} (kept), "
        f"skipped {result.skipped} (kept)",
        file=out,
    )
    return 1 if result.failed else 0


def _purge(
    reading: _Reading, *, yes: bool, out: TextIO, err: TextIO, stdin: TextIO
) -> int:
    sink = reading.sink
    total = sink.count()
    listing = _Progress(err, "listing", total)
    ids = []
    if not yes:
        print(_header(), file=out)
    for done, letter in enumerate(reading(), 1):
        ids.append(letter.id)
        if not yes:
            print(_row(letter), file=out)
        listing(done, max(done, total))
    listing.finish()
    reading.check()
    if not yes:
        print(
            f"remove these {len(ids)} letters from {sink!r}? [y/N] ", end="", file=out
        )
        out.flush()
        if stdin.readline().strip().lower() not in {"y", "yes"}:
            print("nothing removed", file=out)
            return 1
    removing = _Progress(err, "removing", len(ids))
    removed = 0
    for start in range(0, len(ids), 1000):
        removed += sink.remove_many(ids[start : start + 1000])
        removing(min(start + 1000, len(ids)), len(ids))
    print(f"removed {removed} letters", file=out)
    return 0


def _act(
    sink: StoringSink,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stdin: TextIO,
) -> int:
    reading = _Reading(sink)
    with _reporting(reading, err):
        if args.action == "list":
            return _list(reading, args, out, err)
        if args.action == "show":
            return _show(reading, args.letter_id, out, err)
        if args.action == "replay":
            return _replay(sink, args, out, err)
        return _purge(reading, yes=args.yes, out=out, err=err, stdin=stdin)


def run(args: argparse.Namespace, out: TextIO, err: TextIO, stdin: TextIO) -> int:
    """Carry out the parsed ``dlq`` command; return the exit status."""
    try:
        sink = open_sink(args.sink, args.stream)
        try:
            return _act(sink, args, out, err, stdin)
        finally:
            if isinstance(sink, RedisStream):
                sink.close()
    except StoreError as exc:
        print(f"error: {exc}", file=err)
        return 2
    except ImportError as exc:  # an extra that is not installed
        print(f"error: {exc}", file=err)
        return 2
