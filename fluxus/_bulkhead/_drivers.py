"""The wrappers: one small sync driver and two async ones (memory, remote)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fluxus._core import qualified_name
from fluxus.instrumentation._observe import Observe, watch_for

from ._hold import _abandons
from ._stack_gate import SlotGate
from ._steps import _Steps

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class _Drivers(_Steps):
    """Wrap functions around a bulkhead's steps."""

    def _gate(self, func: Callable[..., Any]) -> SlotGate:
        return SlotGate(self, func)

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        enter, leave = self._sync_steps(keeps=_abandons(func))

        def bulkhead_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return observe(args, kwargs)  # type: ignore[misc] # set when watched
            entered = enter(function)
            try:
                return func(*args, **kwargs)
            finally:
                leave(entered)

        return bulkhead_wrapper

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        store = self._store
        if store.remote:
            return self._wrap_remote_async(func, function, observe)
        calls = self._counters.calls
        take, give_back, wait = store.take, store.give_back, self._wait_async

        async def bulkhead_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc] # set when watched
            # The free slot is taken without awaiting a coroutine of its own:
            # that halves the cost (benchmarks/bench_fallback_bulkhead_hedge.py).
            next(calls)
            token = take(0.0)
            if token is None:
                token = await wait(function)
            try:
                return await func(*args, **kwargs)
            finally:
                give_back(token)

        return bulkhead_wrapper

    def _wrap_remote_async(
        self,
        func: Callable[..., Awaitable[Any]],
        function: str,
        observe: Observe | None,
    ) -> Callable[..., Awaitable[Any]]:
        watch = watch_for(observe)
        admit, give_back = self._admit_async, self._store.give_back_async

        async def bulkhead_wrapper(*args: Any, **kwargs: Any) -> Any:
            if watch.observers:
                return await observe(args, kwargs)  # type: ignore[misc] # set when watched
            token = await admit(function)
            try:
                return await func(*args, **kwargs)
            finally:
                await give_back(token)

        return bulkhead_wrapper
