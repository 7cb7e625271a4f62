"""The decorator machinery every policy shares.

A policy is an object that decorates functions. It turns each function into
a wrapper through :meth:`Policy._wrap_sync` or :meth:`Policy._wrap_async`; this
module does the rest once for all of them: classes, methods, classmethods and
staticmethods, signatures, the layer record behind :func:`fluxus.layers`, and
the :class:`~fluxus.LayeringWarning` for hand-stacked policies.
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ClassVar, ParamSpec, Protocol, TypeVar, overload

from ._stats import Counters, Stats
from ._validate import non_empty_str
from .exceptions import LayeringWarning
from .instrumentation._observe import Observe, observing_async, observing_sync

if TYPE_CHECKING:
    from types import CodeType, FrameType

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


#: Block names by code object: a block pays one dict lookup for its name
#: (``benchmarks/bench_blocks.py``). It holds one entry per function that
#: runs a block, as the program's own code objects do.
_BLOCK_NAMES: dict[CodeType, str] = {}


def block_name(frame: FrameType) -> str:
    """Return ``module.qualname`` of the function whose *frame* runs a block.

    Events and observers name a block form (``with policy:``) after the
    function it is written in, as they name a decorated function.
    """
    code = frame.f_code
    name = _BLOCK_NAMES.get(code)
    if name is None:
        module = frame.f_globals.get("__name__")
        qualname = code.co_qualname
        name = _BLOCK_NAMES[code] = f"{module}.{qualname}" if module else qualname
    return name


def type_name(kind: type) -> str:
    """Return ``module.qualname`` of a class, builtins included."""
    return f"{kind.__module__}.{kind.__qualname__}"


def error_message(exc: BaseException) -> str:
    """Return ``str(exc)`` for an event, or its ``repr`` if ``__str__`` raises.

    A broken ``__str__`` must neither lose a dead letter nor break a fallback.
    """
    try:
        return str(exc)
    except Exception:  # noqa: BLE001 - any failure of user code
        return repr(exc)


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
        if name is not None:
            non_empty_str(name, "name")
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

    def _gate(self, func: Callable[..., Any]) -> object | None:
        """Return this policy's gate for *func* (see :mod:`fluxus._gate`), if any.

        Retry and timeout run the call themselves and have none.
        """
        del func
        return None

    def _wrap_sync(
        self, func: Callable[..., Any], observe: Observe | None
    ) -> Callable[..., Any]:
        """Return the wrapper of the plain function *func*.

        :func:`wrap_with` builds it twice: with ``observe=None``, the plain
        wrapper that never looks for observers; then the one it returns,
        which hands each call to ``observe(args, kwargs)`` while
        ``watch_for(observe).observers`` is not empty.
        """
        raise NotImplementedError

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]], observe: Observe | None
    ) -> Callable[..., Awaitable[Any]]:
        """Return the wrapper of the ``async def`` *func*; see :meth:`_wrap_sync`."""
        raise NotImplementedError


def factory_of(
    policy: Callable[P, T],
) -> Callable[[Callable[..., object]], Callable[P, T]]:
    """Make the decorated stub the factory of the class *policy*.

    The factory takes exactly the class's parameters (mypy and pyright see
    its ``__init__`` signature, ``inspect.signature`` shows it) and returns
    the class built with them, so the two cannot drift. The stub gives only
    its name and its docstring, where the parameters are documented
    (``@factory_of(CircuitBreaker)`` over ``def circuit_breaker() -> None``
    and its docstring).
    """

    def make(stub: Callable[..., object]) -> Callable[P, T]:
        def build(*args: P.args, **kwargs: P.kwargs) -> T:
            return policy(*args, **kwargs)

        for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
            setattr(build, attr, getattr(stub, attr))
        signature = inspect.signature(policy)
        build.__signature__ = signature.replace(  # type: ignore[attr-defined] # read by inspect.signature
            return_annotation=getattr(policy, "__name__", signature.return_annotation)
        )
        return build

    return make


def kind_of(policy: Policy) -> str:
    """Return *policy*'s kind, such as ``"circuit_breaker"``."""
    return policy._kind  # noqa: SLF001 - Policy's own module


def rank_of(policy: Policy) -> int:
    """Return *policy*'s layer rank (innermost 0); see :data:`RETRY`."""
    return policy._rank  # noqa: SLF001 - Policy's own module


def gate_of(policy: Policy, func: Callable[..., Any]) -> Any:
    """Bind *policy* to *func* and return its gate for it, or ``None``."""
    policy._bind(func)  # noqa: SLF001 - Policy's own module
    return policy._gate(func)  # noqa: SLF001


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
    """Return *policy*'s wrapper of *func*, named and signed like *func*.

    Observation (metrics, traces) happens here, once for every policy: the
    policy builds a plain wrapper that never looks for observers, then the
    one returned, which hands its calls to ``observe`` while observers are
    installed; ``observe`` runs the plain one between them.
    """
    policy._bind(func)  # noqa: SLF001
    is_async = inspect.iscoroutinefunction(func)
    build = policy._wrap_async if is_async else policy._wrap_sync  # noqa: SLF001
    observing = observing_async if is_async else observing_sync
    plain = build(func, None)
    wrapper = build(func, observing(policy, qualified_name(func), plain))
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
