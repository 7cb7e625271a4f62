"""The wrappers: one small sync driver and one async driver per path."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fluxus._core import qualified_name
from fluxus.instrumentation._observe import Observe, watch_for

from ._stack_gate import BreakerGate
from ._steps import _Steps


class _Drivers(_Steps):
    """Wrap functions: the fast path, the timed path and the full path."""

    def _gate(self, func: Callable[..., Any]) -> BreakerGate:
        return BreakerGate(self, qualified_name(func), func)

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        if not self._listeners and self._slow_call_duration is not None:
            return self._timed_sync(func, function, observe)
        if self._full_path():
            return self._full_sync(func, function, observe)
        store = self._store
        refusal = self._refusal
        announce = self._announce
        fail = self._record_failure
        calls = self._counters.calls

        def breaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            token, retry_after, transition = store.admit(function)
            if token is None:
                raise refusal(retry_after, transition, function)
            if transition is not None:
                announce(transition, function, None)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                fail(token, exc, function)
                raise
            # _record_success, inlined: no listeners on this path.
            transition = store.succeed(token, function)
            if transition is not None:
                announce(transition, function, None)
            return result

        return breaker_wrapper

    def _full_sync(
        self, func: Callable[..., Any], function: str, observe: Observe | None
    ) -> Callable[..., Any]:
        """The sync wrapper of the full path (listeners)."""
        watch = watch_for(observe)
        call = self._call_sync

        def full_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            return call(func, function, args, kwargs)

        return full_wrapper

    def _timed_sync(
        self, func: Callable[..., Any], function: str, observe: Observe | None
    ) -> Callable[..., Any]:
        """The sync wrapper that tells slow calls apart (no listeners)."""
        watch = watch_for(observe)
        store = self._store
        refusal = self._refusal
        announce = self._announce
        fail = self._record_failure
        calls = self._counters.calls
        clock = self._clock
        limit = self._slow_call_duration
        assert limit is not None  # noqa: S101 - only built with slow calls

        def timed_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc]
            next(calls)
            token, retry_after, transition = store.admit(function)
            if token is None:
                raise refusal(retry_after, transition, function)
            if transition is not None:
                announce(transition, function, None)
            started = clock()
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                fail(token, exc, function, slow=clock() - started >= limit)
                raise
            if clock() - started >= limit:
                transition = store.succeed(token, function, slow=True)
            else:
                transition = store.succeed(token, function)
            if transition is not None:
                announce(transition, function, None)
            return result

        return timed_wrapper

    def _full_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        observe: Observe | None,
    ) -> Callable[..., Awaitable[Any]]:
        """The async wrapper of the full path (listeners or slow calls)."""
        watch = watch_for(observe)
        call = self._call_async

        async def full_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            return await call(func, function, args, kwargs)

        return full_wrapper

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        if self._full_path():
            return self._full_async(func, function, observe)
        store = self._store
        run = self._gate(func).run_async
        refusal = self._refusal
        announce = self._announce
        fail = self._record_failure
        calls = self._counters.calls

        async def breaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc]
            if store.remote:  # also before the storage is built
                return await run(func, args, kwargs)
            # In memory: run_async's first branch, inlined (no extra frames).
            next(calls)
            token, retry_after, transition = store.admit(function)
            if token is None:
                raise refusal(retry_after, transition, function)
            if transition is not None:
                announce(transition, function, None)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                fail(token, exc, function)
                raise
            transition = store.succeed(token, function)
            if transition is not None:
                announce(transition, function, None)
            return result

        return breaker_wrapper
