"""Append letters to a JSON Lines file, one fsynced record per line."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

from fluxus._dead_letter import DeadLetter

from ._base import CorruptRecordWarning, StoringSink
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


def _record_id(line: bytes) -> object:
    try:
        return json.loads(line).get("id")
    except (ValueError, AttributeError):
        return None


class JsonlFile(StoringSink):
    """Keep letters in a JSON Lines file, safe for threads and processes.

    Each ``put`` appends one line under an exclusive ``flock`` and fsyncs it
    before returning, so an acknowledged letter survives a crash. A crash in
    the middle of a write leaves at most that one line torn: readers skip it
    with a :class:`~fluxus.sinks.CorruptRecordWarning`, and the next append
    starts on a fresh line. ``remove`` rewrites the file into a temporary
    file and renames it over the old one, so readers see the old or the new
    file, never half of one. The file is created readable by its owner only.

    Args:
        path: The file; created on the first letter.
        fsync: Sync each record to the disk before ``put`` returns. Turning
            it off trades durability on power loss for speed.

    Raises:
        NotImplementedError: On Windows, which lacks ``flock``.
    """

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = True) -> None:
        if sys.platform == "win32":  # pragma: no cover - POSIX file locking
            msg = "fluxus.sinks.JsonlFile needs POSIX file locking (flock)"
            raise NotImplementedError(msg)
        self.path: Path = Path(path)
        self.fsync = fsync

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

    def _read(self, operation: int) -> tuple[int, bytes] | None:
        flags = os.O_RDWR if operation == fcntl.LOCK_EX else os.O_RDONLY
        try:
            fd = self._open_locked(flags, operation)
        except FileNotFoundError:
            return None
        try:
            return fd, _read_all(fd)
        except BaseException:
            os.close(fd)
            raise

    def _parse(self, data: bytes) -> Iterator[DeadLetter]:
        for number, line in enumerate(data.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                yield decode(line)
            except ValueError as exc:
                warnings.warn(
                    f"{self.path}: line {number} is not a readable dead letter "
                    f"(torn by a crash?) and was skipped: {exc}",
                    CorruptRecordWarning,
                    stacklevel=3,
                )

    def letters(self) -> list[DeadLetter]:
        """Return the letters, oldest first; none if the file does not exist."""
        read = self._read(fcntl.LOCK_SH)
        if read is None:
            return []
        fd, data = read
        os.close(fd)
        return list(self._parse(data))

    def remove(self, letter_id: str) -> bool:
        """Remove the letter *letter_id*; return whether it was stored."""
        read = self._read(fcntl.LOCK_EX)
        if read is None:
            return False
        fd, data = read
        try:
            lines = data.split(b"\n")
            for index, line in enumerate(lines):
                if line.strip() and _record_id(line) == letter_id:
                    del lines[index]
                    self._replace(fd, b"\n".join(lines))
                    return True
            return False
        finally:
            os.close(fd)

    def clear(self) -> int:
        """Remove every letter; return how many there were."""
        read = self._read(fcntl.LOCK_EX)
        if read is None:
            return 0
        fd, data = read
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CorruptRecordWarning)
                count = sum(1 for _ in self._parse(data))
            self._replace(fd, b"")
            return count
        finally:
            os.close(fd)

    def _replace(self, locked_fd: int, content: bytes) -> None:
        """Put *content* in place of the file whose lock we hold, atomically."""
        fd, temporary = tempfile.mkstemp(
            dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp"
        )
        try:
            try:
                os.fchmod(fd, os.fstat(locked_fd).st_mode & 0o777)
                _write_all(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        _fsync_directory(self.path.parent)
