"""``@fluxus.circuit_breaker``: stop calling what keeps failing, over pybreaker.

pybreaker gives the vocabulary: the state names, the storage split (state
kept apart from the breaker, so several processes can share it through
Redis) and the idea of listeners, which fluxus turns into events. Its call
path is not reused: ``pybreaker.CircuitBreaker.call()`` holds the breaker's
lock for the whole call, needs Tornado for coroutines, reads the wall clock
and counts excluded errors as successes. Here the rules live in a pure state
machine (:class:`~fluxus._breaker_core.Circuit`); a storage applies one step
of it under a short lock (in memory) or in one Lua script (Redis), and the
protected function always runs outside any lock.

The storage is built on the first call, not when the decorator runs: a
breaker without ``storage=`` follows the default storage a web app sets
after its views were decorated, and a forked child (gunicorn workers)
builds its own instead of sharing its parent's. Each wrapper keeps the
storage's ``admit`` step in its closure and is told when the storage
changes, so the happy path pays nothing for this.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from fluxus._config import default_storage
from fluxus._core import CIRCUIT_BREAKER, Policy, qualified_name, type_name
from fluxus._lazy import Lazy
from fluxus._redis import scheme_of
from fluxus._validate import Duration, check_callable, positive_int, positive_seconds
from fluxus.exceptions import REJECTIONS, CircuitOpenError
from fluxus.instrumentation._events import CircuitRejected, CircuitStateChanged
from fluxus.instrumentation._hooks import emit, get_hooks
from fluxus.instrumentation._observe import Observe, watch_for

from ._circuit import HALF_OPEN, OPEN, Circuit, CircuitState, Transition
from ._memory import MemoryStorage
from ._options import Exclude, _default_redis, _given_storage, _split_exclude
from ._redis_store import CircuitRedisStorage
from ._store import Admission, Storage

_OPEN = OPEN.value
_HALF_OPEN = HALF_OPEN.value


class _Store(Lazy[Storage]):
    """A breaker's storage, built on first use, its steps one attribute away."""

    admit: Callable[[str], Admission]
    succeed: Callable[[Any, str], Transition | None]
    fail: Callable[[Any, str], Transition | None]
    release: Callable[[Any, str], None]
    remote: bool


class CircuitBreaker(Policy):
    """Refuse calls for a while after failures; see :func:`circuit_breaker`."""

    _kind: ClassVar[str] = "circuit_breaker"
    _rank: ClassVar[int] = CIRCUIT_BREAKER
    _observed_here: ClassVar[bool] = True

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: Duration = 30.0,
        *,
        success_threshold: int = 1,
        half_open_max_requests: int = 1,
        exclude: Exclude | None = (),
        name: str | None = None,
        storage: str | CircuitRedisStorage | Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        seconds = positive_seconds(reset_timeout, "reset_timeout")
        check_callable(clock, "clock", optional=False)
        self.failure_threshold: int = positive_int(
            failure_threshold, "failure_threshold"
        )
        self.success_threshold: int = positive_int(
            success_threshold, "success_threshold"
        )
        self.half_open_max_requests: int = positive_int(
            half_open_max_requests, "half_open_max_requests"
        )
        self.reset_timeout = seconds
        self._excluded_types, self._excluded_predicates = _split_exclude(exclude)
        self._given = _given_storage(storage)
        self._clock = clock
        self._circuit = self._new_circuit()
        self._last_error: BaseException | None = None
        self._store = _Store(
            self._build,
            follows_default=self._given is None,
            on_forget=self._start_afresh,
            steps=("admit", "succeed", "fail", "release", "remote"),
        )

    # -- the storage, built on first use ------------------------------------

    def _new_circuit(self) -> Circuit:
        return Circuit(
            self.failure_threshold,
            self.reset_timeout,
            self.success_threshold,
            self.half_open_max_requests,
        )

    def _build(self) -> Storage:
        """Build the storage (on first use).

        Raises:
            ValueError: If the default storage cannot hold a circuit.
        """
        given = self._given
        uri = default_storage()
        if given is None and scheme_of(uri) != "memory":
            given = _default_redis(uri)
        if isinstance(given, CircuitRedisStorage):
            return given.circuit(self._circuit, lambda: self.name)
        return MemoryStorage(self._circuit, self._clock)

    def _start_afresh(self) -> None:
        """The storage was dropped: in memory the circuit starts closed again.

        A forked worker does not inherit the failures its parent counted.
        """
        self._circuit = self._new_circuit()
        self._last_error = None

    @property
    def _storage(self) -> Storage:
        """The storage, built on first use."""
        return self._store.get()

    @_storage.setter
    def _storage(self, storage: Storage) -> None:
        self._store.set(storage)

    @property
    def state(self) -> CircuitState:
        """The circuit's state; it reads ``OPEN`` until a call after the timeout."""
        return self._storage.state()

    @property
    def last_error(self) -> BaseException | None:
        """The exception that last opened the circuit (in this process), or ``None``."""
        return self._last_error

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
        return CircuitOpenError(name, retry_after)

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

    def _record_success(self, token: object, function: str) -> None:
        transition = self._store.succeed(token, function)
        if transition is not None:
            self._announce(transition, function, None)

    def _record_failure(self, token: object, exc: BaseException, function: str) -> None:
        if self._counts(exc):
            next(self._counters.failures)
            self._announce(self._store.fail(token, function), function, exc)
        else:
            self._store.release(token, function)

    async def _admit_async(self, function: str) -> object:
        next(self._counters.calls)
        token, retry_after, transition = await self._storage.admit_async(function)
        if token is None:
            raise self._refusal(retry_after, transition, function)
        self._announce(transition, function, None)
        return token

    async def _record_success_async(self, token: object, function: str) -> None:
        self._announce(
            await self._storage.succeed_async(token, function), function, None
        )

    async def _record_failure_async(
        self, token: object, exc: BaseException, function: str
    ) -> None:
        if self._counts(exc):
            next(self._counters.failures)
            transition = await self._storage.fail_async(token, function)
            self._announce(transition, function, exc)
        else:
            await self._storage.release_async(token, function)

    def _gate(self, func: Callable[..., Any]) -> BreakerGate:
        return BreakerGate(self, qualified_name(func))

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        function = qualified_name(func)
        watch = watch_for(observe)
        store = self._store
        refusal = self._refusal
        announce = self._announce
        succeed = self._record_success
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
            succeed(token, function)
            return result

        return breaker_wrapper

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        watch = watch_for(observe)
        store = self._store
        run = self._gate(func).run_async
        refusal = self._refusal
        announce = self._announce
        succeed = self._record_success
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
            succeed(token, function)
            return result

        return breaker_wrapper


