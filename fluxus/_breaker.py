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

import math
import threading
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, ClassVar, Protocol

from ._breaker_core import CLOSED, HALF_OPEN, OPEN, Circuit, CircuitState, Transition
from ._breaker_redis import CircuitRedisStorage
from ._config import MEMORY, default_storage, track
from ._core import (
    CIRCUIT_BREAKER,
    Policy,
    positive_int,
    qualified_name,
    to_seconds,
    type_name,
)
from .exceptions import REJECTIONS, CircuitOpenError
from .instrumentation._events import CircuitRejected, CircuitStateChanged
from .instrumentation._hooks import emit, get_hooks
from .instrumentation._observe import WATCH, observe_async, observe_sync, outside

Exclude = (
    type[Exception]
    | Callable[[Exception], bool]
    | Iterable[type[Exception] | Callable[[Exception], bool]]
)

_OPEN = OPEN.value
_HALF_OPEN = HALF_OPEN.value

#: A step's answer: the token (``None``: rejected), the wait, what changed.
Admission = tuple[object | None, float, Transition | None]

_AWAITED: Admission = (None, -1.0, None)


def _awaited(_function: str) -> Admission:
    """Send an async call to the path that awaits a remote storage's steps.

    An async wrapper admits its calls with the in-memory storage's sync step
    and goes to the awaiting path only on a refusal with a negative wait,
    which no storage gives: choosing the path costs the happy path nothing.
    """
    return _AWAITED


class Storage(Protocol):
    """Where one circuit's state lives: in this process or shared."""

    #: Whether the steps do I/O (async functions then use the ``*_async`` steps).
    remote: bool

    def admit(self, function: str) -> Admission: ...
    def succeed(self, token: Any, function: str) -> Transition | None: ...
    def fail(self, token: Any, function: str) -> Transition | None: ...
    def release(self, token: Any, function: str) -> None: ...
    def state(self) -> CircuitState: ...
    def reset(self) -> Transition | None: ...
    def force_open(self) -> Transition | None: ...
    async def admit_async(self, function: str) -> Admission: ...
    async def succeed_async(self, token: Any, function: str) -> Transition | None: ...
    async def fail_async(self, token: Any, function: str) -> Transition | None: ...
    async def release_async(self, token: Any, function: str) -> None: ...


class MemoryStorage:
    """Keep the circuit in this process; each step holds a lock for microseconds.

    A closed circuit admits every call and a success with no failure to
    forget changes nothing, so the happy path takes no lock at all.
    """

    remote = False

    def __init__(self, circuit: Circuit, clock: Callable[[], float]) -> None:
        self.circuit = circuit
        self.clock = clock
        self.lock = threading.Lock()

    def admit(self, _function: str) -> Admission:
        """Admit a call or refuse it; see :meth:`Circuit.admit`."""
        circuit = self.circuit
        epoch = circuit.epoch  # before the state: see Circuit._move
        state = circuit.state
        if state is CLOSED:
            return epoch << 1, 0.0, None
        if state is OPEN:
            # Refusing needs no lock either: opened_at is written before the
            # state, and a stale one is older than reset_timeout, so it only
            # sends the caller to the locked path below.
            if circuit.forced:
                return None, math.inf, None
            wait = circuit.opened_at + circuit.reset_timeout - self.clock()
            if wait > 0:
                return None, wait, None
        with self.lock:
            return circuit.admit(self.clock())

    def succeed(self, token: int, _function: str) -> Transition | None:
        """Record a success; see :meth:`Circuit.succeed`."""
        circuit = self.circuit
        if not token & 1 and not circuit.failures:
            return None
        with self.lock:
            return circuit.succeed(token)

    def fail(self, token: int, _function: str) -> Transition | None:
        """Record a failure; see :meth:`Circuit.fail`."""
        with self.lock:
            return self.circuit.fail(token, self.clock())

    def release(self, token: int, _function: str) -> None:
        """Record an outcome that counts as neither; see :meth:`Circuit.release`."""
        if token & 1:
            with self.lock:
                self.circuit.release(token)

    def state(self) -> CircuitState:
        """Return the current state, without moving it."""
        return self.circuit.state

    def reset(self) -> Transition | None:
        """Close the circuit by hand."""
        with self.lock:
            return self.circuit.reset()

    def force_open(self) -> Transition | None:
        """Open the circuit by hand, until :meth:`reset`."""
        with self.lock:
            return self.circuit.force_open(self.clock())

    async def admit_async(self, function: str) -> Admission:
        """Same as :meth:`admit`: memory needs no I/O."""
        return self.admit(function)

    async def succeed_async(self, token: int, function: str) -> Transition | None:
        """Same as :meth:`succeed`."""
        return self.succeed(token, function)

    async def fail_async(self, token: int, function: str) -> Transition | None:
        """Same as :meth:`fail`."""
        return self.fail(token, function)

    async def release_async(self, token: int, function: str) -> None:
        """Same as :meth:`release`."""
        self.release(token, function)


