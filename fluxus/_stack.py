"""``fluxus.stack``: the recommended layering, decided once for everybody.

Outermost first: dead letter, rate limit, circuit breaker, timeout, retry.

- Retry innermost: the breaker sees one outcome per exhausted sequence of
  attempts, and fluxus's own rejections are never retried.
- Timeout around the retries: one deadline bounds every attempt and every
  backoff wait together.
- Circuit breaker outside the timeout: a call that ran out of time counts as
  one failure, and an open circuit refuses calls before any time is spent.
- Rate limit outside the breaker: throttled calls never reach it, so
  throttling can never trip it.
- Dead letter outermost: even calls refused by the limiter or the breaker are
  captured, so nothing is lost.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ._core import (
    Decorating,
    Policy,
    gate_of,
    kind_of,
    rank_of,
    wrap_with,
)
from .instrumentation._observe import WATCH

if TYPE_CHECKING:
    from ._gate import AdmitGate, AroundGate, CaptureGate

#: Kinds that run the call themselves; the stack wraps the function in them.
_AROUND = ("retry", "timeout")
#: Kinds with a gate (see :mod:`fluxus._gate`), outermost first.
_GATES = ("dead_letter", "rate_limit", "circuit_breaker")


class Stack(Decorating):
    """A reusable decorator applying several policies in the recommended order.

    Every function it decorates shares the same policy objects: one breaker
    and one limiter per downstream service. Retry and timeout wrap the
    function first; the gates of the rate limiter, the breaker and the dead
    letter queue (:mod:`fluxus._gate`) then run in ONE wrapper around them,
    instead of one wrapper per policy.

    Attributes:
        policies: The policies, outermost first.
    """

    label = "fluxus.stack"

    def __init__(self, *policies: Policy) -> None:
        seen: dict[str, Policy] = {}
        for index, policy in enumerate(policies):
            if not isinstance(policy, Policy):
                msg = (
                    "policies must be fluxus policies (fluxus.retry(...), ...); "
                    f"argument {index} is {policy!r}"
                )
                raise TypeError(msg)
            kind = kind_of(policy)
            if kind in seen:
                msg = (
                    f"policies holds two {kind} policies ({seen[kind]!r} and "
                    f"{policy!r}); a stack takes at most one of each kind"
                )
                raise ValueError(msg)
            seen[kind] = policy
        if not seen:
            msg = "policies must name at least one policy"
            raise ValueError(msg)
        self.policies: tuple[Policy, ...] = tuple(
            sorted(seen.values(), key=rank_of, reverse=True)
        )
        self._by_kind = seen

    def __repr__(self) -> str:
        inner = ", ".join(repr(p) for p in self.policies)
        return f"fluxus.stack({inner})"

    def _decorator(self) -> Stack:
        return self

    def wrap_function(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """Return the one wrapper that applies every policy to *func*."""
        inner = func
        for kind in _AROUND:
            if (policy := self._by_kind.get(kind)) is not None:
                inner = wrap_with(policy, inner)
        gated = [self._by_kind[kind] for kind in _GATES if kind in self._by_kind]
        if not gated:
            return inner if inner is not func else wrap_with(self.policies[0], func)
        # With observers installed (metrics, traces) the call takes the
        # policies' own wrappers instead, so that each policy is observed.
        observed = inner
        for policy in reversed(gated):
            observed = wrap_with(policy, observed)
        gates = {kind_of(policy): gate_of(policy, func) for policy in gated}
        letters = gates.get("dead_letter")
        limiter = gates.get("rate_limit")
        breaker = gates.get("circuit_breaker")
        if inspect.iscoroutinefunction(func):
            wrapper = _wrap_async(inner, observed, letters, limiter, breaker)
        else:
            wrapper = _wrap_sync(inner, observed, letters, limiter, breaker)
        functools.update_wrapper(wrapper, func)
        return wrapper


def _wrap_sync(
    inner: Callable[..., Any],
    observed: Callable[..., Any],
    letters: CaptureGate | None,
    limiter: AdmitGate | None,
    breaker: AroundGate | None,
) -> Callable[..., Any]:
    """Return the sync wrapper: admissions, the call, outcomes, capture."""

    def stack_wrapper(*args: Any, **kwargs: Any) -> Any:
        if WATCH.observers:
            return observed(*args, **kwargs)
        if letters is not None:
            letters.enter()
        try:
            if limiter is not None:
                limiter.admit(args, kwargs)
            if breaker is None:
                return inner(*args, **kwargs)
            token = breaker.admit()
            try:
                result = inner(*args, **kwargs)
            except BaseException as exc:
                breaker.fail(token, exc)
                raise
            breaker.succeed(token)
        except Exception as exc:
            if letters is None or not letters.capture(args, kwargs, exc):
                raise
            return letters.default
        return result

    return stack_wrapper


def _wrap_async(
    inner: Callable[..., Awaitable[Any]],
    observed: Callable[..., Awaitable[Any]],
    letters: CaptureGate | None,
    limiter: AdmitGate | None,
    breaker: AroundGate | None,
) -> Callable[..., Awaitable[Any]]:
    """Return the async wrapper: the same steps, awaited where they do I/O."""

    async def stack_wrapper(*args: Any, **kwargs: Any) -> Any:
        if WATCH.observers:
            return await observed(*args, **kwargs)
        if letters is not None:
            letters.enter()
        try:
            if limiter is not None:
                await limiter.admit_async(args, kwargs)
            if breaker is None:
                return await inner(*args, **kwargs)
            return await breaker.run_async(inner, args, kwargs)
        except Exception as exc:
            if letters is None or not await letters.capture_async(args, kwargs, exc):
                raise
            return letters.default

    return stack_wrapper


def stack(*policies: Policy) -> Stack:
    """Return a decorator that applies *policies* in the recommended order.

    The order they are given in does not matter: outermost first, fluxus
    applies dead letter, rate limit, circuit breaker, timeout, retry.

    Raises:
        TypeError: If an argument is not a fluxus policy.
        ValueError: If two policies are of the same kind, or none is given.
    """
    return Stack(*policies)
