"""``@fluxus.fallback``: answer a failed call with a value or a handler.

The happy path is one ``try`` around the call. After a failure,
:meth:`Fallback._accepts` decides (``on`` and ``should_fallback``) and the
sync or async driver answers: the fixed ``value``, or what
``handler(exc, *args, **kwargs)`` returns (awaited when it is awaitable, for
``async def`` functions). A handler that fails raises its own error ``from``
the call's, so both tracebacks reach the log.

In :func:`fluxus.stack` the fallback is the outermost layer: the dead letter
queue inside it still keeps the failure, and the caller gets the fallback.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final, NoReturn

from ._core import (
    FALLBACK,
    Policy,
    error_message,
    factory_of,
    qualified_name,
    type_name,
)
from ._validate import check_callable, refuse_async_handler
from .instrumentation._events import FallbackUsed
from .instrumentation._hooks import emit
from .instrumentation._observe import Observe, watch_for

ExceptionTypes = type[Exception] | tuple[type[Exception], ...]


class _NoValue:
    """The default of ``value``: no value given (``None`` is a value)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Final = _NoValue()


def check_exception_types(on: object, param: str = "on") -> tuple[type[Exception], ...]:
    """Return *on* as a tuple of ``Exception`` subclasses, or raise naming *param*.

    Raises:
        TypeError: If *on* is neither an ``Exception`` subclass nor a tuple
            of them.
    """
    kinds = on if isinstance(on, tuple) else (on,)
    if not kinds or not all(
        isinstance(kind, type) and issubclass(kind, Exception) for kind in kinds
    ):
        msg = f"{param} must be an Exception subclass or a tuple of them, got {on!r}"
        raise TypeError(msg)
    return kinds


def _raise_from(failure: Exception, exc: Exception) -> NoReturn:
    raise failure from exc


class Fallback(Policy):
    """Answer failed calls with a value or a handler; see :func:`fallback`."""

    _kind: ClassVar[str] = "fallback"
    _rank: ClassVar[int] = FALLBACK

    def __init__(
        self,
        handler: Callable[..., Any] | None = None,
        *,
        value: Any = NO_VALUE,
        on: ExceptionTypes = Exception,
        should_fallback: Callable[[Exception], bool] | None = None,
        name: str | None = None,
    ) -> None:
        """Build the policy; see :func:`fallback` for the parameters.

        Args:
            handler: See :func:`fallback`.
            value: See :func:`fallback`.
            on: See :func:`fallback`.
            should_fallback: See :func:`fallback`.
            name: See :func:`fallback`.
        """
        super().__init__(name)
        if (handler is None) == (value is NO_VALUE):
            given = "both" if handler is not None else "neither"
            msg = (
                "handler or value must be given, exactly one of them, got "
                f"{given} (handler={handler!r}, value={value!r})"
            )
            raise TypeError(msg)
        check_callable(handler, "handler")
        check_callable(should_fallback, "should_fallback")
        self.handler = handler
        self.value = value
        self.on: tuple[type[Exception], ...] = check_exception_types(on)
        self._should_fallback = should_fallback
        self._async_handler = handler is not None and inspect.iscoroutinefunction(
            handler
        )

    # -- the decision, shared by both drivers -----------------------------

    def _accepts(self, function: str, exc: Exception) -> bool:
        """Return whether *exc* is answered by the fallback; count and report it."""
        next(self._counters.failures)
        if self._should_fallback is not None and not self._should_fallback(exc):
            return False
        next(self._counters.fallbacks)
        emit(
            FallbackUsed(
                policy=self.name,
                function=function,
                error_type=type_name(type(exc)),
                error_message=error_message(exc),
            )
        )
        return True

    def _gate(self, func: Callable[..., Any]) -> AnswerGate:
        return AnswerGate(self, func)

    def _require_sync_handler(self, func: Callable[..., Any]) -> None:
        if self._async_handler:
            refuse_async_handler(self.handler, qualified_name(func))

    # -- the drivers ------------------------------------------------------

    def _answer_sync(
        self,
        function: str,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Return the fallback for *exc*, or re-raise it when not accepted."""
        if not self._accepts(function, exc):
            raise exc
        if self.handler is None:
            return self.value
        try:
            return self.handler(exc, *args, **kwargs)
        except Exception as failure:  # noqa: BLE001 - raised from the original
            _raise_from(failure, exc)

    async def _answer_async(
        self,
        function: str,
        exc: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Return the fallback for *exc*, awaiting an async handler.

        The decision is :meth:`_answer_sync`'s; only the await is added here.
        """
        answer = self._answer_sync(function, exc, args, kwargs)
        if self.handler is None or not inspect.isawaitable(answer):
            return answer
        try:
            return await answer
        except Exception as failure:  # noqa: BLE001 - raised from the original
            _raise_from(failure, exc)

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        self._require_sync_handler(func)
        function = qualified_name(func)
        watch = watch_for(observe)
        on = self.on
        answer = self._answer_sync
        calls = self._counters.calls

        def fallback_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc] # set when watched
            next(calls)
            try:
                return func(*args, **kwargs)
            except on as exc:
                return answer(function, exc, args, kwargs)

        return fallback_wrapper

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        on = self.on
        answer = self._answer_async
        calls = self._counters.calls

        async def fallback_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc] # set when watched
            next(calls)
            try:
                return await func(*args, **kwargs)
            except on as exc:
                return await answer(function, exc, args, kwargs)

        return fallback_wrapper


