"""``@fluxus.dead_letter``: keep every failed call, so nothing is lost.

The happy path is one ``try`` around the call. Only after a failure does
fluxus build a :class:`DeadLetter` (arguments redacted as asked, traceback
formatted) and hand it to the handler: a callable or a sink from
:mod:`fluxus.sinks`. The decisions (does this exception go to the queue,
what the letter holds) are made once, in :meth:`DeadLetterQueue._letter`; a
small sync and a small async driver deliver it.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar

from fluxus._core import DEAD_LETTER, factory_of, qualified_name
from fluxus._validate import check_callable
from fluxus.instrumentation._observe import Observe, watch_for

from ._capture import _Capture
from ._redaction import _to_names
from ._stack_gate import LetterGate

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable

    from ._letter import DeadLetter, Handler, Sink


class DeadLetterQueue(_Capture):
    """Hand every failed call to a handler or sink; see :func:`dead_letter`."""

    _kind: ClassVar[str] = "dead_letter"
    _rank: ClassVar[int] = DEAD_LETTER

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


@factory_of(DeadLetterQueue)
def dead_letter() -> None:
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
