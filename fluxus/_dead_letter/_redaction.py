"""What a letter keeps of a call's arguments: ``self`` dropped, names masked."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ._letter import REDACTED


def _is_method(func: Callable[..., Any], parameters: list[inspect.Parameter]) -> bool:
    """Whether *func* is defined in a class body and takes ``self`` or ``cls``."""
    owner, _, _ = getattr(func, "__qualname__", "").rpartition(".")
    return (
        bool(owner)
        and not owner.endswith("<locals>")
        and bool(parameters)
        and parameters[0].name in ("self", "cls")
        and parameters[0].kind
        in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )


class _Redaction:
    """What a letter keeps of one function's arguments.

    A method's ``self`` or ``cls`` is dropped (replay takes a bound method),
    and the arguments named in ``redact`` are masked, by position and by
    name. Built when the decorator is applied, so that a name the function
    cannot take is an error there and then.
    """

    __slots__ = ("from_index", "names", "positions", "skip")

    def __init__(
        self, func: Callable[..., Any], names: frozenset[str], function: str
    ) -> None:
        self.names = names
        self.positions: list[int] = []
        self.from_index: int | None = None
        self.skip = 0
        try:
            parameters = list(inspect.signature(func).parameters.values())
        except (TypeError, ValueError):  # builtins without a signature
            self.from_index = 0 if names else None
            return
        self.skip = int(_is_method(func, parameters))
        kind = inspect.Parameter
        named = {
            p.name
            for p in parameters[self.skip :]
            if p.kind not in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD)
        }
        unknown = names - named
        if unknown and not any(p.kind is kind.VAR_KEYWORD for p in parameters):
            msg = (
                f"redact must name parameters of {function} "
                f"({', '.join(sorted(named)) or 'it takes none'}), "
                f"got {sorted(unknown)!r}"
            )
            raise ValueError(msg)
        for index, parameter in enumerate(parameters[self.skip :]):
            if parameter.kind is kind.VAR_POSITIONAL and unknown:
                # A name no parameter has may reach a callee through *args.
                self.from_index = index
                break
            if parameter.kind not in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD):
                break
            if parameter.name in names:
                self.positions.append(index)

    def apply(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], tuple[str, ...]]:
        """Return *args* and *kwargs* as kept, and the places that were masked."""
        masked: list[str] = []
        new_args = list(args[self.skip :])
        masked_indexes = [i for i in self.positions if i < len(new_args)]
        if self.from_index is not None:
            masked_indexes.extend(range(self.from_index, len(new_args)))
        for index in masked_indexes:
            new_args[index] = REDACTED
            masked.append(f"args[{index}]")
        new_kwargs = dict(kwargs)
        for name in new_kwargs:
            if name in self.names:
                new_kwargs[name] = REDACTED
                masked.append(f"kwargs[{name!r}]")
        return tuple(new_args), new_kwargs, tuple(masked)


def _to_names(redact: object) -> frozenset[str]:
    names = (redact,) if isinstance(redact, str) else redact
    if not isinstance(names, Iterable):
        msg = f"redact must be argument names (strings), got {redact!r}"
        raise TypeError(msg)
    result = frozenset(names)
    for name in result:
        if not isinstance(name, str):
            msg = f"redact must be argument names (strings), got {name!r}"
            raise TypeError(msg)
        if not name.isidentifier():
            msg = f"redact must be argument names (identifiers), got {name!r}"
            raise ValueError(msg)
    return result
