"""Keep letters in a Redis stream (``XADD``, ``XRANGE``, ``XDEL``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self, cast

from fluxus._dead_letter import DeadLetter
from fluxus._extras import require
from fluxus._redis import check_url, close_sync, mask_password, sync_client
from fluxus._validate import non_empty_str, positive_int

from ._base import CorruptRecordWarning, SinkFull, StoringSink, check_limit, new_owner
from ._codec import decode, encode

if TYPE_CHECKING:
    import redis

_FIELD = "letter"
#: Seconds a Redis I/O of the sink may block before it fails.
TIMEOUT = 5.0
_PAGE = 500
#: The consumer group replayers claim letters through.
_GROUP = "fluxus-replay"
#: What a released claim's idle time is set to: long expired for anyone.
_RELEASED_IDLE_MS = 10 * 365 * 24 * 3600 * 1000

# XLEN and XADD in one step, so that two writers cannot both see room for
# the last letter.
_ADD_IF_ROOM = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
  return false
end
return redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
"""


class RedisStream(StoringSink):
    """Keep letters in a Redis stream, one entry per letter.

    Replayers claim letters through a consumer group (``XREADGROUP``, and
    ``XPENDING``/``XCLAIM`` for claims that expired), and acknowledge them
    (``XACK``) as they remove them.

    A letter is as durable as the server makes it: configure Redis'
    persistence (``appendonly yes``, ``appendfsync always``) for letters to
    survive a server crash. Needs ``pip install fluxus[redis]``.

    Args:
        url: A Redis URL (``redis://``, ``rediss://``, ``unix://``,
            ``redis+cluster://host:port[,...]``,
            ``redis+sentinel://host:port[,...]/service``) or a ready
            ``redis.Redis`` client.
        stream: The stream's key.
        maxlen: The most letters the stream may hold, or ``None``. When it
            is full, ``put`` raises :class:`~fluxus.sinks.SinkFull` rather
            than drop a letter...
        approximate_trim: ...unless this is ``True``: then Redis trims the
            oldest letters (``XADD MAXLEN ~``) to keep about *maxlen*.

    Raises:
        ValueError: If *url* is not a Redis URL, *maxlen* is not a positive
            int, or *approximate_trim* is given without it.
        ImportError: If ``redis`` is not installed.
    """

    def __init__(
        self,
        url: str | redis.Redis,
        *,
        stream: str = "fluxus:dead-letters",
        maxlen: int | None = None,
        approximate_trim: bool = False,
    ) -> None:
        if maxlen is not None:
            positive_int(maxlen, "maxlen")
        if approximate_trim and maxlen is None:
            msg = "maxlen must be an int >= 1 with approximate_trim=True, got None"
            raise ValueError(msg)
        non_empty_str(stream, "stream")
        require("redis", "redis", "fluxus.sinks.RedisStream")
        self._own_client = isinstance(url, str)
        if isinstance(url, str):
            check_url(url, "url")
            self.url: str = mask_password(url)
            # The one client factory: cluster and Sentinel URLs too.
            self.client: redis.Redis = sync_client(url, TIMEOUT)
        else:
            self.url = "<client>"
            self.client = url
        self.stream = stream
        self.maxlen = maxlen
        self.approximate_trim = approximate_trim
        self._add_if_room = self.client.register_script(_ADD_IF_ROOM)
        # Entry ids seen by letters(), so that replay removes in O(1).
        self._entries: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"<fluxus.sinks.RedisStream {self.url!r} stream={self.stream!r}>"

    def close(self) -> None:
        """Close the connections of the client the sink built from its URL.

        A client given to the sink is left to its owner. The sink may be
        used again: a closed client reconnects on its next command.
        """
        if self._own_client:
            close_sync(self.client)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def put(self, letter: DeadLetter) -> None:
        """Add *letter* to the stream.

        Raises:
            SinkFull: If the stream holds *maxlen* letters and trimming is off.
            redis.RedisError: If Redis cannot be reached.
        """
        record = encode(letter)
        if self.maxlen is None:
            self.client.xadd(self.stream, {_FIELD: record})
        elif self.approximate_trim:
            self.client.xadd(
                self.stream, {_FIELD: record}, maxlen=self.maxlen, approximate=True
            )
        elif not self._add_if_room(
            keys=[self.stream], args=[self.maxlen, _FIELD, record]
        ):
            msg = (
                f"dead letter stream {self.stream!r} holds maxlen={self.maxlen} "
                f"letters; letter {letter.id} was refused rather than drop one"
            )
            raise SinkFull(msg)

    def _entries_page(self, start: str | bytes) -> list[tuple[bytes, dict[bytes, Any]]]:
        page = self.client.xrange(self.stream, min=start, count=_PAGE)
        return cast("list[tuple[bytes, dict[bytes, Any]]]", page)

    def _letter(self, entry_id: bytes, fields: dict[bytes, Any]) -> DeadLetter | None:
        try:
            letter = decode(fields[_FIELD.encode()])
        except (KeyError, ValueError) as exc:
            warnings.warn(
                f"{self.stream}: entry {entry_id.decode()} is not a readable "
                f"dead letter and was skipped: {exc!r}",
                CorruptRecordWarning,
                stacklevel=3,
            )
            return None
        self._entries[letter.id] = entry_id
        return letter

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Yield the letters, oldest first, a page of entries at a time."""
        remaining = check_limit(limit)
        start: str | bytes = "-"
        while remaining is None or remaining > 0:
            page = self._entries_page(start)
            if not page:
                return
            for entry_id, fields in page:
                letter = self._letter(entry_id, fields)
                if letter is not None and (remaining is None or remaining > 0):
                    if remaining is not None:
                        remaining -= 1
                    yield letter
            start = b"(" + page[-1][0]

    def count(self) -> int:
        """Return how many letters the stream holds."""
        return int(self.client.xlen(self.stream))

    def _entry_ids(self, letter_ids: set[str]) -> list[bytes]:
        found = [self._entries.pop(x) for x in list(letter_ids) if x in self._entries]
        if len(found) < len(letter_ids):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CorruptRecordWarning)
                listed = list(self.letters())
            found.extend(
                self._entries.pop(letter.id)
                for letter in listed
                if letter.id in letter_ids and letter.id in self._entries
            )
        return found

    def remove(self, letter_id: str) -> bool:
        """Delete the letter *letter_id*; return whether it was stored."""
        return self.remove_many([letter_id]) == 1

    def remove_many(self, letter_ids: Iterable[str]) -> int:
        """Delete the letters *letter_ids*; return how many were stored."""
        entry_ids = self._entry_ids(set(letter_ids))
        removed = 0
        for start in range(0, len(entry_ids), _PAGE):
            removed += self._delete(entry_ids[start : start + _PAGE])
        return removed

    def _delete(self, entry_ids: list[bytes]) -> int:
        if not entry_ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.xack(self.stream, _GROUP, *entry_ids)  # 0 when there is no group
        pipe.xdel(self.stream, *entry_ids)
        return int(pipe.execute()[1])

    def claims(self, timeout: float) -> _StreamClaims:
        """Return a new replayer's claims: a consumer of the replay group."""
        return _StreamClaims(self, timeout)

    def clear(self) -> int:
        """Delete every letter; return how many there were."""
        removed = 0
        while page := self._entries_page("-"):
            removed += int(self.client.xdel(self.stream, *(e for e, _ in page)))
        self._entries.clear()
        return removed


