"""OpenTelemetry spans for every fluxus policy (``pip install fluxus[otel]``).

::

    import fluxus.instrumentation.otel

    fluxus.instrumentation.otel.install()  # the global tracer provider

Every call through a policy gets a span named ``fluxus.<kind> <policy>``
(``fluxus.retry billing.charge``), a child of the caller's span; each attempt
a retry makes gets a child span ``fluxus.retry.attempt``. Decisions are added
to the current span as span events (``fluxus.retry_scheduled``, ...) and as
attributes:

- ``fluxus.policy``, ``fluxus.kind``, ``code.function``: on every span;
- ``fluxus.retry.attempt`` on attempt spans, ``fluxus.retry.attempts`` (the
  calls made so far) on retry spans;
- ``fluxus.circuit.state`` and ``fluxus.circuit.retry_after`` when a circuit
  changes state or refuses a call;
- ``fluxus.rate_limit.throttled`` and ``fluxus.rate_limit.retry_after`` when a
  rate limit refuses a call;
- ``fluxus.timeout.timed_out`` and ``fluxus.timeout.seconds`` on a timeout;
- ``fluxus.bulkhead.rejected`` when a full bulkhead refuses a call;
- ``fluxus.fallback.used`` when a fallback answers a failed call;
- ``fluxus.hedge.hedges`` (extra calls started) and ``fluxus.hedge.winner``
  (the number of the extra call that won) on hedge spans.

A span whose call raises an ``Exception`` records it and gets the ERROR
status. Call arguments never become attributes.

This module is never imported by ``import fluxus``.
"""

from __future__ import annotations

import threading
from contextvars import Token
from typing import TYPE_CHECKING

from fluxus._extras import missing_extra

try:
    from opentelemetry import context, trace
    from opentelemetry.trace import Status, StatusCode, Tracer, TracerProvider
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise missing_extra(__name__, "otel") from _missing

from fluxus._version import __version__

from ._events import (
    BulkheadRejected,
    CircuitRejected,
    CircuitStateChanged,
    Event,
    FallbackUsed,
    HedgeStarted,
    HedgeWon,
    RateLimited,
    RetriesExhausted,
    RetryScheduled,
    TimedOut,
)
from ._hooks import add_hook, get_hooks, remove_hook
from ._observe import add_observer, remove_observer

if TYPE_CHECKING:
    from opentelemetry.context import Context

    from fluxus._core import Policy

__all__ = ["OpenTelemetryTracing", "install", "uninstall"]

_lock = threading.Lock()
_installed: OpenTelemetryTracing | None = None

_Primitive = str | bool | int | float


class OpenTelemetryTracing:
    """Spans for fluxus calls and attempts: an event hook and a call observer.

    Args:
        tracer_provider: Where the spans go; by default the global provider.
    """

    #: A span per retry attempt too.
    attempts = True

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer: Tracer = trace.get_tracer(
            "fluxus", __version__, tracer_provider=tracer_provider
        )

    def start(self, policy: Policy, function: str, attempt: int) -> object:
        """Open a span for a call (*attempt* 0) or a retry attempt; make it current."""
        kind = policy._kind  # noqa: SLF001
        attributes: dict[str, _Primitive] = {
            "fluxus.policy": policy.name,
            "fluxus.kind": kind,
            "code.function": function,
        }
        if attempt:
            name = "fluxus.retry.attempt"
            attributes["fluxus.retry.attempt"] = attempt
        else:
            name = f"fluxus.{kind} {policy.name}"
            if kind == "retry":
                attributes["fluxus.retry.attempts"] = 1
        span = self.tracer.start_span(name, attributes=attributes)
        token = context.attach(trace.set_span_in_context(span))
        return span, token

    def end(
        self, state: tuple[trace.Span, Token[Context]], error: BaseException | None
    ) -> None:
        """Close the span :meth:`start` opened, with an error status on failure."""
        span, token = state
        context.detach(token)
        if isinstance(error, Exception):
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__qualname__))
        span.end()

    def __call__(self, event: Event) -> None:  # noqa: C901 - one branch per event kind
        """Add *event* to the current span, as a span event and attributes."""
        span = trace.get_current_span()
        if not span.is_recording():
            return
        span.add_event(f"fluxus.{event.kind}", _attributes(event))
        if isinstance(event, RetryScheduled):
            span.set_attribute("fluxus.retry.attempts", event.attempt + 1)
        elif isinstance(event, RetriesExhausted):
            span.set_attribute("fluxus.retry.attempts", event.attempts)
        elif isinstance(event, CircuitStateChanged):
            span.set_attribute("fluxus.circuit.state", event.new_state)
        elif isinstance(event, CircuitRejected):
            span.set_attribute("fluxus.circuit.state", event.state)
            span.set_attribute("fluxus.circuit.retry_after", event.retry_after)
        elif isinstance(event, RateLimited):
            span.set_attribute("fluxus.rate_limit.throttled", True)  # noqa: FBT003
            span.set_attribute("fluxus.rate_limit.retry_after", event.retry_after)
        elif isinstance(event, TimedOut):
            span.set_attribute("fluxus.timeout.timed_out", True)  # noqa: FBT003
            span.set_attribute("fluxus.timeout.seconds", event.seconds)
        elif isinstance(event, BulkheadRejected):
            span.set_attribute("fluxus.bulkhead.rejected", True)  # noqa: FBT003
        elif isinstance(event, FallbackUsed):
            span.set_attribute("fluxus.fallback.used", True)  # noqa: FBT003
        elif isinstance(event, HedgeStarted):
            span.set_attribute("fluxus.hedge.hedges", event.hedge)
        elif isinstance(event, HedgeWon):
            span.set_attribute("fluxus.hedge.winner", event.hedge)


def _attributes(event: Event) -> dict[str, _Primitive]:
    return {
        f"fluxus.{key}": value
        for key, value in event.fields().items()
        if isinstance(value, _Primitive)
    }


def install(tracer_provider: TracerProvider | None = None) -> OpenTelemetryTracing:
    """Start tracing every fluxus call; idempotent.

    A second call returns the tracing installed first, unless it names
    another *tracer_provider*, which then replaces it.

    Args:
        tracer_provider: Where the spans go; by default the global provider.

    Returns:
        The :class:`OpenTelemetryTracing` installed.
    """
    global _installed  # noqa: PLW0603
    with _lock:
        current = _installed
        if current is not None and tracer_provider is None:
            tracing = current
        else:
            tracing = _installed = OpenTelemetryTracing(tracer_provider)
    if current is not None and current is not tracing:
        remove_hook(current)
        remove_observer(current)
    if tracing not in get_hooks():
        add_hook(tracing)
    add_observer(tracing)
    return tracing


def uninstall() -> None:
    """Stop tracing fluxus calls."""
    global _installed
    with _lock:
        current, _installed = _installed, None
    if current is not None:
        remove_hook(current)
        remove_observer(current)
