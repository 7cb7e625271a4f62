"""A breaker's steps: admit, then record one outcome, announcing changes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fluxus._core import type_name
from fluxus.exceptions import REJECTIONS, CircuitOpenError
from fluxus.instrumentation._events import CircuitRejected, CircuitStateChanged
from fluxus.instrumentation._hooks import emit, get_hooks

from ._circuit import HALF_OPEN, OPEN, Transition
from ._configured import _Configured
from ._listeners import _LISTENER_STATES

_OPEN = OPEN.value
_HALF_OPEN = HALF_OPEN.value


def _unreachable(storage: object) -> str | None:
    """Name *storage* if it refuses calls because it is down (fail closed)."""
    health = getattr(storage, "health", None)
    if health is None or not health.refusing():
        return None
    return str(storage.storage.description)  # type: ignore[attr-defined]


class _Steps(_Configured):
    """Admit a call, record its outcome, tell listeners, events and stats."""

    def reset(self) -> None:
        """Close the circuit and forget its failures."""
        self._announce(self._storage.reset(), "", None)

    def open(self) -> None:
        """Open the circuit: every call is refused until :meth:`reset`."""
        self._announce(self._storage.force_open(), "", None)

    def _announce(
        self, transition: Transition | None, function: str, exc: BaseException | None
    ) -> None:
        if transition is None:
            return
        if exc is not None and transition.new is OPEN:
            self._last_error = exc
        for listener in self._listeners:
            listener.state_change(
                self,
                _LISTENER_STATES[transition.old],
                _LISTENER_STATES[transition.new],
            )
        if not get_hooks():
            return
        emit(
            CircuitStateChanged(
                policy=self.name,
                function=function,
                old_state=transition.old.value,
                new_state=transition.new.value,
                reason=transition.reason,
                error_type=None if exc is None else type_name(type(exc)),
                error_message=None if exc is None else str(exc),
            )
        )

    def _refusal(
        self, retry_after: float, transition: Transition | None, function: str
    ) -> CircuitOpenError:
        """Announce a refused admission; return the error for the caller to raise.

        The caller raises it itself, so the traceback stays one frame deep.
        """
        if transition is not None:
            self._announce(transition, function, None)
        name = self._name or self.name
        next(self._counters.rejections)
        if get_hooks():
            emit(
                CircuitRejected(
                    policy=name,
                    function=function,
                    # No wait means every half-open trial slot is taken.
                    state=_OPEN if retry_after > 0 else _HALF_OPEN,
                    retry_after=retry_after,
                )
            )
        return CircuitOpenError(name, retry_after, _unreachable(self._storage))

    def _counts(self, exc: BaseException) -> bool:
        """Return whether *exc* counts as a failure (a rejection never does)."""
        if not isinstance(exc, Exception) or isinstance(exc, REJECTIONS):
            return False
        if isinstance(exc, self._excluded_types):
            return False
        return not any(predicate(exc) for predicate in self._excluded_predicates)

    # The steps below are what a compiled stack needs: admit (or raise), then
    # report exactly one outcome with the token admit returned.

    def _admit(self, function: str) -> object:
        """Admit a call and return its token, or raise :class:`CircuitOpenError`."""
        next(self._counters.calls)  # fluxus.stack admits here; wrappers count apart
        token, retry_after, transition = self._store.admit(function)
        if token is None:
            raise self._refusal(retry_after, transition, function)
        if transition is not None:
            self._announce(transition, function, None)
        return token

    def _record_success(
        self, token: object, function: str, *, slow: bool = False
    ) -> None:
        transition = self._store.succeed(token, function, slow=slow)
        if transition is not None:
            self._announce(transition, function, None)

    def _record_failure(
        self, token: object, exc: BaseException, function: str, *, slow: bool = False
    ) -> None:
        if self._counts(exc):
            next(self._counters.failures)
            self._announce(self._store.fail(token, function, slow=slow), function, exc)
        else:
            self._store.release(token, function)

    def _heard_success(
        self, token: object, function: str, *, slow: bool = False
    ) -> None:
        """:meth:`_record_success`, then the listeners' ``success``."""
        transition = self._store.succeed(token, function, slow=slow)
        for listener in self._listeners:
            listener.success(self)
        if transition is not None:
            self._announce(transition, function, None)

    def _heard_failure(
        self, token: object, exc: BaseException, function: str, *, slow: bool = False
    ) -> None:
        """:meth:`_record_failure`, the listeners' ``failure`` before a change."""
        if not self._counts(exc):
            self._store.release(token, function)
            return
        next(self._counters.failures)
        transition = self._store.fail(token, function, slow=slow)
        for listener in self._listeners:
            listener.failure(self, exc)
        self._announce(transition, function, exc)

    def _slow(self, started: float) -> bool:
        """Return whether a call that started at *started* was slow."""
        limit = self._slow_call_duration
        return limit is not None and self._clock() - started >= limit

    def _before_call(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        for listener in self._listeners:
            listener.before_call(self, func, *args, **kwargs)

    async def _admit_async(self, function: str) -> object:
        next(self._counters.calls)
        token, retry_after, transition = await self._storage.admit_async(function)
        if token is None:
            raise self._refusal(retry_after, transition, function)
        self._announce(transition, function, None)
        return token

    async def _record_success_async(
        self, token: object, function: str, *, slow: bool = False
    ) -> None:
        transition = await self._storage.succeed_async(token, function, slow=slow)
        for listener in self._listeners:
            listener.success(self)
        self._announce(transition, function, None)

    async def _record_failure_async(
        self, token: object, exc: BaseException, function: str, *, slow: bool = False
    ) -> None:
        if self._counts(exc):
            next(self._counters.failures)
            transition = await self._storage.fail_async(token, function, slow=slow)
            for listener in self._listeners:
                listener.failure(self, exc)
            self._announce(transition, function, exc)
        else:
            await self._storage.release_async(token, function)

    # -- the full path: listeners, slow calls, blocks ---------------------

    def _call_sync(
        self,
        func: Callable[..., Any],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        token = self._admit(function)
        if self._listeners:
            self._before_call(func, args, kwargs)
        started = self._clock()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._record_failure(token, exc, function, slow=self._slow(started))
            raise
        self._record_success(token, function, slow=self._slow(started))
        return result

    async def _call_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        remote = self._store.get().remote
        token = await self._admit_async(function) if remote else self._admit(function)
        if self._listeners:
            self._before_call(func, args, kwargs)
        started = self._clock()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            slow = self._slow(started)
            if remote:
                await self._record_failure_async(token, exc, function, slow=slow)
            else:
                self._record_failure(token, exc, function, slow=slow)
            raise
        if remote:
            await self._record_success_async(token, function, slow=self._slow(started))
        else:
            self._record_success(token, function, slow=self._slow(started))
        return result

    def _full_path(self) -> bool:
        """Whether wrappers take the full path (listeners or slow calls)."""
        return bool(self._listeners) or self._slow_call_duration is not None
