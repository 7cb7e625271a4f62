"""Append letters to a JSON Lines file, one fsynced record per line."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from fluxus._dead_letter import DeadLetter

from ._base import (
    CorruptRecordWarning,
    StoringSink,
    check_limit,
    check_path,
    check_writable,
    new_owner,
)
from ._codec import decode, encode

if sys.platform != "win32":
    import fcntl


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _fsync_directory(path: Path) -> None:
    # The new name of a file is durable only once its directory is synced.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_ID_PREFIX = b'{"v": 1, "id": "'
#: Removals are written as tombstones; the file is rewritten without the
#: removed letters once they number this many and at least half its lines,
#: so that a removal costs an append, and the rewrites O(1) per letter
#: amortised (benchmarks/bench_replay.py measures it).
_COMPACT_AFTER = 1024


def _record_id(line: bytes) -> str | None:
    """Return the id of the letter on *line* without parsing all of it."""
    if line.startswith(_ID_PREFIX):
        end = line.find(b'"', len(_ID_PREFIX))
        if end > 0:
            return line[len(_ID_PREFIX) : end].decode("ascii", "replace")
    try:
        found = json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None
    return found if isinstance(found, str) else None


class _Ledger:
    """What the claims file says: the letters removed and the claims held.

    The claims file beside the letters is append-only between compactions,
    so a reader catches up by reading only what was appended since.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything read: the claims file is new or gone."""
        self.inode: tuple[int, int] | None = None
        self.offset = 0
        self.removed: set[str] = set()
        self.claims: dict[str, tuple[float, str]] = {}

    def apply(self, line: bytes) -> None:
        try:
            record = json.loads(line)
        except ValueError:
            return  # a claim record torn by a crash: the claim never held
        if not isinstance(record, dict):
            return
        if "r" in record:
            self.removed.add(str(record["r"]))
            self.claims.pop(str(record["r"]), None)
        elif "c" in record:
            self.claims[str(record["c"])] = (float(record["u"]), str(record["o"]))

    def held_by_another(self, letter_id: str, owner: str, now: float) -> bool:
        claim = self.claims.get(letter_id)
        return claim is not None and claim[0] > now and claim[1] != owner


class JsonlFile(StoringSink):
    """Keep letters in a JSON Lines file, safe for threads and processes.

    Each ``put`` appends one line under an exclusive ``flock`` and fsyncs it
    before returning, so an acknowledged letter survives a crash. A crash in
    the middle of a write leaves at most that one line torn: readers skip it
    with a :class:`~fluxus.sinks.CorruptRecordWarning`, and the next append
    starts on a fresh line. ``remove`` rewrites the file into a temporary
    file and renames it over the old one, so readers see the old or the new
    file, never half of one. The file is created readable by its owner only.

    ``remove`` appends a tombstone to a claims file beside it (``<name>.claims``),
    which also holds the replayers' claims; the letters file is rewritten
    without the removed letters once they make up half of it. Readers
    stream the file, skipping removed letters, in flat memory.

    Args:
        path: The file; created on the first letter.
        fsync: Sync each record to the disk before ``put`` returns. Turning
            it off trades durability on power loss for speed.

    Raises:
        NotImplementedError: On Windows, which lacks ``flock``.
        OSError: If the file (or its directory) cannot be written.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        if sys.platform == "win32":  # pragma: no cover - POSIX file locking
            msg = "fluxus.sinks.JsonlFile needs POSIX file locking (flock)"
            raise NotImplementedError(msg)
        self.path: Path = check_path(path)
        self.fsync = fsync
        self.claims_path: Path = self.path.with_name(self.path.name + ".claims")
        check_writable(self.path)
        self._ledger = _Ledger()
        self._ledger_lock = threading.Lock()
        self._next_check = _COMPACT_AFTER

    def __repr__(self) -> str:
        return f"<fluxus.sinks.JsonlFile {str(self.path)!r}>"

    def _open_locked(self, flags: int, operation: int) -> int:
        """Open the file and lock it, again if it was replaced meanwhile."""
        while True:
            fd = os.open(self.path, flags | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, operation)
                opened = os.fstat(fd)
                current = self.path.stat()
            except FileNotFoundError:
                current = None  # deleted meanwhile: open it (or fail) afresh
            except BaseException:
                os.close(fd)
                raise
            if current is not None and (opened.st_dev, opened.st_ino) == (
                current.st_dev,
                current.st_ino,
            ):
                return fd
            # A remove() renamed a new file over the one we opened: writing
            # to the old one would lose the letter.
            os.close(fd)

    def put(self, letter: DeadLetter) -> None:
        """Append *letter* and sync it to the disk.

        Raises:
            OSError: If the file cannot be written (the policy reports it
                through ``on_handler_error``).
        """
        line = (encode(letter) + "\n").encode()
        created = not self.path.exists()
        fd = self._open_locked(os.O_RDWR | os.O_APPEND | os.O_CREAT, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a crash tore the last record
            try:
                _write_all(fd, line)
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                # A full disk (ENOSPC) can take part of the record: cut it
                # off again, so no reader meets half a letter.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)  # and so unlock
        if created and self.fsync:
            _fsync_directory(self.path.parent)

    def _locked(self, operation: int) -> int | None:
        flags = os.O_RDWR if operation == fcntl.LOCK_EX else os.O_RDONLY
        try:
            return self._open_locked(flags, operation)
        except FileNotFoundError:
            return None

    def _warn(self, where: str, exc: Exception) -> None:
        warnings.warn(
            f"{self.path}: {where} is not a readable dead letter "
            f"(torn by a crash?) and was skipped: {exc}",
            CorruptRecordWarning,
            stacklevel=4,
        )

    def _catch_up(self) -> _Ledger:
        """Read what was appended to the claims file; call with the lock held."""
        ledger = self._ledger
        try:
            fd = os.open(self.claims_path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if ledger.inode is not None:
                ledger.reset()
            return ledger
        try:
            info = os.fstat(fd)
            if (info.st_dev, info.st_ino) != ledger.inode:
                ledger.reset()
                ledger.inode = (info.st_dev, info.st_ino)
            data = os.pread(fd, max(0, info.st_size - ledger.offset), ledger.offset)
        finally:
            os.close(fd)
        end = data.rfind(b"\n") + 1  # a torn last line is not a record yet
        for line in data[:end].split(b"\n"):
            if line:
                ledger.apply(line)
        ledger.offset += end
        return ledger

    def _note(self, records: Iterable[dict[str, object]], *, sync: bool) -> None:
        """Append *records* to the claims file; call with the lock held."""
        payload = b"".join(
            json.dumps(record, ensure_ascii=True).encode() + b"\n" for record in records
        )
        if not payload:
            return
        fd = os.open(
            self.claims_path,
            os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
            0o600,
        )
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                payload = b"\n" + payload
            _write_all(fd, payload)
            if sync and self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _lines(
        self, fd: int, start: int = 0, end: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset after the line, line)`` for the lines of *fd*.

        Call with the lock held, or with *end* read under it: writers append
        whole lines under the lock, so an unfinished last line was torn by a
        crash (and fails to decode, with a warning).
        """
        with open(os.dup(fd), "rb", buffering=1 << 16) as file:  # noqa: PTH123 - an fd
            file.seek(start)
            offset = start
            for line in file:
                if end is not None and offset + len(line) > end:
                    return  # appended after the snapshot
                offset += len(line)
                yield offset, line

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Yield the letters, oldest first, streaming the file.

        None if the file does not exist; at most *limit* of them. The
        letters are those stored when the iteration starts.
        """
        remaining = check_limit(limit)
        fd = self._locked(fcntl.LOCK_SH)
        if fd is None:
            return
        try:
            with self._ledger_lock:
                removed = set(self._catch_up().removed)
            size = os.fstat(fd).st_size
            fcntl.flock(fd, fcntl.LOCK_UN)  # the inode is never rewritten in place
            for number, (_, line) in enumerate(self._lines(fd, end=size), 1):
                if remaining is not None and remaining <= 0:
                    return
                if not line.strip() or _record_id(line) in removed:
                    continue
                try:
                    letter = decode(line)
                except ValueError as exc:
                    self._warn(f"line {number}", exc)
                    continue
                if remaining is not None:
                    remaining -= 1
                yield letter
        finally:
            os.close(fd)

    def count(self) -> int:
        """Return how many letters are stored."""
        fd = self._locked(fcntl.LOCK_SH)
        if fd is None:
            return 0
        try:
            with self._ledger_lock:
                removed = self._catch_up().removed
                return sum(
                    1
                    for _, line in self._lines(fd)
                    if (found := _record_id(line)) and found not in removed
                )
        finally:
            os.close(fd)

    def remove(self, letter_id: str) -> bool:
        """Remove the letter *letter_id*; return whether it was stored."""
        return self.remove_many([letter_id]) == 1

    def remove_many(self, letter_ids: Iterable[str]) -> int:
        """Remove the letters *letter_ids*; return how many were stored."""
        wanted = set(letter_ids)
        fd = self._locked(fcntl.LOCK_EX)
        if fd is None:
            return 0
        try:
            with self._ledger_lock:
                ledger = self._catch_up()
                wanted -= ledger.removed
                found = []
                for _, line in self._lines(fd):
                    letter_id = _record_id(line)
                    if letter_id in wanted:
                        found.append(letter_id)
                        wanted.discard(letter_id)
                self._tombstones(fd, found)
                return len(found)
        finally:
            os.close(fd)

    def _tombstones(self, fd: int, letter_ids: list[str], *, sync: bool = True) -> None:
        """Record *letter_ids* as removed; call with both locks held."""
        self._note(({"r": letter_id} for letter_id in letter_ids), sync=sync)
        ledger = self._catch_up()
        if len(ledger.removed) >= self._next_check:
            lines = sum(1 for _ in self._lines(fd))
            if 2 * len(ledger.removed) >= lines:
                self._compact(fd, ledger)
            else:
                self._next_check = len(ledger.removed) + _COMPACT_AFTER

    def _compact(self, fd: int, ledger: _Ledger) -> None:
        """Rewrite the file without the removed letters, and the claims file."""
        removed = ledger.removed
        kept = (
            line
            for _, line in self._lines(fd)
            if line.strip() and _record_id(line) not in removed
        )
        self._replace(fd, kept)
        now = time.time()
        live = [
            {"c": letter_id, "u": until, "o": owner}
            for letter_id, (until, owner) in ledger.claims.items()
            if until > now
        ]
        self._replace_claims(live)
        self._next_check = _COMPACT_AFTER

    def _replace_claims(self, records: list[dict[str, object]]) -> None:
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.claims_path.name}.", suffix=".tmp"
        )
        try:
            with open(fd, "wb") as file:  # noqa: PTH123 - an fd
                file.writelines(
                    json.dumps(record, ensure_ascii=True).encode() + b"\n"
                    for record in records
                )
            Path(temporary).replace(self.claims_path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        self._ledger.reset()  # a new file: read it afresh

    def claims(self, timeout: float) -> _JsonlClaims:
        """Return a new replayer's claims, each lasting *timeout* seconds."""
        return _JsonlClaims(self, timeout)

    def clear(self) -> int:
        """Remove every letter; return how many there were."""
        fd = self._locked(fcntl.LOCK_EX)
        if fd is None:
            return 0
        try:
            with self._ledger_lock:
                removed = self._catch_up().removed
                count = sum(
                    1
                    for _, line in self._lines(fd)
                    if (found := _record_id(line)) and found not in removed
                )
                self._replace(fd, [])
                self._replace_claims([])
            return count
        finally:
            os.close(fd)

    def _replace(self, locked_fd: int, lines: Iterable[bytes]) -> None:
        """Put *content* in place of the file whose lock we hold, atomically."""
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            try:
                os.fchmod(fd, os.fstat(locked_fd).st_mode & 0o777)
                with open(os.dup(fd), "wb", buffering=1 << 16) as file:  # noqa: PTH123 - an fd
                    file.writelines(lines)
                os.fsync(fd)
            finally:
                os.close(fd)
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)