def _timeout_of(consumer: str) -> int:
    """Return the claim timeout (ms) a replayer's consumer name carries."""
    _, _, timeout = consumer.rpartition(":")
    return int(timeout) if timeout.isdigit() else 0


class _StreamClaims:
    """Claims as a consumer group's pending entries.

    Expired claims are taken over with ``XCLAIM`` first, then new
    entries are read with ``XREADGROUP``; a released claim is handed back by
    setting its idle time far past any timeout (``XCLAIM ... IDLE``).
    """

    def __init__(self, sink: RedisStream, timeout: float) -> None:
        import redis  # noqa: PLC0415 - an optional dependency, present here

        self._sink = sink
        self._timeout_ms = max(1, int(timeout * 1000))
        self._owner = f"{new_owner()}:{self._timeout_ms}"
        self._cursor: bytes | str | None = "0-0"
        self._given: set[str] = set()
        try:
            sink.client.xgroup_create(sink.stream, _GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _expired(self, limit: int) -> list[tuple[bytes, dict[bytes, Any]]]:
        """Take over claims their holders let expire, oldest first.

        Each consumer's name carries its claim timeout, so a claim expires
        by its holder's timeout, whoever looks; ``XCLAIM`` with that idle
        time as the minimum is atomic, so two takers never both get one.
        """
        client: Any = self._sink.client  # redis-py types its replies loosely
        stream = self._sink.stream
        taken: list[tuple[bytes, dict[bytes, Any]]] = []
        while self._cursor is not None and len(taken) < limit:
            pending = client.xpending_range(
                stream, _GROUP, min=self._cursor, max="+", count=_PAGE
            )
            if not pending:
                self._cursor = None
                break
            self._cursor = b"(" + pending[-1]["message_id"]
            for entry in pending:
                holder = entry["consumer"].decode()
                timeout = _timeout_of(holder)
                if holder == self._owner or entry["time_since_delivered"] < timeout:
                    continue
                claimed = client.xclaim(
                    stream, _GROUP, self._owner, timeout, [entry["message_id"]]
                )
                taken.extend((e, f) for e, f in claimed if f)
                if len(taken) >= limit:
                    self._cursor = b"(" + entry["message_id"]
                    break
        return taken

    def _new(self, limit: int) -> list[tuple[bytes, dict[bytes, Any]]]:
        client: Any = self._sink.client
        reply = client.xreadgroup(
            _GROUP, self._owner, {self._sink.stream: ">"}, count=limit
        )
        return list(reply[0][1]) if reply else []

    def take(self, limit: int) -> list[DeadLetter]:
        """Claim up to *limit* letters: expired claims first, then new entries."""
        taken: list[DeadLetter] = []
        while len(taken) < limit:
            entries = self._expired(limit - len(taken))
            if not entries and self._cursor is None:
                entries = self._new(limit - len(taken))
                if not entries:
                    break
            for entry_id, fields in entries:
                letter = self._sink._letter(entry_id, fields)  # noqa: SLF001 - its own sink
                if letter is None:
                    self._sink.client.xack(self._sink.stream, _GROUP, entry_id)
                elif letter.id not in self._given:
                    self._given.add(letter.id)
                    taken.append(letter)
        return taken

    def release(self, letter_id: str) -> None:
        """Hand the claim back: its idle time set past any claim timeout."""
        sink = self._sink
        entry_id = sink._entries.get(letter_id)  # noqa: SLF001 - its own sink
        if entry_id is not None:
            sink.client.xclaim(
                sink.stream,
                _GROUP,
                self._owner,
                0,
                [entry_id],
                idle=_RELEASED_IDLE_MS,
                justid=True,
            )

    def remove(self, letter_ids: list[str]) -> int:
        """Acknowledge and delete the letters, whose calls succeeded."""
        return self._sink.remove_many(letter_ids)

    def flush(self) -> None:
        """Nothing to do: Redis' own persistence settings decide."""
