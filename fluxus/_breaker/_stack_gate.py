"""The breaker as ``fluxus.stack`` runs it: one gate per function."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, cast

from ._listeners import _block
from ._steps import _Steps


class BreakerGate:
    """A breaker's steps around one function's calls: admit, succeed or fail.

    Both the breaker's own async wrapper and :func:`fluxus.stack` run an
    async call through :meth:`run_async`; a storage in memory is stepped
    without awaiting, a remote one is awaited.
    """

    __slots__ = ("_fail", "_succeed", "admit", "breaker", "full", "func", "function")

    def __init__(
        self,
        breaker: _Steps,
        function: str,
        func: Callable[..., Any] | None = None,
    ) -> None:
        self.breaker = breaker
        self.function = function
        self.func = func
        self.admit: Callable[[], object] = functools.partial(breaker._admit, function)  # noqa: SLF001 - its own package
        #: Listeners or slow calls: tokens carry the start, calls are heard.
        self.full = breaker._full_path()  # noqa: SLF001
        if self.full:
            self.admit = self._full_admit
        self._succeed = breaker._record_success  # noqa: SLF001
        self._fail = breaker._record_failure  # noqa: SLF001

    def _full_admit(self) -> object:
        """Admit, tell the listeners (without the arguments), note the start."""
        breaker = self.breaker
        token = breaker._admit(self.function)  # noqa: SLF001
        if breaker._listeners:  # noqa: SLF001
            breaker._before_call(self.func or _block, (), {})  # noqa: SLF001
        return token, breaker._clock()  # noqa: SLF001

    def succeed(self, token: object) -> None:
        """Record that the admitted call succeeded."""
        if self.full:
            admitted, started = cast("tuple[object, float]", token)
            slow = self.breaker._slow(started)  # noqa: SLF001
            self._succeed(admitted, self.function, slow=slow)
            return
        self._succeed(token, self.function)

    def fail(self, token: object, exc: BaseException) -> None:
        """Record that the admitted call raised *exc*."""
        if self.full:
            admitted, started = cast("tuple[object, float]", token)
            slow = self.breaker._slow(started)  # noqa: SLF001
            self._fail(admitted, exc, self.function, slow=slow)
            return
        self._fail(token, exc, self.function)

    async def run_async(
        self,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Await *func* under the breaker."""
        breaker, function = self.breaker, self.function
        if self.full or breaker._store.get().remote:  # noqa: SLF001 - its own package
            # The steps of a remote storage are awaited; one path serves them.
            return await breaker._call_async(func, function, args, kwargs)  # noqa: SLF001
        # In memory, no listeners, no slow calls: the steps, without awaiting.
        token = breaker._admit(function)  # noqa: SLF001
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            breaker._record_failure(token, exc, function)  # noqa: SLF001
            raise
        breaker._record_success(token, function)  # noqa: SLF001
        return result
