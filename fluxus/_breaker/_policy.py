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

import contextvars
import functools
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import Any, ClassVar, Self, cast

from fluxus._config import default_storage
from fluxus._core import (
    CIRCUIT_BREAKER,
    Policy,
    block_name,
    factory_of,
    qualified_name,
    type_name,
)
from fluxus._lazy import Lazy
from fluxus._redis import scheme_of
from fluxus._validate import (
    Duration,
    check_callable,
    check_fail_open,
    not_bare,
    positive_int,
    positive_seconds,
)
from fluxus.exceptions import REJECTIONS, CircuitOpenError
from fluxus.instrumentation._events import CircuitRejected, CircuitStateChanged
from fluxus.instrumentation._hooks import emit, get_hooks
from fluxus.instrumentation._observe import (
    WATCH,
    Observe,
    block_ended,
    block_started,
    watch_for,
)

from ._circuit import HALF_OPEN, OPEN, Circuit, CircuitState, Transition, Window
from ._memory import MemoryStorage
from ._options import Exclude, _default_redis, _given_storage, _split_exclude
from ._redis_store import CircuitRedisStorage
from ._store import Admission, Storage

_OPEN = OPEN.value
_HALF_OPEN = HALF_OPEN.value

#: What :meth:`CircuitBreaker.configure` may change.
_CONFIGURABLE = (
    "failure_threshold",
    "reset_timeout",
    "success_threshold",
    "half_open_max_requests",
    "failure_rate",
    "minimum_calls",
    "slow_call_rate",
)

_LISTENER_HOOKS = ("before_call", "success", "failure", "state_change")


def _rate(value: object, param: str, *, optional: bool) -> float | None:
    """Return *value*, a fraction in (0, 1] (or ``None`` if *optional*)."""
    if value is None and optional:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        expected = "a number in (0, 1]" + (" or None" if optional else "")
        msg = f"{param} must be {expected}, got {value!r}"
        raise TypeError(msg)
    if not 0 < value <= 1:
        msg = f"{param} must be > 0 and <= 1, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _settings(
    *,
    failure_threshold: object,
    reset_timeout: object,
    success_threshold: object,
    half_open_max_requests: object,
    failure_rate: object,
    minimum_calls: object,
    slow_call_duration: object,
    slow_call_rate: object,
) -> dict[str, Any]:
    """Check the circuit's settings as the factory takes them; return them.

    Raises:
        TypeError: If one has the wrong type.
        ValueError: If one is out of range, or no rule could open the circuit.
    """
    checked: dict[str, Any] = {
        "failure_threshold": None
        if failure_threshold is None
        else positive_int(failure_threshold, "failure_threshold"),
        "reset_timeout": positive_seconds(reset_timeout, "reset_timeout"),
        "success_threshold": positive_int(success_threshold, "success_threshold"),
        "half_open_max_requests": positive_int(
            half_open_max_requests, "half_open_max_requests"
        ),
        "failure_rate": _rate(failure_rate, "failure_rate", optional=True),
        "minimum_calls": positive_int(minimum_calls, "minimum_calls"),
        "slow_call_duration": None
        if slow_call_duration is None
        else positive_seconds(slow_call_duration, "slow_call_duration"),
        "slow_call_rate": _rate(slow_call_rate, "slow_call_rate", optional=False),
    }
    if (
        checked["failure_threshold"] is None
        and checked["failure_rate"] is None
        and checked["slow_call_duration"] is None
    ):
        msg = (
            "failure_threshold must be an int >= 1 when failure_rate and "
            "slow_call_duration are None (with no rule the circuit would "
            "never open), got None"
        )
        raise ValueError(msg)
    return checked


def _check_listeners(listeners: object) -> tuple[Any, ...]:
    """Return *listeners* as a tuple of objects with pybreaker's four hooks."""
    if listeners is None:
        return ()
    expected = (
        "listeners must be an iterable of pybreaker.CircuitBreakerListener "
        "(objects with before_call, success, failure and state_change)"
    )
    if not isinstance(listeners, Iterable) or isinstance(listeners, str | bytes):
        msg = f"{expected}, got {listeners!r}"
        raise TypeError(msg)
    items = tuple(listeners)
    for item in items:
        if not all(callable(getattr(item, hook, None)) for hook in _LISTENER_HOOKS):
            msg = f"{expected}, got {item!r} in it"
            raise TypeError(msg)
    return items


