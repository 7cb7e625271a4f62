"""The two drivers of a decorated function, sync and async."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fluxus._core import qualified_name
from fluxus._deadline import DEADLINE, wait_async, wait_sync
from fluxus.instrumentation._observe import (
    Observe,
    attempts_async,
    attempts_sync,
    watch_for,
)

from ._schedule import _Schedule


class _Drivers(_Schedule):
    """Wrap functions: one try on the happy path, the schedule after a failure."""

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        if observe is None:
            # The plain wrapper, run by the observers: each attempt too.
            func = attempts_sync(func)
        retryable = self._retryable
        on_result = self._on_result
        again = self._again_sync
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)
        deadline, expired = DEADLINE.get, self._refuse_when_expired

        def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if deadline() is not None:
                expired()
            if budget is not None:
                budget.record_attempt()
            error: Exception | None  # an annotation: no run-time cost
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                error, result = exc, None
            else:
                if on_result is None or not on_result(result):
                    return result
                error = None
            # Outside the except block: later errors do not chain to this one.
            return again(func, function, args, kwargs, error=error, result=result)

        return retry_wrapper

    def _again_sync(
        self,
        func: Callable[..., Any],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        error: Exception | None,
        result: Any,
    ) -> Any:
        state, on_result = self._state(), self._on_result
        while True:
            delay = self._schedule(state, error, result, function)
            if delay is None:
                break
            wait_sync(delay)
            if self._late(state, error, function):
                break
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    self._refuse(state, exc, function)
                    raise
                error = exc
                continue
            if on_result is None or not on_result(result):
                return result
            error = None
        if error is None:
            return result
        raise error

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        if observe is None:
            func = attempts_async(func)
        retryable = self._retryable
        on_result = self._on_result
        again = self._again_async
        budget = self.budget
        calls = self._counters.calls
        failures = self._counters.failures
        watch = watch_for(observe)
        deadline, expired = DEADLINE.get, self._refuse_when_expired

        async def retry_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            if deadline() is not None:
                expired()
            if budget is not None:
                budget.record_attempt()
            error: Exception | None
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if not retryable(exc):
                    next(failures)
                    raise
                error, result = exc, None
            else:
                if on_result is None or not on_result(result):
                    return result
                error = None
            return await again(func, function, args, kwargs, error=error, result=result)

        return retry_wrapper

    async def _again_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        error: Exception | None,
        result: Any,
    ) -> Any:
        state, on_result = self._state(), self._on_result
        while True:
            delay = self._schedule(state, error, result, function)
            if delay is None:
                break
            await wait_async(delay)
            if self._late(state, error, function):
                break
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if not self._retryable(exc):
                    self._refuse(state, exc, function)
                    raise
                error = exc
                continue
            if on_result is None or not on_result(result):
                return result
            error = None
        if error is None:
            return result
        raise error
