"""``@fluxus.bulkhead``: at most so many calls at once, the rest wait or go.

A bulkhead keeps one slow dependency from taking every thread, task or
connection of a service: at most ``max_concurrent`` calls run through it at
once, up to ``max_waiting`` more wait their turn (first come, first served)
for at most ``timeout`` seconds and never past an enclosing deadline, and
everybody else gets :class:`~fluxus.BulkheadFull` at once. Sync and async
callers of one policy share its slots.

A slot is given back however the call ends: a result, an exception, a
cancellation. One case keeps it longer on purpose: a call that a
``"thread"``-strategy :func:`fluxus.timeout` abandoned at its deadline
still runs in its worker thread, so it keeps its slot until it really
returns (the caller gets control back at once). A bulkhead therefore bounds
the work actually running, which is what protects the dependency.

The decisions live in :class:`~fluxus._bulkhead._core.Slots` (pure); the
memory store and the Redis store apply them; :class:`Bulkhead` holds one
small sync and one small async driver around a store.
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, ClassVar, NoReturn, Protocol

from fluxus._config import MEMORY
from fluxus._core import (
    BULKHEAD,
    Policy,
    block_name,
    factory_of,
    layers,
    qualified_name,
)
from fluxus._deadline import DEADLINE, HELD, Held, monotonic
from fluxus._validate import (
    check_fail_open,
    int_at_least,
    not_bare,
    positive_int,
    positive_seconds,
    to_seconds,
)
from fluxus.exceptions import BulkheadFull
from fluxus.instrumentation._events import BulkheadRejected
from fluxus.instrumentation._hooks import emit
from fluxus.instrumentation._observe import (
    WATCH,
    Observe,
    block_ended,
    block_started,
    watch_for,
)

from ._memory import MemoryCompartment


class Unreachable(Exception):  # a signal from a store, never raised to users
    """The shared storage is unreachable and the bulkhead fails closed.

    Attributes:
        storage: The storage, its password masked.
    """

    def __init__(self, storage: str) -> None:
        super().__init__(storage)
        self.storage = storage


class Compartment(Protocol):
    """What a bulkhead store offers: slots taken and given back.

    A token names the slot taken (a Redis lease); ``None`` means no slot.
    """

    remote: bool

    @property
    def in_use(self) -> int:
        """Slots taken (in Redis: by every process)."""

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""

    def take(self, budget: float) -> object | None:
        """Take a slot, waiting up to *budget* seconds; ``None`` if none came."""

    async def take_async(self, budget: float) -> object | None:
        """Take a slot without blocking the loop."""

    def give_back(self, token: object) -> None:
        """Give the slot of *token* back."""

    async def give_back_async(self, token: object) -> None:
        """Give the slot of *token* back without blocking the loop."""


class _Hold:
    """One slot held by a call, and by work a thread timeout abandoned.

    Given back when the last holder lets go: the caller when it returns,
    or the abandoned work when it finally does.
    """

    __slots__ = ("_give_back", "_holders", "_lock")

    def __init__(self, give_back: Callable[[], None]) -> None:
        self._give_back = give_back
        self._holders = 1
        self._lock = threading.Lock()

    def keep(self) -> Callable[[], None]:
        with self._lock:
            self._holders += 1
        return self.drop

    def drop(self) -> None:
        with self._lock:
            self._holders -= 1
            last = not self._holders
        if last:
            self._give_back()


def _abandons(func: Callable[..., Any]) -> bool:
    """Return whether a thread timeout inside *func*'s layers may abandon it."""
    return any(
        policy._kind == "timeout" and getattr(policy, "strategy", "") == "thread"  # noqa: SLF001
        for policy in layers(func)
    )


