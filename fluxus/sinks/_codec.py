"""Letters as JSON, never pickle: what every storing sink writes and reads.

Values JSON lacks (tuples, bytes, sets, dates, ...) are written as small
tagged objects so that they come back as they went in; a value fluxus cannot
write is kept as its ``repr``, and the letter then names it in
``placeholders`` so that :func:`fluxus.replay` skips it.
"""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from fluxus._dead_letter import DeadLetter

#: The key that marks a tagged value; chosen so that no plain dict has it.
TAG = "__fluxus__"
#: The record layout; readers refuse layouts they do not know.
VERSION = 1


def _encode(value: Any, path: str, reprs: list[str]) -> Any:  # noqa: C901, PLR0911, PLR0912 - one case per JSON-less type
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if type(value) is int else _repr(value, path, reprs)
    if isinstance(value, float):
        if type(value) is not float:
            return _repr(value, path, reprs)
        return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
    if type(value) is list:
        return [_encode(item, path, reprs) for item in value]
    if type(value) is tuple:
        return {TAG: "tuple", "v": [_encode(item, path, reprs) for item in value]}
    if type(value) is dict:
        if all(type(key) is str for key in value) and TAG not in value:
            return {key: _encode(item, path, reprs) for key, item in value.items()}
        return {
            TAG: "dict",
            "v": [
                [_encode(key, path, reprs), _encode(item, path, reprs)]
                for key, item in value.items()
            ],
        }
    if type(value) in (set, frozenset):
        items = [_encode(item, path, reprs) for item in value]
        return {TAG: type(value).__name__, "v": items}
    if type(value) in (bytes, bytearray):
        text = base64.b64encode(value).decode("ascii")
        return {TAG: type(value).__name__, "v": text}
    if type(value) in (datetime, date, time):
        return {TAG: type(value).__name__, "v": value.isoformat()}
    if type(value) is timedelta:
        return {TAG: "timedelta", "v": [value.days, value.seconds, value.microseconds]}
    if type(value) in (Decimal, UUID):
        return {TAG: type(value).__name__, "v": str(value)}
    return _repr(value, path, reprs)


def _repr(value: object, path: str, reprs: list[str]) -> dict[str, str]:
    if path not in reprs:
        reprs.append(path)
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the letter
        text = f"<unrepresentable {type(value).__qualname__}>"
    return {TAG: "repr", "v": text}


_DECODERS: dict[str, Any] = {
    "float": float,
    "set": lambda v: {_decode(item) for item in v},
    "frozenset": lambda v: frozenset(_decode(item) for item in v),
    "bytes": base64.b64decode,
    "bytearray": lambda v: bytearray(base64.b64decode(v)),
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "timedelta": lambda v: timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "Decimal": Decimal,
    "UUID": UUID,
    "repr": lambda v: v,
}


def _decode(value: Any) -> Any:
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if not isinstance(value, dict):
        return value
    tag = value.get(TAG)
    if tag is None:
        return {key: _decode(item) for key, item in value.items()}
    if tag == "tuple":
        return tuple(_decode(item) for item in value["v"])
    if tag == "dict":
        return {_decode(key): _decode(item) for key, item in value["v"]}
    return _DECODERS[tag](value["v"])


def encode(letter: DeadLetter) -> str:
    """Return *letter* as one line of JSON (no newline in it).

    Arguments JSON cannot hold are written as their ``repr`` and named in
    the record's ``placeholders``.
    """
    reprs: list[str] = []
    args = [_encode(arg, f"args[{i}]", reprs) for i, arg in enumerate(letter.args)]
    kwargs = {
        name: _encode(value, f"kwargs[{name!r}]", reprs)
        for name, value in letter.kwargs.items()
    }
    record = {
        "v": VERSION,
        "id": letter.id,
        "function": letter.function,
        "failed_at": letter.failed_at.isoformat(),
        "error_type": letter.error_type,
        "error_message": letter.error_message,
        "traceback": letter.traceback,
        "args": args,
        "kwargs": kwargs,
        "placeholders": [*letter.placeholders, *reprs],
    }
    return json.dumps(record, ensure_ascii=False, allow_nan=False)


def decode(text: str | bytes) -> DeadLetter:
    """Return the letter one record holds.

    Raises:
        ValueError: If *text* is not a fluxus dead letter record.
    """
    try:
        record = json.loads(text)
        if record["v"] != VERSION:
            msg = f"unknown record version {record['v']!r}"
            raise ValueError(msg)  # noqa: TRY301 - one message for every bad record
        failed_at = datetime.fromisoformat(record["failed_at"])
        return DeadLetter(
            id=str(record["id"]),
            function=str(record["function"]),
            args=tuple(_decode(arg) for arg in record["args"]),
            kwargs={str(k): _decode(v) for k, v in record["kwargs"].items()},
            error=None,
            error_type=str(record["error_type"]),
            error_message=str(record["error_message"]),
            traceback=str(record["traceback"]),
            failed_at=failed_at,
            placeholders=tuple(str(p) for p in record["placeholders"]),
        )
    except (
        ValueError,
        TypeError,
        KeyError,
        AttributeError,
        IndexError,
        InvalidOperation,
    ) as exc:
        msg = f"not a fluxus dead letter record: {exc}"
        raise ValueError(msg) from exc
