"""The decorator machinery every policy shares.

A policy is an object that decorates functions. It turns each function into
a wrapper through :meth:`Policy._wrap_sync` or :meth:`Policy._wrap_async`; this
module does the rest once for all of them: classes, methods, classmethods and
staticmethods, signatures, the layer record behind :func:`fluxus.layers`, and
the :class:`~fluxus.LayeringWarning` for hand-stacked policies.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import sys
import warnings
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar, overload
from urllib.parse import urlsplit, urlunsplit

from ._stats import Counters, Stats
from .exceptions import LayeringWarning

if TYPE_CHECKING:
    from types import FrameType

P = ParamSpec("P")
T = TypeVar("T")
C = TypeVar("C", bound=type)
S = TypeVar("S")

#: Layer ranks, innermost first: the order :func:`fluxus.stack` applies.
(
    HEDGE,
    RETRY,
    TIMEOUT,
    CIRCUIT_BREAKER,
    BULKHEAD,
    RATE_LIMIT,
    DEAD_LETTER,
    FALLBACK,
) = range(8)

#: The recommended order, outermost first, as the warnings spell it.
RECOMMENDED_ORDER = (
    "fallback, dead_letter, rate_limit, bulkhead, circuit_breaker, timeout, "
    "retry, hedge"
)

_LAYERS_ATTR = "__fluxus_layers__"


def qualified_name(obj: object) -> str:
    """Return ``module.qualname`` of a function or class."""
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    module = getattr(obj, "__module__", None)
    if module in (None, "builtins"):
        return name
    return f"{module}.{name}"


def to_seconds(value: object, param: str, *, allow_none: bool = False) -> float:
    """Return *value* (seconds or a timedelta) as finite, non-negative seconds.

    Raises:
        TypeError: If *value* is neither a real number nor a timedelta.
        ValueError: If it is negative, infinite or NaN.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        expected = "seconds (int, float or timedelta)"
        if allow_none:
            expected += " or None"
        msg = f"{param} must be {expected}, got {value!r}"
        raise TypeError(msg)
    if not math.isfinite(seconds) or seconds < 0:
        msg = f"{param} must be finite and >= 0 seconds, got {value!r}"
        raise ValueError(msg)
    return seconds


def check_callable(value: object, param: str) -> None:
    """Raise :class:`TypeError` unless *value* is a callable or ``None``."""
    if value is not None and not callable(value):
        msg = f"{param} must be a callable or None, got {value!r}"
        raise TypeError(msg)


def raise_replacement(
    hook: Callable[[Any], object] | None, error: BaseException, param: str
) -> None:
    """Raise the exception *hook* returns for *error*, ``from`` it.

    Returns when there is no hook or it returns ``None``: the caller then
    raises *error* itself.

    Raises:
        TypeError: If the hook returns something that is not an exception.
    """
    if hook is None:
        return
    replacement = hook(error)
    if replacement is None:
        return
    if not isinstance(replacement, BaseException):
        msg = f"{param} must return an exception or None, got {replacement!r}"
        raise TypeError(msg) from error
    raise replacement from error


#: Storage steps finishing for a cancelled caller (asyncio keeps only weak
#: references to tasks).
_FINISHING: set[asyncio.Future[Any]] = set()