class Bulkhead(Policy):
    """Run at most so many calls at once; see :func:`bulkhead`."""

    _kind: ClassVar[str] = "bulkhead"
    _rank: ClassVar[int] = BULKHEAD

    _ids = itertools.count(1)

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        timeout: float | None = 0.0,
        name: str | None = None,
        storage: object = None,
        fail_open: bool = True,
        lease: float = 60.0,
    ) -> None:
        """Build the policy; see :func:`bulkhead` for the parameters.

        Args:
            max_concurrent: See :func:`bulkhead`.
            max_waiting: See :func:`bulkhead`.
            timeout: See :func:`bulkhead`.
            name: See :func:`bulkhead`.
            storage: See :func:`bulkhead`.
            fail_open: See :func:`bulkhead`.
            lease: See :func:`bulkhead`.
        """
        super().__init__(name)
        not_bare(max_concurrent, "max_concurrent", "an int", "@fluxus.bulkhead(10)")
        self.max_concurrent: int = positive_int(max_concurrent, "max_concurrent")
        self.max_waiting: int = int_at_least(max_waiting, "max_waiting", 0)
        self.timeout: float | None = (
            None if timeout is None else to_seconds(timeout, "timeout", allow_none=True)
        )
        if self.max_waiting and self.timeout == 0:
            msg = (
                f"timeout must be > 0 seconds or None with max_waiting={max_waiting!r} "
                f"(how long a caller waits), got {timeout!r}"
            )
            raise ValueError(msg)
        if not self.max_waiting and self.timeout != 0:
            msg = (
                f"timeout must be 0 with max_waiting=0 (no caller waits; give "
                f"max_waiting > 0 to let callers wait), got {timeout!r}"
            )
            raise ValueError(msg)
        self.fail_open: bool = check_fail_open(fail_open)
        self.lease: float = positive_seconds(lease, "lease")
        self._store: Compartment = self._make_store(storage)
        self._blocks: ContextVar[tuple[tuple[Any, ...], ...]] = ContextVar(
            f"fluxus_bulkhead_{next(self._ids)}", default=()
        )

    def _make_store(self, storage: object) -> Compartment:
        if storage is None or storage == MEMORY:
            return MemoryCompartment(self.max_concurrent, self.max_waiting)
        from ._redis import redis_compartment  # noqa: PLC0415 - redis is an extra

        return redis_compartment(self, storage)

    @property
    def in_use(self) -> int:
        """Slots taken now (with Redis storage: by every process sharing it)."""
        return self._store.in_use

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot now."""
        return self._store.waiting

    # -- decisions shared by both drivers ---------------------------------

    def _budget(self) -> float:
        """Return how long a caller may wait: its timeout, its deadline."""
        if not self.max_waiting:
            return 0.0
        budget = math.inf if self.timeout is None else self.timeout
        deadline = DEADLINE.get()
        if deadline is not None:
            budget = min(budget, deadline - monotonic())
        return budget

    def _reject(
        self, function: str, waited: float, storage: str | None = None
    ) -> NoReturn:
        next(self._counters.rejections)
        emit(
            BulkheadRejected(
                policy=self.name,
                function=function,
                max_concurrent=self.max_concurrent,
                max_waiting=self.max_waiting,
                waited=waited,
            )
        )
        raise BulkheadFull(self.name, self.max_concurrent, storage=storage)

    # -- the sync driver --------------------------------------------------

    def _admit(self, function: str) -> object:
        """Return the token of a slot, or raise :class:`~fluxus.BulkheadFull`."""
        next(self._counters.calls)  # here, so that fluxus.stack counts too
        store = self._store
        if not store.remote:
            token = store.take(0.0)
            if token is not None:
                return token
            if not self.max_waiting:
                self._reject(function, 0.0)
        started = time.monotonic()
        try:
            token = store.take(max(0.0, self._budget()))
        except Unreachable as exc:
            self._reject(function, 0.0, exc.storage)
        if token is None:
            self._reject(function, time.monotonic() - started)
        return token

    def _gate(self, func: Callable[..., Any]) -> SlotGate:
        return SlotGate(self, func)

    def _sync_steps(
        self, *, keeps: bool
    ) -> tuple[Callable[[str], object], Callable[[Any], None]]:
        """Return the steps around a sync call: take a slot, give it back.

        With *keeps*, the slot is published so that work a thread timeout
        abandons keeps it until it returns.
        """
        if not keeps:
            return self._admit, self._store.give_back
        admit, hold = self._admit, self._hold

        def enter(function: str) -> object:
            return hold(admit(function))

        return enter, self._unhold

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

    def _hold(self, token: object) -> tuple[_Hold, Token[tuple[Held, ...]]]:
        """Publish the slot of *token* so that abandoned work keeps it."""
        hold = _Hold(functools.partial(self._store.give_back, token))
        return hold, HELD.set((*HELD.get(), hold))

    @staticmethod
    def _unhold(held: tuple[_Hold, Token[tuple[Held, ...]]]) -> None:
        hold, published = held
        HELD.reset(published)
        hold.drop()

    def __enter__(self) -> None:
        """Take a slot for the block, or raise :class:`~fluxus.BulkheadFull`.

        Events, :attr:`stats` and observers see a block as a decorated call
        of the function the block is written in.
        """
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            held = self._hold(self._admit(function))
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        self._blocks.set((*self._blocks.get(), (held, observed)))

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the block's slot back."""
        *outer, (held, observed) = self._blocks.get()
        self._blocks.set(tuple(outer))
        try:
            self._unhold(held)
        finally:
            if observed is not None:
                block_ended(observed, exc)

    # -- the async driver -------------------------------------------------

    async def _admit_async(self, function: str) -> object:
        """Return the token of a slot without blocking the loop; see :meth:`_admit`."""
        next(self._counters.calls)
        store = self._store
        if not store.remote:
            token = store.take(0.0)
            if token is not None:
                return token
        return await self._wait_async(function)

    async def _wait_async(self, function: str) -> object:
        """Wait for a slot after the free ones were found taken (async)."""
        if not self._store.remote and not self.max_waiting:
            self._reject(function, 0.0)
        started = time.monotonic()
        try:
            token = await self._store.take_async(max(0.0, self._budget()))
        except Unreachable as exc:
            self._reject(function, 0.0, exc.storage)
        if token is None:
            self._reject(function, time.monotonic() - started)
        return token

    def _async_steps(
        self,
    ) -> tuple[Callable[[str], Awaitable[object]], Callable[[object], object]]:
        """Return the steps around an async call; the second may return an awaitable."""
        store = self._store
        return self._admit_async, (
            store.give_back_async if store.remote else store.give_back
        )

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

    async def __aenter__(self) -> None:
        """Take a slot for the block without blocking the loop."""
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            token = await self._admit_async(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        self._blocks.set((*self._blocks.get(), (token, observed)))

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the block's slot back."""
        *outer, (token, observed) = self._blocks.get()
        self._blocks.set(tuple(outer))
        try:
            await self._store.give_back_async(token)
        finally:
            if observed is not None:
                block_ended(observed, exc)


class SlotGate:
    """The bulkhead's gate for one function, as ``fluxus.stack`` runs it.

    Sync code calls :attr:`acquire` (a slot, or
    :class:`~fluxus.BulkheadFull`) and gives what it returned to
    :attr:`release`; async code awaits :meth:`acquire_async` and, when the
    store does I/O (:attr:`remote`), :meth:`release_async`, else calls
    :attr:`give_back`.
    """

    __slots__ = ("_function", "_policy", "acquire", "give_back", "release", "remote")

    def __init__(
        self, policy: Bulkhead, func: Callable[..., Any], *, keeps: bool | None = None
    ) -> None:
        self._policy = policy
        self._function = function = qualified_name(func)
        store = policy._store  # noqa: SLF001 - its own module
        self.remote = store.remote
        if keeps is None:
            keeps = _abandons(func)
        enter, leave = policy._sync_steps(keeps=keeps)  # noqa: SLF001
        self.acquire: Callable[[], object] = functools.partial(enter, function)
        self.release: Callable[[Any], None] = leave
        self.give_back: Callable[[object], None] = store.give_back

    def keeping(self, func: Callable[..., Any]) -> SlotGate:
        """Return this gate for calls that a thread timeout may abandon.

        Their slot is then kept until the abandoned work returns.
        """
        return SlotGate(self._policy, func, keeps=True)

    async def acquire_async(self) -> object:
        """Take a slot without blocking the loop."""
        return await self._policy._admit_async(self._function)  # noqa: SLF001

    async def release_async(self, token: object) -> None:
        """Give the slot of *token* back without blocking the loop."""
        await self._policy._store.give_back_async(token)  # noqa: SLF001


@factory_of(Bulkhead)
def bulkhead() -> None:
    """Return a policy that runs at most *max_concurrent* calls at once.

    Args:
        max_concurrent: How many calls may run at once through the policy,
            sync and async callers together (an int >= 1).
        max_waiting: How many more callers may wait for a slot; they are
            served first come, first served. ``0`` (the default) refuses
            at once every call that finds no free slot.
        timeout: How long a caller may wait for a slot: seconds (or a
            timedelta), or ``None`` to wait as long as an enclosing
            :func:`fluxus.timeout` deadline allows. A waiting caller never
            waits past that deadline. Must be > 0 (or ``None``) when
            *max_waiting* is, and 0 when it is not.
        name: The name in events and errors, and of the shared compartment
            in Redis; by default the first decorated function's
            ``module.qualname``. A bulkhead used only as a block without a
            name shares its slots with no other policy.
        storage: ``None`` or ``"memory://"`` (this process), or a
            ``redis://``, ``rediss://`` or ``unix://`` URL: the limit then
            holds across every process and machine using it with the same
            *name*. ``None`` does not follow the process's default storage
            (``FLUXUS_STORAGE_URI``): a bulkhead shared among processes is
            a choice made where it is declared.
        fail_open: With Redis storage, while Redis is unreachable, run calls
            without a slot (``True``, the default) or refuse them with
            :class:`~fluxus.BulkheadFull` (``False``).
        lease: With Redis storage, seconds a slot stays taken after its
            holder last renewed it; a live holder renews it while its call
            runs, so only the slot of a holder that died expires.

    Returns:
        A :class:`Bulkhead` policy; decorate functions with it, or use it as
        a block: ``with bh:`` / ``async with bh:``.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a number is out of range, or *timeout* and
            *max_waiting* contradict each other.

    Every slot is given back when its call ends, whatever the outcome. A
    call abandoned at its deadline by a ``"thread"``-strategy
    :func:`fluxus.timeout` inside the bulkhead keeps its slot until it
    really returns: it still runs, and the bulkhead bounds running work.
    The testing mode does not change a bulkhead: its waits end when
    another call gives a slot back, not when a clock says so.
    """