def _unreachable(storage: object) -> str | None:
    """Name *storage* if it refuses calls because it is down (fail closed)."""
    health = getattr(storage, "health", None)
    if health is None or not health.refusing():
        return None
    return str(storage.storage.description)  # type: ignore[attr-defined]


class ListenerState:
    """A state as pybreaker's listeners see it: only its ``name`` is read."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<ListenerState {self.name!r}>"


_LISTENER_STATES = {state: ListenerState(state.value) for state in CircuitState}


def _block() -> None:
    """Stands for a ``with breaker:`` block in the listeners' ``before_call``."""


#: An open block: its token, its start, its function, its observers' states.
_Entry = tuple[object, float, str, Any]


class _Blocks:
    """The blocks open in this thread or task, innermost last."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
            "fluxus_breaker_blocks", default=()
        )

    def push(self, entry: _Entry) -> None:
        self._open.set((*self._open.get(), entry))

    def pop(self) -> _Entry:
        entries = self._open.get()
        self._open.set(entries[:-1])
        return entries[-1]


class _Store(Lazy[Storage]):
    """A breaker's storage, built on first use, its steps one attribute away."""

    admit: Callable[[str], Admission]
    succeed: Callable[..., Transition | None]
    fail: Callable[..., Transition | None]
    release: Callable[[Any, str], None]
    remote: bool


