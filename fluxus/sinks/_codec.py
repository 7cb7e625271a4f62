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
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fluxus._core import type_name
from fluxus._dead_letter import DeadLetter

if TYPE_CHECKING:
    from collections.abc import Callable

#: The key that marks a tagged value; chosen so that no plain dict has it.
TAG = "__fluxus__"
#: The record layout; readers refuse layouts they do not know.
VERSION = 1


#: How deep containers may nest before the rest is kept as a placeholder;
#: far below the interpreter's recursion limit, so writing never overflows.
MAX_DEPTH = 100
#: Ints beyond 64 bits are stored as tagged hex text: JSON readers (and
#: Python's own, past 4,300 digits) refuse or round huge numbers.
_INT_LIMIT = 1 << 63

#: Converters for types a sink should store as data rather than a ``repr``
#: (a web request, for instance): ``register_encoder(cls, to_data)``.
_CONVERTERS: dict[type, Callable[[Any], Any]] = {}


def register_encoder(cls: type, to_data: Callable[[Any], Any]) -> None:
    """Store instances of *cls* as ``to_data(value)`` rather than a placeholder.

    ``to_data`` returns plain data (dicts, lists, strings, numbers); the
    letter then holds that data, decoded as such, and the argument is not a
    placeholder. Integrations use it for the objects they hand to views
    (a web request is stored as its method, path, headers and body).

    Args:
        cls: The type to convert (subclasses included).
        to_data: Called with the value; what it returns is stored.

    Raises:
        TypeError: If *cls* is not a type or *to_data* is not callable.
    """
    if not isinstance(cls, type) or not callable(to_data):
        msg = f"register_encoder needs a type and a callable, got {cls!r}, {to_data!r}"
        raise TypeError(msg)
    _CONVERTERS[cls] = to_data


#: Packages whose requests :mod:`fluxus.contrib._request_data` converts; it
#: is imported the first time a value of theirs is met.
_WEB_PACKAGES = frozenset({"django", "werkzeug", "flask", "starlette", "fastapi"})


def _converter(kind: type) -> Callable[[Any], Any] | None:
    for cls, to_data in _CONVERTERS.items():
        if issubclass(kind, cls):
            return to_data
    if kind.__module__.partition(".")[0] in _WEB_PACKAGES:
        import fluxus.contrib._request_data  # noqa: F401, PLC0415 - registers, once

        for cls, to_data in _CONVERTERS.items():
            if issubclass(kind, cls):
                return to_data
    return None


class _Writer:
    """Turn one letter's arguments into JSON-ready values; never raises.

    What JSON cannot hold losslessly is kept as a placeholder (its ``repr``)
    and its place recorded: cycles, nesting deeper than :data:`MAX_DEPTH`,
    types fluxus does not know.
    """

    __slots__ = ("active", "placeholders")

    def __init__(self) -> None:
        self.placeholders: list[str] = []
        self.active: set[int] = set()

    def value(self, value: Any, path: str, depth: int = 0) -> Any:  # noqa: C901, PLR0911, PLR0912 - one case per JSON-less type
        kind = type(value)
        if value is None or kind is bool or kind is str:
            return value
        if kind is int:
            if -_INT_LIMIT <= value <= _INT_LIMIT:
                return value
            return {TAG: "int", "v": hex(value)}
        if kind is float:
            return value if math.isfinite(value) else {TAG: "float", "v": repr(value)}
        if kind in _CONTAINERS:
            if depth >= MAX_DEPTH:
                return self.placeholder(
                    value, path, f"<nested deeper than {MAX_DEPTH}>"
                )
            if id(value) in self.active:
                return self.placeholder(value, path, f"<cycle: {kind.__name__}>")
            self.active.add(id(value))
            try:
                return self.container(value, path, depth + 1)
            finally:
                self.active.discard(id(value))
        if kind in (bytes, bytearray):
            text = base64.b64encode(value).decode("ascii")
            return {TAG: kind.__name__, "v": text}
        if kind in (datetime, date, time):
            return {TAG: kind.__name__, "v": value.isoformat()}
        if kind is timedelta:
            return {
                TAG: "timedelta",
                "v": [value.days, value.seconds, value.microseconds],
            }
        if kind is Decimal or kind is UUID:
            return {TAG: kind.__name__, "v": str(value)}
        to_data = _converter(kind)
        if to_data is not None:
            return self.converted(value, to_data, path, depth)
        return self.placeholder(value, path)

    def container(self, value: Any, path: str, depth: int) -> Any:
        kind = type(value)
        if kind is list:
            return [self.value(item, path, depth) for item in value]
        if kind is tuple:
            return {
                TAG: "tuple",
                "v": [self.value(item, path, depth) for item in value],
            }
        if kind is dict:
            if TAG not in value and all(type(key) is str for key in value):
                return {
                    key: self.value(item, path, depth) for key, item in value.items()
                }
            pairs = [
                [self.value(key, path, depth), self.value(item, path, depth)]
                for key, item in value.items()
            ]
            return {TAG: "dict", "v": pairs}
        return {
            TAG: kind.__name__,
            "v": [self.value(item, path, depth) for item in value],
        }

    def converted(
        self, value: Any, to_data: Callable[[Any], Any], path: str, depth: int
    ) -> Any:
        try:
            data = to_data(value)
        except Exception:  # noqa: BLE001 - a failing converter must not lose the letter
            return self.placeholder(value, path)
        return {
            TAG: "data",
            "type": type_name(type(value)),
            "v": self.value(data, path, depth),
        }

    def placeholder(self, value: object, path: str, text: str | None = None) -> Any:
        if path not in self.placeholders:
            self.placeholders.append(path)
        if text is None:
            try:
                text = repr(value)
            except Exception:  # noqa: BLE001 - a broken __repr__ must not lose the letter
                text = f"<unrepresentable {type(value).__qualname__}>"
        return {TAG: "repr", "v": text}


_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})


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
    "int": lambda v: int(v, 16),
}


def _decode(value: Any) -> Any:  # noqa: PLR0911 - one case per tag
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
    if tag == "data":
        return _decode(value["v"])
    return _DECODERS[tag](value["v"])


def encode(letter: DeadLetter) -> str:
    r"""Return *letter* as one line of JSON (no newline in it); never raises.

    Arguments JSON cannot hold are written as their ``repr`` and named in
    the record's ``placeholders``. Text that UTF-8 cannot carry (a lone
    surrogate, as ``os.fsdecode`` makes of a non-UTF-8 file name) is written
    with JSON's ``\\u`` escapes, so every ``str`` comes back as it was.
    """
    writer = _Writer()
    args = [writer.value(arg, f"args[{i}]") for i, arg in enumerate(letter.args)]
    kwargs = {
        name: writer.value(value, f"kwargs[{name!r}]")
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
        "placeholders": [*letter.placeholders, *writer.placeholders],
    }
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return text


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
