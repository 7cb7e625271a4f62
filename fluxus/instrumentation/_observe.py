"""Observers: the opt-in view of every call, for metrics and traces.

Events report decisions only. Metrics and traces also need the calls that
succeed, and their latency, so a backend such as
:mod:`fluxus.instrumentation.prometheus` registers an :class:`Observer`.
Each policy's wrapper checks ``WATCH.observers`` once per call: with no
observer that is the whole cost. With one, it hands the call to the
``observe`` that :func:`fluxus._core.wrap_with` built for it
(:func:`observing_sync` / :func:`observing_async`): that tells the
observers when the call starts and ends, and runs, in between, a plain
twin of the wrapper that never looks for observers. (The timeout still runs
its own wrapper a second time, flagged by a thread-local: :func:`outside`.)
Retry attempts are announced only to observers that ask for them
(``attempts = True``), the only ones that pay for the context variable
that numbers them.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Protocol

from ._hooks import report_once

if TYPE_CHECKING:
    from fluxus._core import Policy


class Observer(Protocol):
    """Something that watches calls start and end (metrics, traces).

    Attributes:
        attempts: Whether :meth:`start` also wants each retry attempt.
    """

    attempts: bool

    def start(self, policy: Policy, function: str, attempt: int) -> object:
        """Note a call starting; return what :meth:`end` needs.

        *attempt* is 0 for the call a policy protects, and 1, 2, ... for
        each attempt a ``retry`` makes inside it.
        """

    def end(self, state: Any, error: BaseException | None) -> None:
        """Note the call that :meth:`start` returned *state* for ending."""


class _Watch:
    __slots__ = ("attempts", "observers")

    def __init__(self) -> None:
        self.observers: tuple[Observer, ...] = ()
        self.attempts: tuple[Observer, ...] = ()

    def set(self, observers: tuple[Observer, ...]) -> None:
        self.attempts = tuple(o for o in observers if getattr(o, "attempts", False))
        self.observers = observers


#: Read by every wrapper on every call: keep it one attribute load.
WATCH = _Watch()
#: Never holds an observer: what a wrapper that is observed already reads.
UNWATCHED = _Watch()
_lock = threading.Lock()


class _Call:
    """One observed call: what an attempt inside it needs to know."""

    __slots__ = ("attempts", "function", "policy")

    def __init__(self, policy: Policy, function: str) -> None:
        self.policy = policy
        self.function = function
        self.attempts = 0


class _Entered(threading.local):
    wrapper: object = None


_ENTERED = _Entered()
_CALL: ContextVar[_Call | None] = ContextVar("fluxus_call", default=None)


def add_observer(observer: Observer) -> None:
    """Start telling *observer* about every call; adding it twice does nothing."""
    with _lock:
        if observer not in WATCH.observers:
            WATCH.set((*WATCH.observers, observer))


def remove_observer(observer: Observer) -> None:
    """Stop telling *observer* about calls; an unknown observer is ignored."""
    with _lock:
        WATCH.set(tuple(o for o in WATCH.observers if o is not observer))


def _start(
    observers: tuple[Observer, ...], policy: Policy, function: str, attempt: int
) -> list[tuple[Observer, Any]]:
    started = []
    for observer in observers:
        try:
            started.append((observer, observer.start(policy, function, attempt)))
        except Exception as exc:  # noqa: BLE001 - an observer's bug must not break the call
            report_once(observer, exc)
    return started


def _end(started: list[tuple[Observer, Any]], error: BaseException | None) -> None:
    for observer, state in reversed(started):
        try:
            observer.end(state, error)
        except Exception as exc:  # noqa: BLE001 - same
            report_once(observer, exc)


Observe = Callable[[tuple[Any, ...], dict[str, Any]], Any]


def observing_sync(policy: Policy, function: str, plain: Callable[..., Any]) -> Observe:
    """Return ``observe(args, kwargs)``: *plain* called between the observers.

    :func:`fluxus._core.wrap_with` builds every policy's wrapper twice: a
    plain one, which never looks for observers, and the one it returns,
    which hands its calls to this while observers are installed.
    """

    def observe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = _start(WATCH.observers, policy, function, 0)
        call = _CALL.set(_Call(policy, function)) if WATCH.attempts else None
        try:
            result = plain(*args, **kwargs)
        except BaseException as exc:
            _end(started, exc)
            raise
        finally:
            if call is not None:
                _CALL.reset(call)
        _end(started, None)
        return result

    return observe


def observing_async(
    policy: Policy, function: str, plain: Callable[..., Awaitable[Any]]
) -> Observe:
    """Return ``observe(args, kwargs)`` awaiting *plain*; see :func:`observing_sync`."""

    async def observe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = _start(WATCH.observers, policy, function, 0)
        call = _CALL.set(_Call(policy, function)) if WATCH.attempts else None
        try:
            result = await plain(*args, **kwargs)
        except BaseException as exc:
            _end(started, exc)
            raise
        finally:
            if call is not None:
                _CALL.reset(call)
        _end(started, None)
        return result

    return observe


def watch_for(observe: Observe | None) -> _Watch:
    """Return what a wrapper reads per call: :data:`WATCH`, or never-watched."""
    return UNWATCHED if observe is None else WATCH


# fluxus._timeout's observation, until it is built by wrap_with like the
# other policies: the same wrapper is run a second time, flagged (a
# thread-local) so that it takes its plain path.


def outside(wrapper: object) -> bool:
    """Return whether *wrapper* runs un-observed; consume the re-entry flag."""
    entered = _ENTERED
    if entered.wrapper is wrapper:
        entered.wrapper = None  # so a recursive call is observed again
        return False
    return True


def observe_sync(
    policy: Policy,
    function: str,
    wrapper: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run *wrapper* once more, its plain path, between the observers."""

    def flagged(*args: Any, **kwargs: Any) -> Any:
        _ENTERED.wrapper = wrapper
        try:
            return wrapper(*args, **kwargs)
        finally:
            _ENTERED.wrapper = None

    return observing_sync(policy, function, flagged)(args, kwargs)