class _Unbuilt:
    """The storage of a breaker before its first call (and after a fork).

    Every step builds the real storage, which replaces this stand-in in the
    breaker and in its wrappers, then runs there. It says ``remote`` so that
    an async wrapper takes the path that can await whatever gets built.
    """

    remote = True

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker

    def admit(self, function: str) -> Admission:
        return self._breaker._build().admit(function)  # noqa: SLF001 - its breaker

    def succeed(self, token: Any, function: str) -> Transition | None:
        return self._breaker._build().succeed(token, function)  # noqa: SLF001

    def fail(self, token: Any, function: str) -> Transition | None:
        return self._breaker._build().fail(token, function)  # noqa: SLF001

    def release(self, token: Any, function: str) -> None:
        self._breaker._build().release(token, function)  # noqa: SLF001

    def state(self) -> CircuitState:
        return self._breaker._build().state()  # noqa: SLF001

    def reset(self) -> Transition | None:
        return self._breaker._build().reset()  # noqa: SLF001

    def force_open(self) -> Transition | None:
        return self._breaker._build().force_open()  # noqa: SLF001

    async def admit_async(self, function: str) -> Admission:
        return await self._breaker._build().admit_async(function)  # noqa: SLF001

    async def succeed_async(self, token: Any, function: str) -> Transition | None:
        storage = self._breaker._build()  # noqa: SLF001 - its breaker
        return await storage.succeed_async(token, function)

    async def fail_async(self, token: Any, function: str) -> Transition | None:
        return await self._breaker._build().fail_async(token, function)  # noqa: SLF001

    async def release_async(self, token: Any, function: str) -> None:
        await self._breaker._build().release_async(token, function)  # noqa: SLF001


def _split_exclude(
    exclude: object,
) -> tuple[tuple[type[BaseException], ...], tuple[Callable[[Exception], bool], ...]]:
    if exclude is None:
        items: tuple[object, ...] = ()
    elif isinstance(exclude, type) or callable(exclude):
        items = (exclude,)
    elif isinstance(exclude, Iterable) and not isinstance(exclude, str | bytes):
        items = tuple(exclude)
    else:
        msg = (
            "exclude must be an exception type, a predicate exc -> bool, or an "
            f"iterable of them, got {exclude!r}"
        )
        raise TypeError(msg)
    types: list[type[BaseException]] = []
    predicates: list[Callable[[Exception], bool]] = []
    for item in items:
        if isinstance(item, type):
            if not issubclass(item, BaseException):
                msg = f"exclude must hold exception types or predicates, got {item!r}"
                raise TypeError(msg)
            types.append(item)
        elif callable(item):
            predicates.append(item)
        else:
            msg = f"exclude must hold exception types or predicates, got {item!r}"
            raise TypeError(msg)
    return tuple(types), tuple(predicates)


def _given_storage(storage: object) -> CircuitRedisStorage | str | None:
    """Check ``storage=`` when the breaker is built; ``None``: the default."""
    if storage is None:
        return None
    if storage == MEMORY:
        return MEMORY
    if isinstance(storage, CircuitRedisStorage):
        return storage
    return CircuitRedisStorage(storage, param="storage")


#: limits' spelling of a Redis socket URL, as the default storage may be given.
_LIMITS_UNIX = "redis+unix://"

_DEFAULT_REDIS_LOCK = threading.Lock()
#: One Redis storage per default URI: the breakers following it share clients.
_DEFAULT_REDIS: dict[str, CircuitRedisStorage] = {}


def _default_redis(uri: str) -> CircuitRedisStorage:
    """Return the shared Redis storage of the default storage *uri*.

    Raises:
        ValueError: If *uri* is neither ``memory://`` nor a Redis URL.
    """
    with _DEFAULT_REDIS_LOCK:
        storage = _DEFAULT_REDIS.get(uri)
        if storage is None:
            url = uri
            if url.startswith(_LIMITS_UNIX):
                url = "unix://" + url.removeprefix(_LIMITS_UNIX)
            scheme = urllib.parse.urlsplit(url).scheme
            if scheme not in {"redis", "rediss", "unix"}:
                msg = (
                    "a circuit breaker without storage= keeps its circuit in the "
                    "default storage, which must be 'memory://' or a Redis URL, "
                    f"got {scheme}:// (FLUXUS_STORAGE_URI); give the breaker a "
                    "storage of its own"
                )
                raise ValueError(msg)
            storage = _DEFAULT_REDIS[uri] = CircuitRedisStorage(
                url, param="the default storage"
            )
        return storage


