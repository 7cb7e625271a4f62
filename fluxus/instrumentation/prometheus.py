"""Prometheus metrics for every fluxus policy (``pip install fluxus[prometheus]``).

::

    import fluxus.instrumentation.prometheus

    fluxus.instrumentation.prometheus.install()  # into prometheus_client.REGISTRY

Metrics, each labelled with the policy's ``policy`` name and its ``kind``
(``retry``, ``timeout``, ``circuit_breaker``, ``rate_limit``,
``bulkhead``, ``hedge``, ``dead_letter``, ``fallback``) unless noted:

- ``fluxus_calls_total``: calls that entered a policy.
- ``fluxus_failures_total``: calls that left it with an exception
  (rejections and timeouts included).
- ``fluxus_call_duration_seconds``: a histogram of call latency, retries and
  waits included.
- ``fluxus_retries_total``, ``fluxus_rejections_total``,
  ``fluxus_timeouts_total``, ``fluxus_dead_letters_total``,
  ``fluxus_dead_letter_handler_failures_total``,
  ``fluxus_storage_unavailable_total``, ``fluxus_fallbacks_total``,
  ``fluxus_hedges_total`` (extra calls started),
  ``fluxus_hedges_won_total`` (calls an extra call won): one per decision.
- ``fluxus_circuit_state`` (labels ``policy``): 0 closed, 1 half-open,
  2 open, as this process last saw it.

Call arguments are never labels. :func:`install` is idempotent, and with
``PROMETHEUS_MULTIPROC_DIR`` set the metrics work in prometheus_client's
multiprocess mode (the circuit gauge keeps one series per live process:
in-memory circuits are per process).

This module is never imported by ``import fluxus``.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fluxus._extras import missing_extra

try:
    from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise missing_extra(__name__, "prometheus") from _missing

from ._events import (
    BulkheadRejected,
    CircuitRejected,
    CircuitStateChanged,
    DeadLettered,
    DeadLetterHandlerFailed,
    Event,
    FallbackUsed,
    HedgeStarted,
    HedgeWon,
    RateLimited,
    RetryScheduled,
    StorageUnavailable,
    TimedOut,
)
from ._hooks import add_hook, get_hooks, remove_hook
from ._observe import add_observer, remove_observer

if TYPE_CHECKING:
    from fluxus._core import Policy

__all__ = ["PrometheusMetrics", "install", "uninstall"]

#: ``fluxus_circuit_state`` values, by pybreaker state name.
CIRCUIT_STATES = {"closed": 0, "half-open": 1, "open": 2}

_LABELS = ("policy", "kind")
_lock = threading.Lock()
#: Metrics by registry, weakly: a registry that is gone takes its metrics
#: along (an id would be reused by the next registry built at that address).
_installed: weakref.WeakKeyDictionary[CollectorRegistry, PrometheusMetrics] = (
    weakref.WeakKeyDictionary()
)


class _Children:
    """One policy's labelled metrics, looked up once rather than per call."""

    __slots__ = ("calls", "duration", "failures")

    def __init__(self, metrics: PrometheusMetrics, name: str, kind: str) -> None:
        self.calls = metrics.calls.labels(name, kind)
        self.failures = metrics.failures.labels(name, kind)
        self.duration = metrics.duration.labels(name, kind)