class AnswerGate:
    """The fallback's gate for one function, as ``fluxus.stack`` runs it.

    Attributes:
        on: The exception types answered.
    """

    __slots__ = ("_calls", "_function", "_policy", "on")

    def __init__(self, policy: Fallback, func: Callable[..., Any]) -> None:
        if not inspect.iscoroutinefunction(func):
            policy._require_sync_handler(func)  # noqa: SLF001 - its own module
        self._policy = policy
        self._function = qualified_name(func)
        self._calls = policy._counters.calls  # noqa: SLF001
        self.on = policy.on

    def enter(self) -> None:
        """Count the call entering."""
        next(self._calls)

    def answer(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """Return the fallback for *exc*, or re-raise it when not accepted."""
        return self._policy._answer_sync(self._function, exc, args, kwargs)  # noqa: SLF001

    async def answer_async(
        self, args: tuple[Any, ...], kwargs: dict[str, Any], exc: Exception
    ) -> Any:
        """Same as :meth:`answer`, awaiting an async handler."""
        return await self._policy._answer_async(self._function, exc, args, kwargs)  # noqa: SLF001


@factory_of(Fallback)
def fallback() -> None:
    """Return a policy that answers failed calls instead of raising.

    Args:
        handler: ``handler(exc, *args, **kwargs)`` receives the exception and
            the call's arguments and returns the answer; for ``async def``
            functions it may be ``async`` too (it is awaited). An ``async``
            handler cannot serve a sync function.
        value: The answer to every failed call, instead of a handler (``None``
            is a value). Give exactly one of *handler* and *value*.
        on: The exception type, or tuple of types, answered; others are
            raised. Only ``Exception`` subclasses: cancellation and
            ``KeyboardInterrupt`` always pass through.
        should_fallback: ``should_fallback(exc) -> bool`` narrows *on*
            further.
        name: The name in events; by default the first decorated function's.

    Returns:
        A :class:`Fallback` policy; decorate functions with it.

    Raises:
        TypeError: If neither or both of *handler* and *value* are given, a
            parameter has the wrong type, or (when the policy is applied) an
            ``async`` handler meets a sync function.

    When the handler itself raises, its exception is raised ``from`` the
    call's, so the original failure stays in the traceback. fluxus's own
    rejections (:func:`fluxus.is_rejection`) are failures like any other:
    ``should_fallback`` can leave them out.
    """
