"""Where dead letters go: ready sinks for :func:`fluxus.dead_letter`.

::

    @fluxus.dead_letter(fluxus.sinks.JsonlFile("failed-orders.jsonl"))
    def submit(order): ...

A sink is any object with ``put(letter)`` (and optionally ``async
aput(letter)``), ``letters()`` and ``remove(letter_id)``; write your own the
same way. The storing sinks write JSON, never pickle, and are durable when
``put`` returns.
"""

from __future__ import annotations

from fluxus._dead_letter import Sink

from ._base import CorruptRecordWarning, SinkFull
from ._jsonl import JsonlFile
from ._log import Log
from ._memory import Memory
from ._redis import RedisStream
from ._sqlite import SQLite

__all__ = [
    "CorruptRecordWarning",
    "JsonlFile",
    "Log",
    "Memory",
    "RedisStream",
    "SQLite",
    "Sink",
    "SinkFull",
]