class BreakerGate:
    """A breaker's steps around one function's calls: admit, succeed or fail.

    Both the breaker's own async wrapper and :func:`fluxus.stack` run an
    async call through :meth:`run_async`; a storage in memory is stepped
    without awaiting, a remote one is awaited.
    """

    __slots__ = ("_fail", "_succeed", "admit", "breaker", "function")

    def __init__(self, breaker: CircuitBreaker, function: str) -> None:
        self.breaker = breaker
        self.function = function
        self.admit = functools.partial(breaker._admit, function)  # noqa: SLF001 - its own package
        self._succeed = breaker._record_success  # noqa: SLF001
        self._fail = breaker._record_failure  # noqa: SLF001

    def succeed(self, token: object) -> None:
        """Record that the admitted call succeeded."""
        self._succeed(token, self.function)

    def fail(self, token: object, exc: BaseException) -> None:
        """Record that the admitted call raised *exc*."""
        self._fail(token, exc, self.function)

    async def run_async(
        self,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Await *func* under the breaker."""
        breaker, function = self.breaker, self.function
        store = breaker._store  # noqa: SLF001 - its own package
        if not store.get().remote:
            token = breaker._admit(function)  # noqa: SLF001
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                breaker._record_failure(token, exc, function)  # noqa: SLF001
                raise
            breaker._record_success(token, function)  # noqa: SLF001
            return result
        token = await breaker._admit_async(function)  # noqa: SLF001
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            await breaker._record_failure_async(token, exc, function)  # noqa: SLF001
            raise
        await breaker._record_success_async(token, function)  # noqa: SLF001
        return result


def circuit_breaker(
    failure_threshold: int = 5,
    reset_timeout: Duration = 30.0,
    *,
    success_threshold: int = 1,
    half_open_max_requests: int = 1,
    exclude: Exclude | None = (),
    name: str | None = None,
    storage: str | CircuitRedisStorage | Any | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CircuitBreaker:
    r"""Return a policy that stops calling a function that keeps failing.

    Closed, the breaker counts consecutive failures; at *failure_threshold*
    it opens (the call that opens it raises its own exception). Open, every
    call raises :class:`~fluxus.CircuitOpenError` at once. After
    *reset_timeout* the next call moves it to half-open, where at most
    *half_open_max_requests* trial calls run at the same time; a trial's slot
    is freed when it finishes. *success_threshold* consecutive trial
    successes close it; a trial failure opens it again.

    Args:
        failure_threshold: Consecutive failures that open the circuit.
        reset_timeout: Seconds (or a timedelta) the circuit stays open before
            a trial call, measured on the monotonic clock.
        success_threshold: Trial successes in a row that close the circuit.
        half_open_max_requests: Trial calls allowed to run at the same time.
        exclude: Exception types, a predicate ``exc -> bool``, or an iterable
            of both (``None`` is none): matching exceptions count neither as
            failure nor as success (neither do cancellation and other
            ``BaseException``\ s).
        name: The circuit's name, in errors, events and shared storage; by
            default ``module.qualname`` of the first decorated function.
            Give one when the state is shared.
        storage: ``"memory://"`` (in this process), a Redis URL or client,
            or a :class:`~fluxus.CircuitRedisStorage` for its options: the
            circuit is then shared by every process using the same name.
            ``None`` (the default) is the default storage: in this process,
            unless a web integration was given a Redis ``FLUXUS_STORAGE_URI``;
            it is looked up on the first call. The storage is built on first
            use and again in a forked child, which shares no connection with
            its parent (in memory, a child starts with a closed circuit).
        clock: Monotonic seconds for the in-memory timer; tests pass a fake.
            A circuit in Redis runs on the Redis server's clock instead.

    Returns:
        A :class:`CircuitBreaker`; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a threshold is below 1, *reset_timeout* is not
            positive or *storage* is not a usable URL.
    """
    return CircuitBreaker(
        failure_threshold,
        reset_timeout,
        success_threshold=success_threshold,
        half_open_max_requests=half_open_max_requests,
        exclude=exclude,
        name=name,
        storage=storage,
        clock=clock,
    )
