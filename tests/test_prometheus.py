from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import fluxus
import pytest
from fluxus.instrumentation import prometheus, set_hooks
from fluxus.instrumentation._observe import WATCH
from prometheus_client import CollectorRegistry, generate_latest

from _failing import failing


@pytest.fixture
def registry():
    registry = CollectorRegistry()
    prometheus.install(registry)
    yield registry
    prometheus.uninstall(registry)
    set_hooks(None)


def value(registry, name, **labels):
    return registry.get_sample_value(name, labels) or 0.0


def test_calls_failures_retries_and_latency(mode, registry, instant):
    fn = fluxus.retry(3, name="billing")(mode.make(failing(2)))
    boom = fluxus.retry(2, name="boom")(mode.make(failing(10)))

    assert "ok" == mode.run(fn)
    with pytest.raises(OSError):
        mode.run(boom)

    assert 1.0 == value(registry, "fluxus_calls_total", policy="billing", kind="retry")
    assert 0.0 == value(
        registry, "fluxus_failures_total", policy="billing", kind="retry"
    )
    assert 1.0 == value(registry, "fluxus_failures_total", policy="boom", kind="retry")
    assert 2.0 == value(registry, "fluxus_retries_total", policy="billing")
    assert 1.0 == value(registry, "fluxus_retries_total", policy="boom")
    assert 1.0 == value(
        registry, "fluxus_call_duration_seconds_count", policy="billing", kind="retry"
    )


def test_rejections_timeouts_dead_letters_and_circuit_state(mode, registry):
    breaker = fluxus.circuit_breaker(1, 60.0, name="db")
    api = f"prom-api-{mode.name}"  # the in-memory budget is shared by name
    limiter = fluxus.rate_limit("1/minute", name=api)
    sink = fluxus.sinks.Memory()
    guarded = fluxus.dead_letter(sink, name="dlq")(breaker(mode.make(failing(10))))
    limited = limiter(mode.make(lambda: "ok"))
    slow = fluxus.timeout(0.05, strategy="cooperative", name="slow")(
        mode.make(lambda: __import__("time").sleep(0.06))
    )

    for _ in range(3):
        with pytest.raises((OSError, fluxus.CircuitOpenError)):
            mode.run(guarded)
    mode.run(limited)
    with pytest.raises(fluxus.RateLimitExceeded):
        mode.run(limited)
    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(slow)

    assert 2.0 == value(
        registry, "fluxus_rejections_total", policy="db", kind="circuit_breaker"
    )
    assert 1.0 == value(
        registry, "fluxus_rejections_total", policy=api, kind="rate_limit"
    )
    assert 2.0 == value(registry, "fluxus_calls_total", policy=api, kind="rate_limit")
    assert 1.0 == value(
        registry, "fluxus_failures_total", policy=api, kind="rate_limit"
    )
    assert 1.0 == value(registry, "fluxus_timeouts_total", policy="slow")
    assert 3.0 == value(registry, "fluxus_dead_letters_total", policy="dlq")
    assert 2.0 == value(registry, "fluxus_circuit_state", policy="db")
    breaker.reset()
    assert 0.0 == value(registry, "fluxus_circuit_state", policy="db")


def test_the_circuit_gauge_starts_at_the_current_state(registry):
    breaker = fluxus.circuit_breaker(name="fresh")
    breaker.open()  # before any call is observed
    fn = breaker(lambda: "ok")
    with pytest.raises(fluxus.CircuitOpenError):
        fn()
    assert 2.0 == value(registry, "fluxus_circuit_state", policy="fresh")


def test_install_is_idempotent_and_uninstall_stops_the_feed(registry):
    first = prometheus.install(registry)
    assert first is prometheus.install(registry)
    assert 1 == WATCH.observers.count(first)
    fn = fluxus.retry(name="once")(lambda: "ok")
    fn()
    prometheus.uninstall(registry)
    fn()
    assert first not in WATCH.observers
    assert 1.0 == value(registry, "fluxus_calls_total", policy="once", kind="retry")
    prometheus.install(registry)
    fn()
    assert 2.0 == value(registry, "fluxus_calls_total", policy="once", kind="retry")