def in_background(step: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run *step* to its end in a task of its own, kept alive until it is done."""
    task = asyncio.ensure_future(step)
    _FINISHING.add(task)
    task.add_done_callback(_FINISHING.discard)
    return task


async def shielded(step: Awaitable[T]) -> T:
    """Await a storage step that must not stop halfway, whatever the caller does.

    A script cancelled between the server running it and the client reading
    its reply has changed the shared state without telling anyone (a trial
    slot or a permit taken), and redis-py can even finish a command and drop
    a cancellation that arrived meanwhile. So the step runs to its end in a
    task of its own, and the caller's cancellation is raised at once.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        in_background(task)
        raise


def positive_int(value: object, param: str) -> int:
    """Return *value*, an int of at least 1, or raise naming *param*.

    Raises:
        TypeError: If *value* is not an int (bools are refused too).
        ValueError: If it is below 1.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        msg = f"{param} must be an int, got {value!r}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{param} must be >= 1, got {value}"
        raise ValueError(msg)
    return value


def mask_password(url: str) -> str:
    """Return *url* with its password, if any, replaced by ``***``.

    Storage URLs reach reprs, errors, events and the command line; their
    passwords must not.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def type_name(kind: type) -> str:
    """Return ``module.qualname`` of a class, builtins included."""
    return f"{kind.__module__}.{kind.__qualname__}"


class Decorating:
    """What makes policies and stacks decorators, typed for mypy."""

    def _decorator(self) -> Decorator:
        raise NotImplementedError

    @overload
    def __call__(self, target: C) -> C: ...
    @overload
    def __call__(self, target: classmethod[S, P, T]) -> classmethod[S, P, T]: ...
    @overload
    def __call__(self, target: staticmethod[P, T]) -> staticmethod[P, T]: ...
    @overload
    def __call__(self, target: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, target: Any) -> Any:
        """Protect *target*, a function, a method or every method of a class."""
        return decorate_target(self._decorator(), target)


class Policy(Decorating):
    """Base of the fluxus policies: a decorator object with shared state.

    Every function one policy object decorates shares that object, and so
    its state: one breaker, one limiter or one budget per downstream service.
    """

    _kind: ClassVar[str]
    _rank: ClassVar[int]

    def __init__(self, name: str | None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            msg = f"name must be a non-empty string, got {name!r}"
            raise TypeError(msg)
        self._name = name
        self._counters = Counters()

    @property
    def stats(self) -> Stats:
        """A snapshot of this policy's counters (calls, failures, ...)."""
        return self._counters.snapshot()

    @property
    def name(self) -> str:
        """The policy's name: given, or that of the first decorated function."""
        return self._name or f"<unbound {self._kind}>"

    def __repr__(self) -> str:
        return f"<fluxus.{type(self).__name__} {self.name!r}>"

    def _decorator(self) -> Decorator:
        return _Single(self)

    def _bind(self, func: Callable[..., Any]) -> None:
        if self._name is None:
            self._name = qualified_name(func)

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        raise NotImplementedError


def layers(func: object) -> tuple[Policy, ...]:
    """Return the fluxus policies wrapped around *func*, outermost first."""
    if isinstance(func, classmethod | staticmethod):
        func = func.__func__
    return getattr(func, _LAYERS_ATTR, ())


class Decorator(Protocol):
    """What :func:`decorate_target` applies: a policy or a stack of them."""

    @property
    def label(self) -> str:
        """How error messages name it, for example ``fluxus.retry``."""

    @property
    def policies(self) -> tuple[Policy, ...]:
        """The policies it applies, outermost first."""

    def wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Return the wrapper of one plain or ``async def`` function."""


def decorate_target(decorator: Decorator, target: Any) -> Any:
    """Apply *decorator* to a function, a classmethod, a staticmethod or a class.

    Raises:
        TypeError: If *target* is not callable, or is a generator function.
    """
    if isinstance(target, type):
        return _decorate_class(decorator, target)
    if isinstance(target, classmethod):
        return classmethod(decorate_target(decorator, target.__func__))
    if isinstance(target, staticmethod):
        return staticmethod(decorate_target(decorator, target.__func__))
    if not callable(target):
        msg = (
            f"{decorator.label} decorates functions, methods and classes, "
            f"not {target!r}"
        )
        raise TypeError(msg)
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        msg = (
            f"{decorator.label} cannot protect the generator function "
            f"{qualified_name(target)}: its body runs after the call returns"
        )
        raise TypeError(msg)

    inner = layers(target)
    innermost = decorator.policies[-1]
    if inner and inner[0]._rank > innermost._rank:  # noqa: SLF001
        _warn_layering(innermost, inner[0], target)
    wrapper = decorator.wrap_function(target)
    setattr(wrapper, _LAYERS_ATTR, (*decorator.policies, *inner))
    return wrapper


class _Single:
    """One policy, seen as a :class:`Decorator`."""

    __slots__ = ("policies",)

    def __init__(self, policy: Policy) -> None:
        self.policies = (policy,)

    @property
    def label(self) -> str:
        return f"fluxus.{self.policies[0]._kind}"  # noqa: SLF001

    def wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        return wrap_with(self.policies[0], func)


def wrap_with(policy: Policy, func: Callable[..., Any]) -> Callable[..., Any]:
    """Return *policy*'s wrapper of *func*, named and signed like *func*."""
    policy._bind(func)  # noqa: SLF001
    if inspect.iscoroutinefunction(func):
        wrapper = policy._wrap_async(func)  # noqa: SLF001
    else:
        wrapper = policy._wrap_sync(func)  # noqa: SLF001
    functools.update_wrapper(wrapper, func)
    return wrapper


def _decorate_class(decorator: Decorator, cls: C) -> C:
    for attr, value in list(vars(cls).items()):
        if attr.startswith("_"):
            continue
        if isinstance(value, classmethod | staticmethod) or inspect.isfunction(value):
            setattr(cls, attr, decorate_target(decorator, value))
    return cls


def _warn_layering(outer: Policy, inner: Policy, target: object) -> None:
    msg = (
        f"fluxus.{outer._kind} is applied outside fluxus.{inner._kind} on "  # noqa: SLF001
        f"{qualified_name(target)}; the recommended order, outermost first, is "
        f"{RECOMMENDED_ORDER} (fluxus.stack applies it)"
    )
    warnings.warn(msg, LayeringWarning, stacklevel=_stacklevel_outside_fluxus())


def _stacklevel_outside_fluxus() -> int:
    """Return the ``stacklevel`` that points at the first frame outside fluxus.

    The count starts at the caller of this function, the one that warns.
    """
    frame: FrameType | None = sys._getframe(1)  # noqa: SLF001
    level = 1
    while frame is not None and _is_fluxus_frame(frame):
        frame = frame.f_back
        level += 1
    return level


def _is_fluxus_frame(frame: FrameType) -> bool:
    module = str(frame.f_globals.get("__name__", ""))
    return module == "fluxus" or module.startswith("fluxus.")
