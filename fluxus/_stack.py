"""``fluxus.stack``: the recommended layering, decided once for everybody.

Outermost first: fallback, dead letter, rate limit, bulkhead, circuit
breaker, timeout, retry, hedge.

- Hedge innermost: each retry attempt may race a backup call, and the
  attempt's outcome is the race's winner; a hedge outside the retries would
  duplicate whole retry sequences.
- Retry inside the timeout and the breaker: the breaker sees one outcome
  per exhausted sequence of attempts, and fluxus's own rejections are never
  retried.
- Timeout around the retries: one deadline bounds every attempt and every
  backoff wait together.
- Circuit breaker outside the timeout: a call that ran out of time counts as
  one failure, and an open circuit refuses calls before any time is spent.
- Bulkhead outside the breaker: a call refused for want of a slot never
  reaches the breaker, so a saturated service does not open the circuit;
  the calls that hold a slot are the ones the breaker judges. A call the
  breaker refuses gives its slot back at once.
- Rate limit outside the bulkhead: throttled calls never take a slot (nor
  wait for one), and throttling can never trip the breaker.
- Dead letter outside every gate: even calls refused by the limiter, the
  bulkhead or the breaker are captured, so nothing is lost.
- Fallback outermost: the failure is stored as a dead letter AND the caller
  gets the fallback's answer.
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
    layers,
    rank_of,
    wrap_with,
)
from .instrumentation._observe import WATCH

if TYPE_CHECKING:
    from ._gate import AdmitGate, AnswerGate, AroundGate, CaptureGate, SlotGate

#: Kinds that run the call themselves, innermost first; the stack wraps the
#: function in them.
_AROUND = ("hedge", "retry", "timeout")
#: Kinds with a gate (see :mod:`fluxus._gate`), outermost first.
_GATES = ("fallback", "dead_letter", "rate_limit", "bulkhead", "circuit_breaker")


class Stack(Decorating):
    """A reusable decorator applying several policies in the recommended order.

    Every function it decorates shares the same policy objects: one breaker
    and one limiter per downstream service. Hedge, retry and timeout wrap
    the function first; the gates of the rate limiter, the bulkhead, the
    breaker, the dead letter queue and the fallback (:mod:`fluxus._gate`)
    then run in ONE wrapper around them, instead of one wrapper per policy.

    Attributes:
        policies: The policies, outermost first.
    """

    label = "fluxus.stack"

    def __init__(self, *policies: Policy) -> None:
        seen = _by_kind(policies)
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
        slots = gates.get("bulkhead")
        if slots is not None and _thread_timeout(self, func):
            slots = slots.keeping(func)
        steps = (
            gates.get("fallback"),
            gates.get("dead_letter"),
            gates.get("rate_limit"),
            slots,
            gates.get("circuit_breaker"),
        )
        if inspect.iscoroutinefunction(func):
            wrapper = _wrap_async(inner, observed, *steps)
        else:
            wrapper = _wrap_sync(inner, observed, *steps)
        functools.update_wrapper(wrapper, func)
        return wrapper


def _by_kind(policies: tuple[object, ...]) -> dict[str, Policy]:
    """Check the policies given to a stack; return them by kind.

    Raises:
        TypeError: If one is not a policy (a factory not called, a stack,
            the decorated function of a bare ``@fluxus.stack``).
        ValueError: If none is given, or two are of one kind.
    """
    seen: dict[str, Policy] = {}
    for index, policy in enumerate(policies):
        if not isinstance(policy, Policy):
            msg = (
                f"policies[{index}] must be a fluxus policy such as "
                f"fluxus.retry(), got {policy!r}{_hint(policy, len(policies))}"
            )
            raise TypeError(msg)
        kind = kind_of(policy)
        if kind in seen:
            msg = (
                f"policies must hold at most one policy of each kind, got two "
                f"{kind} policies: {seen[kind]!r} and policies[{index}] {policy!r}"
            )
            raise ValueError(msg)
        seen[kind] = policy
    if not seen:
        msg = "policies must hold at least one policy, got none"
        raise ValueError(msg)
    return seen


def _hint(given: object, count: int) -> str:
    """Return what a stack's argument that is not a policy probably meant."""
    if isinstance(given, Stack):
        return ": give its policies (stack.policies) rather than the stack"
    module = getattr(given, "__module__", None) or ""
    if callable(given) and module.split(".")[0] == "fluxus":
        name = getattr(given, "__name__", "")
        return f": call the factory, as in fluxus.{name}(...)"
    if callable(given) and count == 1:
        return (
            ": use @fluxus.stack(fluxus.retry(), fluxus.timeout(5)) with "
            "parentheses, naming the policies"
        )
    return ""


