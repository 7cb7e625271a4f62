"""Keep letters in a Redis stream (``XADD``, ``XRANGE``, ``XDEL``)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

from fluxus._dead_letter import DeadLetter
from fluxus._redis import check_url, mask_password, sync_client

from ._base import CorruptRecordWarning, SinkFull, StoringSink
from ._codec import decode, encode

if TYPE_CHECKING:
    import redis

_FIELD = "letter"
_PAGE = 500
#: Seconds a Redis I/O of the sink may block.
_TIMEOUT = 10.0

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
        ValueError: If *maxlen* is not a positive int, or *approximate_trim*
            is given without it.
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
        if maxlen is not None and (
            not isinstance(maxlen, int) or isinstance(maxlen, bool) or maxlen < 1
        ):
            msg = f"maxlen must be a positive int or None, got {maxlen!r}"
            raise ValueError(msg)
        if approximate_trim and maxlen is None:
            msg = "approximate_trim=True needs a maxlen to trim to"
            raise ValueError(msg)
        if not isinstance(stream, str) or not stream:
            msg = f"stream must be a non-empty string, got {stream!r}"
            raise ValueError(msg)
        try:
            import redis  # noqa: F401, PLC0415 - an optional dependency
        except ImportError as exc:  # pragma: no cover - the test extra has redis
            msg = "fluxus.sinks.RedisStream needs redis: pip install 'fluxus[redis]'"
            raise ImportError(msg) from exc
        if isinstance(url, str):
            self.url = mask_password(url)
            self.client: redis.Redis = sync_client(check_url(url, "url"), _TIMEOUT)
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

    def _scan(self) -> list[tuple[bytes, dict[bytes, Any]]]:
        entries = []
        start: str | bytes = "-"
        while page := self._entries_page(start):
            entries.extend(page)
            start = b"(" + page[-1][0]
        return entries

    def letters(self) -> list[DeadLetter]:
        """Return the letters, oldest first."""
        letters = []
        for entry_id, fields in self._scan():
            try:
                letter = decode(fields[_FIELD.encode()])
            except (KeyError, ValueError) as exc:
                warnings.warn(
                    f"{self.stream}: entry {entry_id.decode()} is not a readable "
                    f"dead letter and was skipped: {exc!r}",
                    CorruptRecordWarning,
                    stacklevel=2,
                )
                continue
            self._entries[letter.id] = entry_id
            letters.append(letter)
        return letters

    def remove(self, letter_id: str) -> bool:
        """Delete the letter *letter_id*; return whether it was stored."""
        entry_id = self._entries.pop(letter_id, None)
        if entry_id is not None and self.client.xdel(self.stream, entry_id):
            return True
        for entry_id, fields in self._scan():
            record = fields.get(_FIELD.encode(), b"")
            if letter_id.encode() in record:
                try:
                    found = decode(record).id == letter_id
                except ValueError:
                    continue
                if found:
                    return bool(self.client.xdel(self.stream, entry_id))
        return False

    def clear(self) -> int:
        """Delete every letter; return how many there were."""
        removed = 0
        while page := self._entries_page("-"):
            removed += int(self.client.xdel(self.stream, *(e for e, _ in page)))
        self._entries.clear()
        return removed
