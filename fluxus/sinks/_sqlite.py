"""Keep letters in a SQLite database (stdlib :mod:`sqlite3`, WAL mode)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from fluxus._dead_letter import DeadLetter
from fluxus._validate import to_seconds

from ._base import (
    CorruptRecordWarning,
    StoringSink,
    check_limit,
    check_path,
    check_writable,
    new_owner,
)
from ._codec import decode, encode

#: Rows read per query while streaming, so memory stays flat.
_PAGE = 500


class SQLite(StoringSink):
    """Keep letters in a SQLite database, one row per letter.

    Each thread uses its own connection, so the sink is safe to share
    between threads, and processes share the database through SQLite's own
    locking (WAL mode: readers never block the writer). Each ``put`` is
    committed with ``synchronous=FULL`` before it returns. The database is
    created readable by its owner only. A replayer claims letters by
    setting their ``claimed_until`` column in one transaction.

    Args:
        path: The database file; created on the first letter.
        table: The table holding the letters.
        timeout: Seconds to wait for another writer's lock.

    Raises:
        ValueError: If *table* is not an SQL identifier.
        OSError: If the database (or its directory) cannot be written.
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
            raise (ValueError if isinstance(table, str) else TypeError)(msg)
        self.path: Path = check_path(path)
        self.table = table
        self.timeout: float = to_seconds(timeout, "timeout")
        check_writable(self.path)
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
        if not exists:
            if not create:
                return False
            _switch_to_wal(connection, self.timeout)
            connection.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} ("
                "seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
                "failed_at TEXT NOT NULL, function TEXT NOT NULL, "
                "error_type TEXT NOT NULL, record TEXT NOT NULL, "
                "claimed_until REAL, claimed_by TEXT)"
            )
            return True
        columns = {
            row[1] for row in connection.execute(f"PRAGMA table_info({self.table})")
        }
        for column in ("claimed_until REAL", "claimed_by TEXT"):
            if column.split()[0] not in columns:  # a store made before claims
                with contextlib.suppress(sqlite3.OperationalError):  # a racing peer
                    connection.execute(f"ALTER TABLE {self.table} ADD COLUMN {column}")
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

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Yield the letters, oldest first, reading a page of rows at a time.

        None if the database does not exist; at most *limit* of them.
        """
        remaining = check_limit(limit)
        seq = 0
        while remaining is None or remaining > 0:
            page = _PAGE if remaining is None else min(_PAGE, remaining)
            with self._connect(create=False) as connection:
                if connection is None:
                    return
                rows = connection.execute(
                    f"SELECT seq, record FROM {self.table} WHERE seq > ? "  # noqa: S608 - an identifier, checked
                    "ORDER BY seq LIMIT ?",
                    (seq, page),
                ).fetchall()
            for seq, record in rows:
                letter = self._decode(seq, record)
                if letter is not None:
                    if remaining is not None:
                        remaining -= 1
                    yield letter
            if len(rows) < page:
                return

    def _decode(self, seq: int, record: str) -> DeadLetter | None:
        try:
            return decode(record)
        except ValueError as exc:
            warnings.warn(
                f"{self.path}: row {seq} is not a readable dead letter and "
                f"was skipped: {exc}",
                CorruptRecordWarning,
                stacklevel=3,
            )
            return None

    def count(self) -> int:
        """Return how many letters are stored."""
        with self._connect(create=False) as connection:
            if connection is None:
                return 0
            (count,) = connection.execute(
                f"SELECT COUNT(*) FROM {self.table}"  # noqa: S608 - an identifier, checked
            ).fetchone()
            return int(count)

    def claims(self, timeout: float) -> _SQLiteClaims:
        """Return a new replayer's claims, each lasting *timeout* seconds."""
        return _SQLiteClaims(self, timeout)

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

    def remove_many(self, letter_ids: Iterable[str]) -> int:
        """Delete the letters *letter_ids* in one transaction; return how many."""
        ids = [(letter_id,) for letter_id in letter_ids]
        with self._connect(create=False) as connection:
            if connection is None:
                return 0
            connection.execute("BEGIN IMMEDIATE")
            try:
                removed = sum(
                    connection.execute(
                        f"DELETE FROM {self.table} WHERE id = ?",  # noqa: S608 - an identifier, checked
                        row,
                    ).rowcount
                    for row in ids
                )
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            return removed

    def clear(self) -> int:
        """Delete every letter; return how many there were."""
        with self._connect(create=False) as connection:
            if connection is None:
                return 0
            return connection.execute(f"DELETE FROM {self.table}").rowcount  # noqa: S608 - an identifier, checked


class _SQLiteClaims:
    """Claims as a claimed-until column, set for a page of rows in one transaction.

    A replayer has a connection of its own with ``synchronous=NORMAL``: its
    claims and removals are committed at once (they survive the process)
    and synced by :meth:`flush`, one fsync for many letters.
    """

    def __init__(self, sink: SQLite, timeout: float) -> None:
        self._sink = sink
        self._timeout = timeout
        self._owner = new_owner()
        self._after = 0  # the rows before this one were offered already
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection | None:
        if self._db is None:
            with self._sink._connect(create=False) as ready:  # noqa: SLF001 - its own sink
                if ready is None:  # no store (yet)
                    return None
            self._db = sqlite3.connect(
                self._sink.path,
                timeout=self._sink.timeout,
                isolation_level=None,
                check_same_thread=False,  # the async driver uses worker threads
            )
            self._db.execute("PRAGMA synchronous=NORMAL")
        return self._db

    def __del__(self) -> None:
        if self._db is not None:
            self._db.close()

    def take(self, limit: int) -> list[DeadLetter]:
        """Claim up to *limit* unclaimed (or expired) letters, oldest first."""
        table = self._sink.table
        connection = self._connection()
        if connection is None:
            return []
        now = time.time()
        connection.execute("BEGIN IMMEDIATE")
        try:
            rows = connection.execute(
                f"SELECT seq, record FROM {table} WHERE seq > ? AND "  # noqa: S608 - an identifier, checked
                "(claimed_until IS NULL OR claimed_until <= ?) ORDER BY seq LIMIT ?",
                (self._after, now, limit),
            ).fetchall()
            connection.executemany(
                f"UPDATE {table} SET claimed_until = ?, claimed_by = ? "  # noqa: S608 - an identifier, checked
                "WHERE seq = ?",
                [(now + self._timeout, self._owner, seq) for seq, _ in rows],
            )
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if rows:
            self._after = rows[-1][0]
        letters = (self._sink._decode(seq, record) for seq, record in rows)  # noqa: SLF001 - its own sink
        return [letter for letter in letters if letter is not None]

    def release(self, letter_id: str) -> None:
        """Clear our claim on *letter_id*."""
        connection = self._connection()
        if connection is not None:
            connection.execute(
                f"UPDATE {self._sink.table} SET claimed_until = NULL "  # noqa: S608 - an identifier, checked
                "WHERE id = ? AND claimed_by = ?",
                (letter_id, self._owner),
            )

    def remove(self, letter_ids: list[str]) -> int:
        """Delete the letters, whose calls succeeded; :meth:`flush` syncs it."""
        connection = self._connection()
        if connection is None:
            return 0
        return sum(
            connection.execute(
                f"DELETE FROM {self._sink.table} WHERE id = ?",  # noqa: S608 - an identifier, checked
                (letter_id,),
            ).rowcount
            for letter_id in letter_ids
        )

    def flush(self) -> None:
        """Sync the write-ahead log, where the removals were committed."""
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(f"{self._sink.path}-wal", os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


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