class CircuitBreaker(Policy):
    """Refuse calls for a while after failures; see :func:`circuit_breaker`."""

    _kind: ClassVar[str] = "circuit_breaker"
    _rank: ClassVar[int] = CIRCUIT_BREAKER

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_timeout: float | Any = 30.0,
        *,
        success_threshold: int = 1,
        half_open_max_requests: int = 1,
        exclude: Exclude | None = (),
        name: str | None = None,
        storage: str | CircuitRedisStorage | Any | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        seconds = to_seconds(reset_timeout, "reset_timeout")
        if seconds <= 0:
            msg = f"reset_timeout must be > 0 seconds, got {reset_timeout!r}"
            raise ValueError(msg)
        if not callable(clock):
            msg = f"clock must be a callable returning seconds, got {clock!r}"
            raise TypeError(msg)
        self.failure_threshold = positive_int(failure_threshold, "failure_threshold")
        self.success_threshold = positive_int(success_threshold, "success_threshold")
        self.half_open_max_requests = positive_int(
            half_open_max_requests, "half_open_max_requests"
        )
        self.reset_timeout = seconds
        self._excluded_types, self._excluded_predicates = _split_exclude(exclude)
        self._given = _given_storage(storage)
        self._clock = clock
        self._circuit = self._new_circuit()
        self._unbuilt = _Unbuilt(self)
        self._storage: Storage = self._unbuilt
        self._build_lock = threading.Lock()
        #: One per wrapper: points its closure at the storage now in use.
        self._rebinders: list[Callable[[], None]] = []
        self._last_error: BaseException | None = None
        track(self)

    # -- the storage, built on first use ------------------------------------

    def _new_circuit(self) -> Circuit:
        return Circuit(
            self.failure_threshold,
            self.reset_timeout,
            self.success_threshold,
            self.half_open_max_requests,
        )

    def _build(self) -> Storage:
        """Build the storage on first use and tell the wrappers; return it.

        Raises:
            ValueError: If the default storage cannot hold a circuit.
        """
        with self._build_lock:
            storage = self._storage
            if storage is self._unbuilt:
                given = self._given
                uri = default_storage()
                if given is None and urllib.parse.urlsplit(uri).scheme != "memory":
                    given = _default_redis(uri)
                if isinstance(given, CircuitRedisStorage):
                    storage = given.circuit(self._circuit, lambda: self.name)
                else:
                    storage = MemoryStorage(self._circuit, self._clock)
                self._storage = storage
                for rebind in self._rebinders:
                    rebind()
            return storage

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the storage: after a fork, or when the default storage changes.

        In memory the circuit starts afresh, closed: a forked worker does not
        inherit the failures its parent counted.
        """
        if forked:  # pragma: no cover - forked children only
            # The parent's lock may be held by a thread the child lacks.
            self._build_lock = threading.Lock()
        elif self._given is not None or self._storage is self._unbuilt:
            return
        with self._build_lock:
            self._circuit = self._new_circuit()
            self._last_error = None
            self._storage = self._unbuilt
            for rebind in self._rebinders:
                rebind()

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
        token, retry_after, transition = self._storage.admit(function)
        if token is None:
            raise self._refusal(retry_after, transition, function)
        if transition is not None:
            self._announce(transition, function, None)
        return token

    def _record_success(self, token: object, function: str) -> None:
        transition = self._storage.succeed(token, function)
        if transition is not None:
            self._announce(transition, function, None)

    def _record_failure(self, token: object, exc: BaseException, function: str) -> None:
        if self._counts(exc):
            next(self._counters.failures)
            self._announce(self._storage.fail(token, function), function, exc)
        else:
            self._storage.release(token, function)

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

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        function = qualified_name(func)
        admit = self._storage.admit
        refusal = self._refusal
        announce = self._announce
        succeed = self._record_success
        fail = self._record_failure
        calls = self._counters.calls

        def rebind() -> None:
            nonlocal admit
            admit = self._storage.admit

        self._rebinders.append(rebind)

        def breaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(breaker_wrapper):
                return observe_sync(self, function, breaker_wrapper, args, kwargs)
            next(calls)
            token, retry_after, transition = admit(function)
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
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        admit: Callable[[str], Admission]
        refusal = self._refusal
        announce = self._announce
        succeed = self._record_success
        fail = self._record_failure
        calls = self._counters.calls
        remote_wrapper = self._wrap_remote_async(func, function)

        def rebind() -> None:
            nonlocal admit
            storage = self._storage
            admit = _awaited if storage.remote else storage.admit

        rebind()
        self._rebinders.append(rebind)

        async def breaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(breaker_wrapper):
                return await observe_async(
                    self, function, breaker_wrapper, args, kwargs
                )
            token, retry_after, transition = admit(function)
            if token is None:
                if retry_after < 0:  # the storage must be awaited: see _awaited
                    return await remote_wrapper(*args, **kwargs)  # counts the call
                next(calls)
                raise refusal(retry_after, transition, function)
            next(calls)
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

    def _wrap_remote_async(
        self, func: Callable[..., Awaitable[Any]], function: str
    ) -> Callable[..., Awaitable[Any]]:
        admit = self._admit_async
        succeed = self._record_success_async
        fail = self._record_failure_async

        # Only the async wrapper calls this one, after it decided to observe.
        async def breaker_wrapper(*args: Any, **kwargs: Any) -> Any:
            token = await admit(function)
            try:
                result = await func(*args, **kwargs)
            except BaseException as exc:
                await fail(token, exc, function)
                raise
            await succeed(token, function)
            return result

        return breaker_wrapper


def circuit_breaker(
    failure_threshold: int = 5,
    reset_timeout: float | Any = 30.0,
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
