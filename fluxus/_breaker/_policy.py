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

import time
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from fluxus._core import CIRCUIT_BREAKER, factory_of
from fluxus._validate import (
    Duration,
    check_callable,
    check_fail_open,
    not_bare,
    positive_seconds,
)

from ._blocks import _BlockForms, _Blocks
from ._configured import _Store
from ._drivers import _Drivers
from ._listeners import _check_listeners
from ._options import Exclude, _given_storage, _settings, _split_exclude
from ._redis_store import CircuitRedisStorage


class CircuitBreaker(_BlockForms, _Drivers):
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
