"""``@fluxus.dead_letter``: keep every failed call, so nothing is lost.

The happy path is one ``try`` around the call. Only after a failure does
fluxus build a :class:`DeadLetter` (arguments redacted as asked, traceback
formatted) and hand it to the handler: a callable or a sink from
:mod:`fluxus.sinks`. The decisions (does this exception go to the queue,
what the letter holds) are made once, in :meth:`DeadLetterQueue._letter`; a
small sync and a small async driver deliver it.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import traceback
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from ._core import DEAD_LETTER, Policy, qualified_name, type_name
from ._gate import CaptureGate
from ._validate import check_callable
from .instrumentation._events import DeadLettered, DeadLetterHandlerFailed
from .instrumentation._hooks import emit
from .instrumentation._observe import Observe, watch_for

#: What a redacted argument is replaced with, in memory and in storage.
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter:
    """One failed call, as a dead letter queue keeps it.

    Attributes:
        id: A unique id (32 hex digits).
        function: ``module.qualname`` of the function that failed.
        args: The positional arguments (redacted names masked); for a
            method, those after ``self`` or ``cls``.
        kwargs: The keyword arguments (redacted names masked).
        error: The exception; ``None`` once the letter went through storage.
        error_type: ``module.qualname`` of the exception's class.
        error_message: ``str()`` of the exception.
        traceback: The formatted traceback.
        failed_at: When the call failed (timezone-aware, UTC).
        placeholders: The arguments not kept as given (``args[1]``,
            ``kwargs['token']``): redacted, or stored as their ``repr``
            because they could not be serialized. Replay skips such letters
            unless its ``fill`` gives the missing values.
    """

    id: str
    function: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    error: BaseException | None
    error_type: str
    error_message: str
    traceback: str
    failed_at: datetime
    placeholders: tuple[str, ...] = ()

    @property
    def replayable(self) -> bool:
        """Whether every argument was kept as given, so the call can be redone."""
        return not self.placeholders

    def replace(self, **changes: Any) -> DeadLetter:
        """Return a copy of the letter with *changes* applied."""
        return dataclasses.replace(self, **changes)


@runtime_checkable
class Sink(Protocol):
    """What a dead letter store offers; see :mod:`fluxus.sinks`.

    A sink may also offer ``async aput(letter)``, which async functions use.
    """

    def put(self, letter: DeadLetter) -> object:
        """Store *letter*; it is durable when this returns."""

    def letters(self) -> Iterable[DeadLetter]:
        """Return the stored letters, oldest first.

        The sinks of :mod:`fluxus.sinks` stream them and take ``limit=``.
        """

    def remove(self, letter_id: str) -> object:
        """Remove the letter with id *letter_id*, if it is stored."""


Handler = Callable[[DeadLetter], object]


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


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the letter
        return repr(exc)


class DeadLetterQueue(Policy):
    """Hand every failed call to a handler or sink; see :func:`dead_letter`."""

    _kind: ClassVar[str] = "dead_letter"
    _rank: ClassVar[int] = DEAD_LETTER
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        handler: Handler | Sink,
        *,
        should_dlq: Callable[[Exception], bool] | None = None,
        on_handler_error: Callable[[Exception], object] | None = None,
        reraise: bool = True,
        default: Any = None,
        redact: Iterable[str] | str = (),
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        put = getattr(handler, "put", None)
        if callable(put):
            self._put: Callable[[DeadLetter], object] = put
            aput = getattr(handler, "aput", None)
            self._aput: Callable[[DeadLetter], Awaitable[object]] | None = (
                aput if callable(aput) else None
            )
        elif callable(handler):
            self._put = handler
            self._aput = None
        else:
            msg = (
                "handler must be a callable handler(letter) or a sink with "
                f"put(letter), got {handler!r}"
            )
            raise TypeError(msg)
        check_callable(should_dlq, "should_dlq")
        check_callable(on_handler_error, "on_handler_error")
        if not isinstance(reraise, bool):
            msg = f"reraise must be a bool, got {reraise!r}"
            raise TypeError(msg)
        self.handler = handler
        self.reraise = reraise
        self.default = default
        self.redact: frozenset[str] = _to_names(redact)
        self._should_dlq = should_dlq
        self._on_handler_error = on_handler_error
        self._async_handler = self._aput is None and inspect.iscoroutinefunction(
            self._put
        )

    # The steps a compiled stack calls: decide, build, deliver, report.

    def _accepts(self, exc: Exception) -> bool:
        return self._should_dlq is None or bool(self._should_dlq(exc))

    def _letter(
        self,
        function: str,
        redaction: _Redaction | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> DeadLetter:
        """Build the letter for a failed call: pure, apart from the clock."""
        placeholders: tuple[str, ...] = ()
        if redaction is not None:
            args, kwargs, placeholders = redaction.apply(args, kwargs)
        else:
            kwargs = dict(kwargs)
        return DeadLetter(
            id=uuid.uuid4().hex,
            function=function,
            args=args,
            kwargs=kwargs,
            error=exc,
            error_type=type_name(type(exc)),
            error_message=_message(exc),
            traceback="".join(traceback.format_exception(exc)),
            failed_at=datetime.now(UTC),
            placeholders=placeholders,
        )

    def _record_delivered(self, letter: DeadLetter, exc: Exception) -> None:
        next(self._counters.dead_letters)
        exc.add_note(f"fluxus.dead_letter kept this call as letter {letter.id}")
        emit(
            DeadLettered(
                policy=self.name,
                function=letter.function,
                letter_id=letter.id,
                error_type=letter.error_type,
                error_message=letter.error_message,
            )
        )

    def _record_handler_failure(
        self, function: str, letter_id: str | None, failure: Exception
    ) -> None:
        emit(
            DeadLetterHandlerFailed(
                policy=self.name,
                function=function,
                letter_id=letter_id or "",
                error_type=type_name(type(failure)),
                error_message=_message(failure),
            )
        )
        if self._on_handler_error is not None:
            try:
                self._on_handler_error(failure)
            except Exception:  # the caller's exception must stay the one raised
                logging.getLogger("fluxus").exception(
                    "fluxus.dead_letter on_handler_error %r raised",
                    self._on_handler_error,
                )

    def _prepare(
        self,
        function: str,
        redaction: _Redaction | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> DeadLetter | None:
        """Decide and build: the letter for *exc*, or ``None`` if it is not kept.

        The one step both drivers share; only the delivery differs.
        """
        next(self._counters.failures)
        if not self._accepts(exc):
            return None
        return self._letter(function, redaction, args, kwargs, exc)

    def _capture_sync(
        self,
        function: str,
        redaction: _Redaction | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> bool:
        """Deliver the letter for *exc*; return whether the handler took it."""
        letter = None
        try:
            letter = self._prepare(function, redaction, args, kwargs, exc)
            if letter is None:
                return False
            self._put(letter)
        except Exception as failure:  # noqa: BLE001 - reported, never raised
            self._record_handler_failure(
                function, letter.id if letter else None, failure
            )
            return False
        self._record_delivered(letter, exc)
        return True

    async def _capture_async(
        self,
        function: str,
        redaction: _Redaction | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        exc: Exception,
    ) -> bool:
        """Deliver the letter for *exc* without blocking the event loop."""
        letter = None
        try:
            letter = self._prepare(function, redaction, args, kwargs, exc)
            if letter is None:
                return False
            result = (self._aput or self._put)(letter)
            if inspect.isawaitable(result):
                await result
        except Exception as failure:  # noqa: BLE001 - reported, never raised
            self._record_handler_failure(
                function, letter.id if letter else None, failure
            )
            return False
        self._record_delivered(letter, exc)
        return True

    def _redaction(self, func: Callable[..., Any]) -> _Redaction | None:
        """Return what letters of *func* keep, or ``None`` to keep every argument.

        Raises:
            ValueError: If ``redact`` names a parameter *func* does not take.
        """
        redaction = _Redaction(func, self.redact, qualified_name(func))
        if redaction.skip or redaction.names:
            return redaction
        return None

    def _require_sync_handler(self, func: Callable[..., Any]) -> None:
        if self._async_handler:
            msg = (
                f"handler must be a sync callable or a sink to serve the sync "
                f"function {qualified_name(func)}, got the async {self._put!r}"
            )
            raise TypeError(msg)

    def _gate(self, func: Callable[..., Any]) -> LetterGate:
        if not inspect.iscoroutinefunction(func):
            self._require_sync_handler(func)
        return LetterGate(self, func)

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        self._require_sync_handler(func)
        function = qualified_name(func)
        watch = watch_for(observe)
        redaction = self._redaction(func)
        capture = self._capture_sync
        reraise = self.reraise
        default = self.default
        calls = self._counters.calls

        def dead_letter_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            try:
                return func(*args, **kwargs)
            except Exception as exc:
                if capture(function, redaction, args, kwargs, exc) and not reraise:
                    return default
                raise

        return dead_letter_wrapper

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        redaction = self._redaction(func)
        capture = self._capture_async
        reraise = self.reraise
        default = self.default
        calls = self._counters.calls

        async def dead_letter_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            try:
                return await func(*args, **kwargs)
            except Exception as exc:
                if (
                    await capture(function, redaction, args, kwargs, exc)
                    and not reraise
                ):
                    return default
                raise

        return dead_letter_wrapper


class LetterGate(CaptureGate):
    """The dead letter queue's gate for one function, as ``fluxus.stack`` runs it."""

    __slots__ = ("_calls", "_function", "_policy", "_redaction")

    def __init__(self, policy: DeadLetterQueue, func: Callable[..., Any]) -> None:
        self._policy = policy
        self._function = qualified_name(func)
        self._redaction = policy._redaction(func)  # noqa: SLF001 - its own module
        self._calls = policy._counters.calls  # noqa: SLF001

    @property
    def default(self) -> Any:
        """What the call returns when :meth:`capture` says so."""
        return self._policy.default

    def enter(self) -> None:
        """Count the call entering."""
        next(self._calls)

    def capture(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Capture *exc*; return whether the call returns ``default`` instead."""
        policy = self._policy
        captured = policy._capture_sync(  # noqa: SLF001 - its own module
            self._function, self._redaction, args, kwargs, exc
        )
        return captured and not policy.reraise

    async def capture_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> bool:
        """Same as :meth:`capture`, without blocking the event loop."""
        policy = self._policy
        captured = await policy._capture_async(  # noqa: SLF001 - its own module
            self._function, self._redaction, args, kwargs, exc
        )
        return captured and not policy.reraise


def dead_letter(
    handler: Handler | Sink,
    *,
    should_dlq: Callable[[Exception], bool] | None = None,
    on_handler_error: Callable[[Exception], object] | None = None,
    reraise: bool = True,
    default: Any = None,
    redact: Iterable[str] | str = (),
    name: str | None = None,
) -> DeadLetterQueue:
    r"""Return a policy that keeps every failed call as a :class:`DeadLetter`.

    Args:
        handler: A callable ``handler(letter)`` (an ``async def`` handler
            serves async functions), or a sink: any object with
            ``put(letter)``, and optionally ``async aput(letter)``, such as
            those in :mod:`fluxus.sinks`.
        should_dlq: ``should_dlq(exc) -> bool`` chooses the exceptions kept;
            by default every ``Exception``, fluxus's own rejections included.
        on_handler_error: Called with the handler's exception when the
            handler fails (a ``DeadLetterHandlerFailed`` event is emitted in
            any case).
        reraise: Re-raise the call's exception once the letter is kept;
            with ``False`` the call returns *default* instead.
        default: What the call returns when ``reraise`` is ``False``.
        redact: Names of arguments to mask (``"password"``, ``"token"``),
            given by keyword or by position, before the handler sees them.
            Give the values back when replaying with ``fluxus.replay(...,
            fill={"token": ...})``.
        name: The name in events; by default the first decorated function's.

    Returns:
        A :class:`DeadLetterQueue` policy; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: When the policy decorates a function: if ``redact``
            names a parameter the function does not take (and it takes no
            ``**kwargs``).

    For a method, ``letter.args`` holds the arguments after ``self`` (or
    ``cls``); replay it with the bound method,
    ``fluxus.replay(sink, client.get_quote)``.

    ``BaseException``\\ s that are not ``Exception``\\ s (cancellation,
    ``KeyboardInterrupt``) are never kept. If the handler fails, the call's
    own exception is re-raised, even with ``reraise=False``: a failure that
    could not be kept is never swallowed.
    """
    return DeadLetterQueue(
        handler,
        should_dlq=should_dlq,
        on_handler_error=on_handler_error,
        reraise=reraise,
        default=default,
        redact=redact,
        name=name,
    )
