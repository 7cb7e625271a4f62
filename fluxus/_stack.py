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
from typing import Any, TypeVar, cast

from ._breaker import CircuitBreaker
from ._bulkhead import Bulkhead
from ._core import Decorating, Policy, layers, qualified_name, wrap_with
from ._dead_letter import DeadLetterQueue
from ._fallback import Fallback
from ._rate_limit import RateLimiter
from .instrumentation._observe import WATCH

K = TypeVar("K", bound=Policy)

#: Kinds whose happy path is a decision before and after the call; the stack
#: inlines them into one wrapper. Hedge, retry and timeout run the call
#: themselves, innermost first.
_AROUND = ("hedge", "retry", "timeout")
_GATES = ("circuit_breaker", "bulkhead", "rate_limit", "dead_letter", "fallback")


class Stack(Decorating):
    """A reusable decorator applying several policies in the recommended order.

    Every function it decorates shares the same policy objects: one breaker
    and one limiter per downstream service. Hedge, retry and timeout wrap
    the function first; the rate limiter's admission, the bulkhead's slot,
    the breaker's admission and outcome, the dead letter capture and the
    fallback then run in ONE wrapper around them, instead of one wrapper per
    policy.

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
            kind = policy._kind  # noqa: SLF001
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
            sorted(seen.values(), key=lambda p: p._rank, reverse=True)  # noqa: SLF001
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
        gates = _Gates(self._by_kind, func, abandons=_thread_timeout(self, func))
        if gates.empty:
            return inner if inner is not func else wrap_with(self.policies[0], func)
        # With observers installed (metrics, traces) the call takes the
        # policies' own wrappers instead, so that each policy is observed.
        observed = inner
        for kind in _GATES:
            if (policy := self._by_kind.get(kind)) is not None:
                observed = wrap_with(policy, observed)
        if inspect.iscoroutinefunction(func):
            wrapper = gates.wrap_async(inner, observed)
        else:
            wrapper = gates.wrap_sync(inner, observed)
        functools.update_wrapper(wrapper, func)
        return wrapper


def _pick(by_kind: dict[str, Policy], kind: str, cls: type[K]) -> K | None:
    policy = by_kind.get(kind)
    return policy if isinstance(policy, cls) else None


def _thread_timeout(stack: Stack, func: Callable[..., Any]) -> bool:
    """Return whether a thread timeout may abandon *func* inside the gates."""
    return any(
        policy._kind == "timeout" and getattr(policy, "strategy", "") == "thread"  # noqa: SLF001
        for policy in (*stack.policies, *layers(func))
    )


class _Gates:
    """The fallback, dead letter, rate limit, bulkhead and breaker steps."""

    def __init__(
        self, by_kind: dict[str, Policy], func: Callable[..., Any], *, abandons: bool
    ) -> None:
        self.function = qualified_name(func)
        self.fallback = _pick(by_kind, "fallback", Fallback)
        self.dead_letter = _pick(by_kind, "dead_letter", DeadLetterQueue)
        self.limiter = _pick(by_kind, "rate_limit", RateLimiter)
        self.bulkhead = _pick(by_kind, "bulkhead", Bulkhead)
        self.breaker = _pick(by_kind, "circuit_breaker", CircuitBreaker)
        self.abandons = abandons
        gates = (
            self.fallback,
            self.dead_letter,
            self.limiter,
            self.bulkhead,
            self.breaker,
        )
        for policy in gates:
            if policy is not None:
                policy._bind(func)  # noqa: SLF001
        self.empty = all(p is None for p in gates)
        self.redaction = (
            self.dead_letter._redaction(func) if self.dead_letter else None  # noqa: SLF001
        )
        if not inspect.iscoroutinefunction(func):
            if self.dead_letter is not None:
                self.dead_letter._require_sync_handler(func)  # noqa: SLF001
            if self.fallback is not None:
                self.fallback._require_sync_handler(func)  # noqa: SLF001

    def _rate_steps(self, *, is_async: bool) -> tuple[Any, Any, RateLimiter] | None:
        limiter = self.limiter
        if limiter is None:
            return None
        admit = limiter._admit_async if is_async else limiter._admit  # noqa: SLF001
        call_key = limiter._call_key if limiter._key is not None else None  # noqa: SLF001
        return admit, call_key, limiter

    def _fallback_steps(
        self, *, is_async: bool
    ) -> tuple[tuple[type[Exception], ...], Any, Any]:
        """Return what the fallback catches, its answer and its call counter."""
        fallback = self.fallback
        if fallback is None:
            return (), None, None  # ``except ()`` catches nothing
        answer = fallback._answer_async if is_async else fallback._answer_sync  # noqa: SLF001
        return fallback.on, answer, fallback._counters.calls  # noqa: SLF001

    def wrap_sync(  # noqa: C901 - one wrapper for every gate
        self, inner: Callable[..., Any], observed: Callable[..., Any]
    ) -> Callable[..., Any]:
        """Return the sync wrapper: admissions, the call, outcomes, capture."""
        function = self.function
        rate = self._rate_steps(is_async=False)
        bulkhead = self.bulkhead
        enter, leave = (
            (None, None)
            if bulkhead is None
            else bulkhead._sync_steps(keeps=self.abandons)  # noqa: SLF001
        )
        breaker = self.breaker
        circuit = (
            None
            if breaker is None
            else (breaker._admit, breaker._record_success, breaker._record_failure)  # noqa: SLF001
        )
        letters = self.dead_letter
        letter_calls = letters._counters.calls if letters else None  # noqa: SLF001
        redaction = self.redaction
        on, answer, fallback_calls = self._fallback_steps(is_async=False)

        def stack_wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901 - every gate, in layer order
            if WATCH.observers:
                return observed(*args, **kwargs)
            if fallback_calls is not None:
                next(fallback_calls)
            try:
                if letter_calls is not None:
                    next(letter_calls)
                try:
                    if rate is not None:
                        admit_rate, call_key, limiter = rate
                        key = call_key(args, kwargs) if call_key else ""
                        admit_rate(key, limiter.timeout, function)
                    entered = enter(function) if enter is not None else None
                    try:
                        if circuit is None:
                            return inner(*args, **kwargs)
                        admit, succeed, fail = circuit
                        token = admit(function)
                        try:
                            result = inner(*args, **kwargs)
                        except BaseException as exc:
                            fail(token, exc, function)
                            raise
                        succeed(token, function)
                        return result
                    finally:
                        if leave is not None:
                            leave(entered)
                except Exception as exc:
                    if letters is None:
                        raise
                    captured = letters._capture_sync(  # noqa: SLF001
                        function, redaction, args, kwargs, exc
                    )
                    if captured and not letters.reraise:
                        return letters.default
                    raise
            except on as exc:
                return answer(function, exc, args, kwargs)

        return stack_wrapper

    def wrap_async(  # noqa: C901 - one wrapper for every gate
        self,
        inner: Callable[..., Awaitable[Any]],
        observed: Callable[..., Awaitable[Any]],
    ) -> Callable[..., Awaitable[Any]]:
        """Return the async wrapper: the same steps, awaited where they do I/O."""
        function = self.function
        rate = self._rate_steps(is_async=True)
        bulkhead = self.bulkhead
        enter, leave = (
            (None, None) if bulkhead is None else bulkhead._async_steps()  # noqa: SLF001
        )
        breaker = self.breaker
        letters = self.dead_letter
        letter_calls = letters._counters.calls if letters else None  # noqa: SLF001
        redaction = self.redaction
        on, answer, fallback_calls = self._fallback_steps(is_async=True)

        async def stack_wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901 - every gate, in layer order
            if WATCH.observers:
                return await observed(*args, **kwargs)
            if fallback_calls is not None:
                next(fallback_calls)
            try:
                if letter_calls is not None:
                    next(letter_calls)
                try:
                    if rate is not None:
                        admit_rate, call_key, limiter = rate
                        key = call_key(args, kwargs) if call_key else ""
                        await admit_rate(key, limiter.timeout, function)
                    entered = await enter(function) if enter is not None else None
                    try:
                        if breaker is None:
                            return await inner(*args, **kwargs)
                        return await _through_breaker(
                            breaker, function, inner, args, kwargs
                        )
                    finally:
                        if leave is not None:
                            left = leave(entered)
                            if left is not None:
                                await cast("Awaitable[None]", left)
                except Exception as exc:
                    if letters is None:
                        raise
                    captured = await letters._capture_async(  # noqa: SLF001
                        function, redaction, args, kwargs, exc
                    )
                    if captured and not letters.reraise:
                        return letters.default
                    raise
            except on as exc:
                return await answer(function, exc, args, kwargs)

        return stack_wrapper


async def _through_breaker(
    breaker: CircuitBreaker,
    function: str,
    inner: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run *inner* under *breaker*, awaiting its steps when they do I/O."""
    if not breaker._storage.remote:  # noqa: SLF001
        token = breaker._admit(function)  # noqa: SLF001
        try:
            result = await inner(*args, **kwargs)
        except BaseException as exc:
            breaker._record_failure(token, exc, function)  # noqa: SLF001
            raise
        breaker._record_success(token, function)  # noqa: SLF001
        return result
    token = await breaker._admit_async(function)  # noqa: SLF001
    try:
        result = await inner(*args, **kwargs)
    except BaseException as exc:
        await breaker._record_failure_async(token, exc, function)  # noqa: SLF001
        raise
    await breaker._record_success_async(token, function)  # noqa: SLF001
    return result


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