def _thread_timeout(stack: Stack, func: Callable[..., Any]) -> bool:
    """Return whether a thread timeout may abandon *func*'s calls in the stack."""
    return any(
        kind_of(policy) == "timeout" and getattr(policy, "strategy", "") == "thread"
        for policy in (*stack.policies, *layers(func))
    )


def _wrap_sync(  # noqa: C901, PLR0917 - one parameter and one step per gate
    inner: Callable[..., Any],
    observed: Callable[..., Any],
    answer: AnswerGate | None,
    letters: CaptureGate | None,
    limiter: AdmitGate | None,
    slots: SlotGate | None,
    breaker: AroundGate | None,
) -> Callable[..., Any]:
    """Return the sync wrapper: admissions, the call, outcomes, capture, answer."""
    on = answer.on if answer is not None else ()  # ``except ()`` catches nothing

    def stack_wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901 - every gate, in layer order
        if WATCH.observers:
            return observed(*args, **kwargs)
        if answer is not None:
            answer.enter()
        try:
            if letters is not None:
                letters.enter()
            try:
                if limiter is not None:
                    limiter.admit(args, kwargs)
                held = slots.acquire() if slots is not None else None
                try:
                    if breaker is None:
                        return inner(*args, **kwargs)
                    token = breaker.admit()
                    try:
                        result = inner(*args, **kwargs)
                    except BaseException as exc:
                        breaker.fail(token, exc)
                        raise
                    breaker.succeed(token)
                    return result
                finally:
                    if slots is not None:
                        slots.release(held)
            except Exception as exc:
                if letters is None or not letters.capture(args, kwargs, exc):
                    raise
                return letters.default
        except on as exc:
            return answer.answer(args, kwargs, exc)  # type: ignore[union-attr] # on is () without it

    return stack_wrapper


def _wrap_async(  # noqa: C901, PLR0917 - one parameter and one step per gate
    inner: Callable[..., Awaitable[Any]],
    observed: Callable[..., Awaitable[Any]],
    answer: AnswerGate | None,
    letters: CaptureGate | None,
    limiter: AdmitGate | None,
    slots: SlotGate | None,
    breaker: AroundGate | None,
) -> Callable[..., Awaitable[Any]]:
    """Return the async wrapper: the same steps, awaited where they do I/O."""
    on = answer.on if answer is not None else ()

    async def stack_wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901 - every gate, in layer order
        if WATCH.observers:
            return await observed(*args, **kwargs)
        if answer is not None:
            answer.enter()
        try:
            if letters is not None:
                letters.enter()
            try:
                if limiter is not None:
                    await limiter.admit_async(args, kwargs)
                held = await slots.acquire_async() if slots is not None else None
                try:
                    if breaker is None:
                        return await inner(*args, **kwargs)
                    return await breaker.run_async(inner, args, kwargs)
                finally:
                    if slots is not None:
                        if slots.remote:
                            await slots.release_async(held)
                        else:
                            slots.give_back(held)
            except Exception as exc:
                if letters is None or not await letters.capture_async(
                    args, kwargs, exc
                ):
                    raise
                return letters.default
        except on as exc:
            return await answer.answer_async(args, kwargs, exc)  # type: ignore[union-attr] # on is () without it

    return stack_wrapper


def stack(*policies: Policy) -> Stack:
    """Return a decorator that applies *policies* in the recommended order.

    The order they are given in does not matter: outermost first, fluxus
    applies fallback, dead letter, rate limit, bulkhead, circuit breaker,
    timeout, retry, hedge (the module docstring says why).

    Raises:
        TypeError: If an argument is not a fluxus policy.
        ValueError: If two policies are of the same kind, or none is given.
    """
    return Stack(*policies)