class CircuitBreaker(Policy):
    """Refuse calls for a while after failures; see :func:`circuit_breaker`."""

    _kind: ClassVar[str] = "circuit_breaker"
    _rank: ClassVar[int] = CIRCUIT_BREAKER

    def __init__(
        self,
        failure_threshold: int | None = 5,
        reset_timeout: Duration = 30.0,
        *,
        success_threshold: int = 1,
        half_open_max_requests: int = 1,
        failure_rate: float | None = None,
        window: Duration = 60.0,
        minimum_calls: int = 10,
        slow_call_duration: Duration | None = None,
        slow_call_rate: float = 1.0,
        exclude: Exclude | None = (),
        listeners: Iterable[Any] | None = None,
        name: str | None = None,
        storage: str | CircuitRedisStorage | Any | None = None,
        fail_open: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name)
        not_bare(
            failure_threshold,
            "failure_threshold",
            "an int",
            "@fluxus.circuit_breaker()",
        )
        self._settings = _settings(
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
            half_open_max_requests=half_open_max_requests,
            failure_rate=failure_rate,
            minimum_calls=minimum_calls,
            slow_call_duration=slow_call_duration,
            slow_call_rate=slow_call_rate,
        )
        self._window = positive_seconds(window, "window")
        self._slow_call_duration: float | None = self._settings["slow_call_duration"]
        check_callable(clock, "clock", optional=False)
        self._excluded_types, self._excluded_predicates = _split_exclude(exclude)
        self._listeners = _check_listeners(listeners)
        if self._listeners:  # the plain steps stay as they are without them
            self._record_success = self._heard_success  # type: ignore[method-assign]
            self._record_failure = self._heard_failure  # type: ignore[method-assign]
        self._fail_open: bool = check_fail_open(fail_open)
        self._given = _given_storage(storage, fail_open=self._fail_open)
        self._clock = clock
        self._circuit = self._new_circuit()
        self._last_error: BaseException | None = None
        self._blocks = _Blocks()
        self._store = _Store(
            self._build,
            follows_default=self._given is None,
            on_forget=self._start_afresh,
            steps=("admit", "succeed", "fail", "release", "remote"),
        )

    # -- the storage, built on first use ------------------------------------

    def _new_circuit(self) -> Circuit:
        settings = self._settings
        return Circuit(
            settings["failure_threshold"],
            settings["reset_timeout"],
            settings["success_threshold"],
            settings["half_open_max_requests"],
            failure_rate=settings["failure_rate"],
            window=self._window,
            minimum_calls=settings["minimum_calls"],
            slow_call_rate=None
            if self._slow_call_duration is None
            else settings["slow_call_rate"],
        )

    # -- settings -------------------------------------------------------------

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that open the circuit (``None``: rule off)."""
        threshold: int | None = self._settings["failure_threshold"]
        return threshold

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before a trial call."""
        seconds: float = self._settings["reset_timeout"]
        return seconds

    @property
    def success_threshold(self) -> int:
        """Trial successes in a row that close the circuit."""
        threshold: int = self._settings["success_threshold"]
        return threshold

    @property
    def half_open_max_requests(self) -> int:
        """Trial calls allowed to run at the same time."""
        trials: int = self._settings["half_open_max_requests"]
        return trials

    @property
    def failure_rate(self) -> float | None:
        """The failed fraction of the window's calls that opens the circuit."""
        rate: float | None = self._settings["failure_rate"]
        return rate

    @property
    def window(self) -> float:
        """Seconds over which the rates are measured."""
        return self._window

    @property
    def minimum_calls(self) -> int:
        """Calls the window must hold before a rate can open the circuit."""
        calls: int = self._settings["minimum_calls"]
        return calls

    @property
    def slow_call_duration(self) -> float | None:
        """Seconds from which a call counts as slow (``None``: not told apart)."""
        return self._slow_call_duration

    @property
    def slow_call_rate(self) -> float:
        """The slow fraction of the window's calls that opens the circuit."""
        rate: float = self._settings["slow_call_rate"]
        return rate

    def configure(self, **changes: Any) -> None:
        """Change settings at run time, checked like :func:`circuit_breaker`'s.

        Takes ``failure_threshold``, ``reset_timeout``, ``success_threshold``,
        ``half_open_max_requests``, ``failure_rate``, ``minimum_calls`` and
        ``slow_call_rate``. The state and the counts are kept; the next step
        follows the new settings (in Redis, each process's next step sends
        its own).

        Raises:
            TypeError: If a name is not one of those, or a value has the
                wrong type.
            ValueError: If a value is out of range.
        """
        unknown = sorted(set(changes) - set(_CONFIGURABLE))
        if unknown:
            msg = (
                f"configure() cannot change {', '.join(unknown)}; it takes "
                f"{', '.join(_CONFIGURABLE)}"
            )
            raise TypeError(msg)
        settings = _settings(**(self._settings | changes))
        self._settings = settings
        circuit = self._circuit
        circuit.failure_threshold = settings["failure_threshold"]
        circuit.reset_timeout = settings["reset_timeout"]
        circuit.success_threshold = settings["success_threshold"]
        circuit.max_trials = settings["half_open_max_requests"]
        circuit.failure_rate = settings["failure_rate"]
        circuit.minimum_calls = settings["minimum_calls"]
        if self._slow_call_duration is not None:
            circuit.slow_call_rate = settings["slow_call_rate"]
        if circuit.window is None and circuit.failure_rate is not None:
            circuit.window = Window(self._window)

    def _build(self) -> Storage:
        """Build the storage (on first use).

        Raises:
            ValueError: If the default storage cannot hold a circuit.
        """
        given = self._given
        uri = default_storage()
        if given is None and scheme_of(uri) != "memory":
            given = _default_redis(uri, fail_open=self._fail_open)
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

    # -- block forms ------------------------------------------------------

    def __enter__(self) -> Self:
        """Admit the block, or raise :class:`~fluxus.CircuitOpenError`.

        The block's outcome is recorded on exit: an :class:`Exception`
        leaving it is a failure unless excluded; a ``BaseException`` counts
        neither. Events, :attr:`stats` and observers see a block as a
        decorated call of the function the block is written in.
        """
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            token = self._admit(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        if self._listeners:
            self._before_call(_block, (), {})
        self._blocks.push((token, self._clock(), function, observed))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the block's outcome; never swallows its exception."""
        token, started, function, observed = self._blocks.pop()
        if exc is None:
            self._record_success(token, function, slow=self._slow(started))
        else:
            self._record_failure(token, exc, function, slow=self._slow(started))
        if observed is not None:
            block_ended(observed, exc)

    async def __aenter__(self) -> Self:
        """Admit the block, awaiting a remote storage; see :meth:`__enter__`."""
        function = block_name(sys._getframe(1))  # noqa: SLF001 - the block's frame
        observed = block_started(self, function) if WATCH.observers else None
        try:
            if self._store.get().remote:
                token = await self._admit_async(function)
            else:
                token = self._admit(function)
        except BaseException as exc:
            block_ended(observed, exc)
            raise
        if self._listeners:
            self._before_call(_block, (), {})
        self._blocks.push((token, self._clock(), function, observed))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Record the block's outcome; see :meth:`__exit__`."""
        token, started, function, observed = self._blocks.pop()
        slow = self._slow(started)
        remote = self._store.get().remote
        if exc is None:
            if remote:
                await self._record_success_async(token, function, slow=slow)
            else:
                self._record_success(token, function, slow=slow)
        elif remote:
            await self._record_failure_async(token, exc, function, slow=slow)
        else:
            self._record_failure(token, exc, function, slow=slow)
        if observed is not None:
            block_ended(observed, exc)

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


class BreakerGate:
    """A breaker's steps around one function's calls: admit, succeed or fail.

    Both the breaker's own async wrapper and :func:`fluxus.stack` run an
    async call through :meth:`run_async`; a storage in memory is stepped
    without awaiting, a remote one is awaited.
    """

    __slots__ = ("_fail", "_succeed", "admit", "breaker", "full", "func", "function")

    def __init__(
        self,
        breaker: CircuitBreaker,
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
        if self.full:
            return await breaker._call_async(func, function, args, kwargs)  # noqa: SLF001
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


@factory_of(CircuitBreaker)
def circuit_breaker() -> None:
    r"""Return a policy that stops calling a function that keeps failing.

    Closed, the breaker counts consecutive failures; at *failure_threshold*
    it opens (the call that opens it raises its own exception). With
    *failure_rate* it also opens when, over the last *window* seconds, at
    least *minimum_calls* calls finished and the fraction that failed is at
    least *failure_rate*; with *slow_call_duration*, when the fraction of
    calls that took at least that long is at least *slow_call_rate* (a slow
    call still returns its result). The window slides by tenths of itself
    (ten time buckets: each call costs the same, however many there were),
    and it starts empty whenever the circuit changes state. Open, every
    call raises :class:`~fluxus.CircuitOpenError` at once. After
    *reset_timeout* the next call moves it to half-open, where at most
    *half_open_max_requests* trial calls run at the same time; a trial's slot
    is freed when it finishes. *success_threshold* consecutive trial
    successes close it; a trial failure opens it again.

    The breaker is also a context manager: ``with breaker:`` and
    ``async with breaker:`` admit the block (or raise
    :class:`~fluxus.CircuitOpenError`) and record its outcome on exit.

    Args:
        failure_threshold: Consecutive failures that open the circuit;
            ``None`` turns this rule off (a rate rule must then be on).
        reset_timeout: Seconds (or a timedelta) the circuit stays open before
            a trial call, measured on the monotonic clock.
        success_threshold: Trial successes in a row that close the circuit.
        half_open_max_requests: Trial calls allowed to run at the same time.
        failure_rate: The failed fraction (0 < r <= 1) of the window's calls
            that opens the circuit; ``None`` (the default) turns it off.
        window: Seconds (or a timedelta) the rates are measured over.
        minimum_calls: Calls the window must hold before a rate counts.
        slow_call_duration: Seconds (or a timedelta) from which a call counts
            as slow, measured on *clock*; ``None`` (the default): no call is.
        slow_call_rate: The slow fraction (0 < r <= 1) of the window's calls
            that opens the circuit, when *slow_call_duration* is given.
        exclude: Exception types, a predicate ``exc -> bool``, or an iterable
            of both (``None`` is none): matching exceptions count neither as
            failure nor as success (neither do cancellation and other
            ``BaseException``\ s).
        listeners: ``pybreaker.CircuitBreakerListener`` objects (or any with
            its four hooks): ``before_call(cb, func, *args, **kwargs)`` once a
            call is admitted, ``success(cb)``, ``failure(cb, exc)`` for a
            failure that counts, ``state_change(cb, old, new)`` with states
            whose ``name`` is pybreaker's; *cb* is this breaker.
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
        fail_open: While a Redis storage given as a URL or client, or the
            default storage, is unreachable: let calls through unprotected
            (``True``, the default) or refuse them with
            :class:`~fluxus.CircuitOpenError` (``False``). A
            :class:`~fluxus.CircuitRedisStorage` keeps its own
            ``fail_open``; ``fail_open=False`` with one that fails open is
            a ``ValueError``. In memory it changes nothing.
        clock: Monotonic seconds for the in-memory timer; tests pass a fake.
            A circuit in Redis runs on the Redis server's clock instead.

    Returns:
        A :class:`CircuitBreaker`; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a threshold is below 1, a duration is not positive,
            a rate is not in (0, 1], no rule can open the circuit,
            *storage* is not a usable URL, or *fail_open* is ``False`` and
            *storage* a :class:`~fluxus.CircuitRedisStorage` that fails open.
    """
