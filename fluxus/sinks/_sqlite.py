"""Keep letters in a SQLite database (stdlib :mod:`sqlite3`, WAL mode)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from fluxus._dead_letter import DeadLetter
from fluxus._validate import to_seconds

from ._base import CorruptRecordWarning, StoringSink
from ._codec import decode, encode


class SQLite(StoringSink):
    """Keep letters in a SQLite database, one row per letter.

    Each thread uses its own connection, so the sink is safe to share
    between threads, and processes share the database through SQLite's own
    locking (WAL mode: readers never block the writer). Each ``put`` is
    committed with ``synchronous=FULL`` before it returns. The database is
    created readable by its owner only.

    Args:
        path: The database file; created on the first letter.
        table: The table holding the letters.
        timeout: Seconds to wait for another writer's lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        table: str = "fluxus_dead_letters",
        timeout: float = 30.0,
    ) -> None:
        if not isinstance(table, str) or not table.isidentifier():
            msg = f"table must be an SQL identifier (letters, digits, _), got {table!r}"
            raise ValueError(msg)
        self.path: Path = Path(path)
        self.table = table
        self.timeout: float = to_seconds(timeout, "timeout")
        self._ready_inode: int | None = None
        self._local = threading.local()
        self._inherited: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"<fluxus.sinks.SQLite {str(self.path)!r} table={self.table!r}>"

    @contextlib.contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection | None]:
        """Yield this thread's connection, or ``None`` if there is no store."""
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            if not create:
                yield None
                return
            # sqlite3 would create it world-readable; the -wal and -shm files
            # SQLite adds later copy the database's permissions.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
            inode = self.path.stat().st_ino
        connection = self._connection((os.getpid(), inode))
        try:
            if self._ready_inode != inode:
                if not self._prepare(connection, create=create):
                    yield None
                    return
                self._ready_inode = inode
            yield connection
        except sqlite3.Error:
            self._local.connection = None  # start afresh after any trouble
            connection.close()
            raise

    def _connection(self, key: tuple[int, int]) -> sqlite3.Connection:
        # One connection per thread, kept open: closing the last connection
        # checkpoints the WAL, which would cost every letter a second fsync.
        # A new process (fork) or a new file (deleted, replaced) needs a new
        # connection; a forked child must not close its parent's.
        local = self._local
        connection: sqlite3.Connection | None = getattr(local, "connection", None)
        if connection is not None and local.key == key:
            return connection
        if connection is not None:
            if local.key[0] == key[0]:
                connection.close()
            else:
                self._inherited.append(connection)
        connection = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None
        )
        connection.execute("PRAGMA synchronous=FULL")
        local.connection, local.key = connection, key
        return connection

    def _prepare(self, connection: sqlite3.Connection, *, create: bool) -> bool:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (self.table,),
        ).fetchone()
        if exists:
            return True
        if not create:
            return False
        _switch_to_wal(connection, self.timeout)
        connection.execute(
            f"CREATE TABLE IF NOT EXISTS {self.table} ("
            "seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
            "failed_at TEXT NOT NULL, function TEXT NOT NULL, "
            "error_type TEXT NOT NULL, record TEXT NOT NULL)"
        )
        return True

    def put(self, letter: DeadLetter) -> None:
        """Insert *letter* and commit it.

        Raises:
            sqlite3.Error: If the database cannot be written.
            OSError: If the file cannot be created.
        """
        record = encode(letter)
        with self._connect(create=True) as connection:
            assert connection is not None  # noqa: S101 - create=True always connects
            connection.execute(
                f"INSERT INTO {self.table} "  # noqa: S608 - an identifier, checked
                "(id, failed_at, function, error_type, record) VALUES (?, ?, ?, ?, ?)",
                (
                    letter.id,
                    letter.failed_at.isoformat(),
                    letter.function,
                    letter.error_type,
                    record,
                ),
            )

    def letters(self) -> list[DeadLetter]:
        """Return the letters, oldest first; none if the database does not exist."""
        with self._connect(create=False) as connection:
            if connection is None:
                return []
            rows = connection.execute(
                f"SELECT seq, record FROM {self.table} ORDER BY seq"  # noqa: S608 - an identifier, checked
            ).fetchall()
        letters = []
        for seq, record in rows:
            try:
                letters.append(decode(record))
            except ValueError as exc:
                warnings.warn(
                    f"{self.path}: row {seq} is not a readable dead letter and "
                    f"was skipped: {exc}",
                    CorruptRecordWarning,
                    stacklevel=2,
                )
        return letters

    def remove(self, letter_id: str) -> bool:
        """Delete the letter *letter_id*; return whether it was stored."""
        with self._connect(create=False) as connection:
            if connection is None:
                return False
            cursor = connection.execute(
                f"DELETE FROM {self.table} WHERE id = ?",  # noqa: S608 - an identifier, checked
                (letter_id,),
            )
            return cursor.rowcount > 0

    def clear(self) -> int:
        """Delete every letter; return how many there were."""
        with self._connect(create=False) as connection:
            if connection is None:
                return 0
            return connection.execute(f"DELETE FROM {self.table}").rowcount  # noqa: S608 - an identifier, checked


def _switch_to_wal(connection: sqlite3.Connection, timeout: float) -> None:
    """Put the database in WAL mode, waiting out other processes doing the same.

    Changing the journal mode needs an exclusive lock, and SQLite answers
    "database is locked" at once, without its busy handler, while another
    process creating the same store holds it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
        else:
            return