async def observe_async(
    policy: Policy,
    function: str,
    wrapper: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Await *wrapper* once more, its plain path, between the observers."""

    async def flagged(*args: Any, **kwargs: Any) -> Any:
        _ENTERED.wrapper = wrapper
        try:
            # The wrapper's first statement, run by this await, consumes the flag.
            return await wrapper(*args, **kwargs)
        finally:
            _ENTERED.wrapper = None

    return await observing_async(policy, function, flagged)(args, kwargs)


def _next_attempt() -> tuple[_Call | None, int]:
    call = _CALL.get()
    if call is None:
        return None, 0
    call.attempts += 1
    return call, call.attempts


def attempts_sync(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap *func* so that each attempt a retry makes is observed."""

    def attempt(*args: Any, **kwargs: Any) -> Any:
        call, number = _next_attempt()
        observers = WATCH.attempts
        if call is None or not observers:
            return func(*args, **kwargs)
        started = _start(observers, call.policy, call.function, number)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _end(started, exc)
            raise
        _end(started, None)
        return result

    return attempt


def attempts_async(
    func: Callable[..., Awaitable[Any]],
) -> Callable[..., Awaitable[Any]]:
    """Wrap the coroutine function *func*; see :func:`attempts_sync`."""

    async def attempt(*args: Any, **kwargs: Any) -> Any:
        call, number = _next_attempt()
        observers = WATCH.attempts
        if call is None or not observers:
            return await func(*args, **kwargs)
        started = _start(observers, call.policy, call.function, number)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _end(started, exc)
            raise
        _end(started, None)
        return result

    return attempt


# Block forms (``with policy:``, ``for attempt in policy.attempts():``): the
# same calls to the observers as a decorated call's, made on entry and exit.


def block_started(policy: Policy, function: str, attempt: int = 0) -> Any:
    """Tell the observers a block starts; return what :func:`block_ended` needs.

    *attempt* 0 is the block a policy protects (told to every observer);
    1, 2, ... a retried block's attempts (told to those that ask for them).
    Returns ``None`` when nobody listens.
    """
    observers = WATCH.attempts if attempt else WATCH.observers
    if not observers:
        return None
    return _start(observers, policy, function, attempt)


def block_ended(started: Any, error: BaseException | None) -> None:
    """Tell the observers that :func:`block_started` told the block ended."""
    if started:
        _end(started, error)
