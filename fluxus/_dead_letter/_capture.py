"""The capture of one failed call: decided once, delivered sync or async."""

from __future__ import annotations

import inspect
import logging
import traceback
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fluxus._core import Policy, error_message, qualified_name, type_name
from fluxus._validate import refuse_async_handler
from fluxus.instrumentation._events import DeadLettered, DeadLetterHandlerFailed
from fluxus.instrumentation._hooks import emit

from ._letter import DeadLetter, Handler, Sink
from ._redaction import _Redaction

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class _Capture(Policy):
    """Decide, build, deliver and report the letter of one failed call."""

    # Set by DeadLetterQueue.__init__.
    handler: Handler | Sink
    reraise: bool
    default: Any
    redact: frozenset[str]
    _put: Callable[[DeadLetter], object]
    _aput: Callable[[DeadLetter], Awaitable[object]] | None
    _should_dlq: Callable[[Exception], bool] | None
    _on_handler_error: Callable[[Exception], object] | None
    _async_handler: bool

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
            error_message=error_message(exc),
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
                error_message=error_message(failure),
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
            refuse_async_handler(self._put, qualified_name(func), " or a sink")