class PrometheusMetrics:
    """The fluxus metrics in one registry: an event hook and a call observer.

    Build it with :func:`install`, which registers it once per registry.

    Args:
        registry: Where the metrics are registered.
        buckets: The latency histogram's bucket bounds in seconds.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
    ) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = _LABELS) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        self.calls: Counter = counter(
            "fluxus_calls", "Calls that entered a fluxus policy."
        )
        self.failures: Counter = counter(
            "fluxus_failures", "Calls that left a fluxus policy with an exception."
        )
        self.retries: Counter = counter(
            "fluxus_retries", "Retries scheduled.", ("policy",)
        )
        self.rejections: Counter = counter(
            "fluxus_rejections",
            "Calls refused by an open circuit, a rate limit or a full bulkhead.",
        )
        self.timeouts: Counter = counter(
            "fluxus_timeouts", "Calls that timed out.", ("policy",)
        )
        self.dead_letters: Counter = counter(
            "fluxus_dead_letters", "Failed calls kept as dead letters.", ("policy",)
        )
        self.handler_failures: Counter = counter(
            "fluxus_dead_letter_handler_failures",
            "Dead letters lost because the handler failed.",
            ("policy",),
        )
        self.fallbacks: Counter = counter(
            "fluxus_fallbacks", "Failed calls answered by a fallback.", ("policy",)
        )
        self.hedges: Counter = counter(
            "fluxus_hedges", "Extra calls hedges started.", ("policy",)
        )
        self.hedges_won: Counter = counter(
            "fluxus_hedges_won", "Calls won by an extra call of a hedge.", ("policy",)
        )
        self.storage_unavailable: Counter = counter(
            "fluxus_storage_unavailable", "Outages of a policy's shared storage."
        )
        self.circuit_state: Gauge = Gauge(
            "fluxus_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ("policy",),
            registry=registry,
            multiprocess_mode="liveall",
        )
        self.duration: Histogram = Histogram(
            "fluxus_call_duration_seconds",
            "Latency of calls through a fluxus policy, retries and waits included.",
            _LABELS,
            registry=registry,
            buckets=buckets,
        )
        self._children: weakref.WeakKeyDictionary[Policy, _Children] = (
            weakref.WeakKeyDictionary()
        )

    # -- the observer ------------------------------------------------------

    #: Calls only: retries are counted from the events.
    attempts = False

    def start(self, policy: Policy, function: str, attempt: int) -> object:  # noqa: ARG002
        """Start timing a protected call."""
        children = self._children.get(policy)
        if children is None:
            children = self._register(policy)
        return children, time.perf_counter()

    def end(self, state: tuple[_Children, float], error: BaseException | None) -> None:
        """Count the call and record its latency."""
        children, started = state
        children.duration.observe(time.perf_counter() - started)
        children.calls.inc()
        if isinstance(error, Exception):
            children.failures.inc()

    def _register(self, policy: Policy) -> _Children:
        children = _Children(self, policy.name, policy._kind)  # noqa: SLF001
        state = getattr(policy, "state", None)
        if state is not None and policy._kind == "circuit_breaker":  # noqa: SLF001
            self.circuit_state.labels(policy.name).set(CIRCUIT_STATES[state.value])
        # Keyed weakly by the policy: the dict keeps nothing alive, and a
        # policy built later at the address of one that is gone (another
        # name, perhaps) gets children of its own.
        with _lock:
            self._children[policy] = children
        return children

    # -- the event hook ----------------------------------------------------

    def __call__(self, event: Event) -> None:  # noqa: C901 - one branch per event kind
        """Count *event*: retries, rejections, timeouts, dead letters, states."""
        policy = event.policy
        if isinstance(event, RetryScheduled):
            self.retries.labels(policy).inc()
        elif isinstance(event, CircuitRejected):
            self.rejections.labels(policy, "circuit_breaker").inc()
        elif isinstance(event, RateLimited):
            self.rejections.labels(policy, "rate_limit").inc()
        elif isinstance(event, BulkheadRejected):
            self.rejections.labels(policy, "bulkhead").inc()
        elif isinstance(event, FallbackUsed):
            self.fallbacks.labels(policy).inc()
        elif isinstance(event, HedgeStarted):
            self.hedges.labels(policy).inc()
        elif isinstance(event, HedgeWon):
            self.hedges_won.labels(policy).inc()
        elif isinstance(event, TimedOut):
            self.timeouts.labels(policy).inc()
        elif isinstance(event, DeadLettered):
            self.dead_letters.labels(policy).inc()
        elif isinstance(event, DeadLetterHandlerFailed):
            self.handler_failures.labels(policy).inc()
        elif isinstance(event, CircuitStateChanged):
            self.circuit_state.labels(policy).set(CIRCUIT_STATES[event.new_state])
        elif isinstance(event, StorageUnavailable):
            kind = next(
                (k for k in ("circuit_breaker", "bulkhead") if k[:7] in event.kind),
                "rate_limit",
            )
            self.storage_unavailable.labels(policy, kind).inc()


def install(
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = Histogram.DEFAULT_BUCKETS,
) -> PrometheusMetrics:
    """Register the fluxus metrics and start feeding them; idempotent.

    Installing into a registry that already has them returns the metrics
    installed first, so libraries and applications may both call it.

    Args:
        registry: The registry; by default ``prometheus_client.REGISTRY``.
        buckets: The latency histogram's bucket bounds in seconds (used the
            first time only).

    Returns:
        The :class:`PrometheusMetrics` feeding *registry*.
    """
    registry = REGISTRY if registry is None else registry
    with _lock:
        metrics = _installed.get(registry)
        if metrics is None:
            metrics = _installed[registry] = PrometheusMetrics(registry, buckets)
    if metrics not in get_hooks():
        add_hook(metrics)
    add_observer(metrics)
    return metrics


def uninstall(registry: CollectorRegistry | None = None) -> None:
    """Stop feeding the metrics of *registry* (they stay registered)."""
    registry = REGISTRY if registry is None else registry
    with _lock:
        metrics = _installed.get(registry)
    if metrics is not None:
        remove_hook(metrics)
        remove_observer(metrics)