def test_names_follow_prometheus_conventions(registry):
    fluxus.retry(name="n")(lambda: "ok")()
    text = generate_latest(registry).decode()
    counters = [
        line.split()[2]
        for line in text.splitlines()
        if line.startswith("# TYPE") and line.endswith("counter")
    ]
    assert {
        "fluxus_calls_total",
        "fluxus_failures_total",
        "fluxus_retries_total",
        "fluxus_rejections_total",
        "fluxus_timeouts_total",
        "fluxus_dead_letters_total",
        "fluxus_dead_letter_handler_failures_total",
        "fluxus_storage_unavailable_total",
        "fluxus_fallbacks_total",
        "fluxus_hedges_total",
        "fluxus_hedges_won_total",
    } == set(counters)
    assert "# TYPE fluxus_call_duration_seconds histogram" in text
    assert "# TYPE fluxus_circuit_state gauge" in text


SCRIPT = textwrap.dedent(
    """
    import fluxus
    from fluxus.instrumentation import prometheus

    prometheus.install()
    breaker = fluxus.circuit_breaker(1, 60.0, name="shared")
    fn = breaker(lambda: 1 / 0)
    for _ in range(3):
        try:
            fn()
        except Exception:
            pass
    ok = fluxus.retry(name="ok")(lambda: "ok")
    for _ in range(5):
        ok()
    """
)


def test_multiprocess_mode(tmp_path):
    from prometheus_client import multiprocess

    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True, timeout=30)

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(tmp_path))

    assert 10.0 == value(registry, "fluxus_calls_total", policy="ok", kind="retry")
    assert 4.0 == value(
        registry, "fluxus_rejections_total", policy="shared", kind="circuit_breaker"
    )
    states = [
        s.value
        for metric in registry.collect()
        if metric.name == "fluxus_circuit_state"
        for s in metric.samples
    ]
    assert [2.0, 2.0] == states  # one series per process, each saw it open


def test_fallbacks_bulkhead_rejections_and_hedges(mode, registry):
    import asyncio

    bh = fluxus.bulkhead(1, name="pool")
    answered = fluxus.fallback(value="cached", name="cache")(mode.make(failing(10)))
    guarded = bh(mode.make(lambda: "ok"))
    with bh, pytest.raises(fluxus.BulkheadFull):
        mode.run(guarded)
    assert "cached" == mode.run(answered)

    state = {"calls": 0}

    @fluxus.hedge(0.01, name="edge")
    async def slow_first():
        state["calls"] += 1
        await asyncio.sleep(5 if state["calls"] == 1 else 0)
        return state["calls"]

    assert 2 == asyncio.run(slow_first())

    assert 1.0 == value(
        registry, "fluxus_rejections_total", policy="pool", kind="bulkhead"
    )
    # The block holding the slot is a call too, as a decorated one would be.
    assert 2.0 == value(registry, "fluxus_calls_total", policy="pool", kind="bulkhead")
    assert 1.0 == value(registry, "fluxus_fallbacks_total", policy="cache")
    assert 0.0 == value(
        registry, "fluxus_failures_total", policy="cache", kind="fallback"
    )
    assert 1.0 == value(registry, "fluxus_hedges_total", policy="edge")
    assert 1.0 == value(registry, "fluxus_hedges_won_total", policy="edge")


def test_a_new_registry_never_gets_the_metrics_of_one_that_is_gone():
    # Registries built one after another often reuse the address (the id)
    # of one collected before them; each must get metrics of its own.
    for _ in range(50):
        registry = CollectorRegistry()
        prometheus.install(registry)
        bh = fluxus.bulkhead(1, name="reused")
        try:
            with bh, pytest.raises(fluxus.BulkheadFull), bh:
                pass
        finally:
            prometheus.uninstall(registry)
            set_hooks(None)
        assert 1.0 == value(
            registry, "fluxus_rejections_total", policy="reused", kind="bulkhead"
        )
        del registry


def test_a_new_policy_is_counted_under_its_own_name(registry):
    # Policies built one after another often reuse the address of one that
    # is gone: each call is counted under the name of the policy it ran in.
    for i in range(50):
        fluxus.retry(1, name=f"short-lived-{i}")(lambda: None)()
        assert 1.0 == value(
            registry, "fluxus_calls_total", policy=f"short-lived-{i}", kind="retry"
        )