class _JsonlClaims:
    """Claims as records in the claims file, taken under the file's lock."""

    def __init__(self, sink: JsonlFile, timeout: float) -> None:
        self._sink = sink
        self._timeout = timeout
        self._owner = new_owner()
        self._given: set[str] = set()
        self._inode: tuple[int, int] | None = None
        self._offset = 0

    def take(self, limit: int) -> list[DeadLetter]:
        """Claim up to *limit* letters, oldest first, past those already given."""
        sink = self._sink
        fd = sink._locked(fcntl.LOCK_EX)  # noqa: SLF001 - its own sink
        if fd is None:
            return []
        taken: list[DeadLetter] = []
        try:
            with sink._ledger_lock:  # noqa: SLF001 - its own sink
                ledger = sink._catch_up()  # noqa: SLF001 - its own sink
                info = os.fstat(fd)
                if (info.st_dev, info.st_ino) != self._inode:
                    self._inode, self._offset = (info.st_dev, info.st_ino), 0
                now = time.time()
                for offset, line in sink._lines(fd, self._offset):  # noqa: SLF001 - its own sink
                    self._offset = offset
                    letter_id = _record_id(line)
                    if (
                        letter_id is None
                        or letter_id in self._given
                        or letter_id in ledger.removed
                        or ledger.held_by_another(letter_id, self._owner, now)
                    ):
                        continue
                    try:
                        taken.append(decode(line))
                    except ValueError as exc:
                        sink._warn(f"byte {offset - len(line)}", exc)  # noqa: SLF001 - its own sink
                        continue
                    self._given.add(letter_id)
                    if len(taken) >= limit:
                        break
                until = now + self._timeout
                sink._note(  # noqa: SLF001 - its own sink
                    ({"c": x.id, "u": until, "o": self._owner} for x in taken),
                    sync=False,
                )
                sink._catch_up()  # noqa: SLF001 - its own sink
        finally:
            os.close(fd)
        return taken

    def release(self, letter_id: str) -> None:
        """Give our claim on *letter_id* back."""
        sink = self._sink
        fd = sink._locked(fcntl.LOCK_EX)  # noqa: SLF001 - its own sink
        if fd is None:
            return
        try:
            with sink._ledger_lock:  # noqa: SLF001 - its own sink
                ledger = sink._catch_up()  # noqa: SLF001 - its own sink
                if ledger.claims.get(letter_id, (0.0, ""))[1] == self._owner:
                    sink._note(  # noqa: SLF001 - its own sink
                        [{"c": letter_id, "u": 0.0, "o": self._owner}], sync=False
                    )
        finally:
            os.close(fd)

    def flush(self) -> None:
        """Sync the claims file, where the removals were written."""
        if self._sink.fsync:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(self._sink.claims_path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def remove(self, letter_ids: list[str]) -> int:
        """Tombstone the letters, whose calls succeeded; :meth:`flush` syncs it."""
        sink = self._sink
        fd = sink._locked(fcntl.LOCK_EX)  # noqa: SLF001 - its own sink
        if fd is None:
            return 0
        try:
            with sink._ledger_lock:  # noqa: SLF001 - its own sink
                removed = sink._catch_up().removed  # noqa: SLF001 - its own sink
                fresh = [x for x in dict.fromkeys(letter_ids) if x not in removed]
                sink._tombstones(fd, fresh, sync=False)  # noqa: SLF001 - its own sink
                return len(fresh)
        finally:
            os.close(fd)
