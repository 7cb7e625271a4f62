from __future__ import annotations

import time

import fluxus
import pytest
from fluxus.instrumentation import otel, set_hooks
from fluxus.instrumentation._observe import WATCH
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from _failing import failing


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    otel.install(provider)
    yield exporter
    otel.uninstall()
    set_hooks(None)


def by_name(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


def test_a_span_per_call_and_per_attempt(mode, spans, instant):
    fn = fluxus.retry(3, name="billing")(mode.make(failing(2)))

    assert "ok" == mode.run(fn)

    finished = spans.get_finished_spans()
    assert ["fluxus.retry.attempt"] * 3 + ["fluxus.retry billing"] == [
        s.name for s in finished
    ]
    call = finished[-1]
    assert {call.context.span_id} == {s.parent.span_id for s in finished[:3]}
    assert [1, 2, 3] == [s.attributes["fluxus.retry.attempt"] for s in finished[:3]]
    assert [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET] == [
        s.status.status_code for s in finished[:3]
    ]
    assert 3 == call.attributes["fluxus.retry.attempts"]
    assert "billing" == call.attributes["fluxus.policy"]
    assert ["fluxus.retry_scheduled"] * 2 == [e.name for e in call.events]
    assert StatusCode.UNSET == call.status.status_code


def test_failures_set_the_error_status(mode, spans, instant):
    fn = fluxus.retry(2, name="boom")(mode.make(failing(5)))

    with pytest.raises(OSError):
        mode.run(fn)

    call = by_name(spans)["fluxus.retry boom"]
    assert StatusCode.ERROR == call.status.status_code
    assert 2 == call.attributes["fluxus.retry.attempts"]
    assert "exception" in [e.name for e in call.events]


def test_circuit_throttling_and_timeout_attributes(mode, spans):
    breaker = fluxus.circuit_breaker(1, 60.0, name="db")
    fn = breaker(mode.make(failing(5)))
    limited = fluxus.rate_limit("1/minute", name=f"otel-api-{mode.name}")(
        mode.make(lambda: "ok")
    )
    slow = fluxus.timeout(0.02, strategy="cooperative", name="slow")(
        mode.make(lambda: time.sleep(0.03))
    )

    with pytest.raises(OSError):
        mode.run(fn)
    with pytest.raises(fluxus.CircuitOpenError):
        mode.run(fn)
    mode.run(limited)
    with pytest.raises(fluxus.RateLimitExceeded):
        mode.run(limited)
    with pytest.raises(fluxus.DeadlineExceeded):
        mode.run(slow)

    finished = spans.get_finished_spans()
    opened, rejected = [s for s in finished if s.name == "fluxus.circuit_breaker db"]
    assert "open" == opened.attributes["fluxus.circuit.state"]
    assert "open" == rejected.attributes["fluxus.circuit.state"]
    assert rejected.attributes["fluxus.circuit.retry_after"] > 0
    throttled = [s for s in finished if s.name.startswith("fluxus.rate_limit")][-1]
    assert throttled.attributes["fluxus.rate_limit.throttled"] is True
    assert StatusCode.ERROR == throttled.status.status_code
    timed_out = by_name(spans)["fluxus.timeout slow"]
    assert timed_out.attributes["fluxus.timeout.timed_out"] is True
    assert 0.02 == timed_out.attributes["fluxus.timeout.seconds"]


def test_stacked_policies_nest_their_spans(mode, spans, instant):
    fn = fluxus.circuit_breaker(name="outer")(
        fluxus.retry(2, name="inner")(mode.make(failing(1)))
    )

    mode.run(fn)

    spans_by_name = by_name(spans)
    outer = spans_by_name["fluxus.circuit_breaker outer"]
    inner = spans_by_name["fluxus.retry inner"]
    assert outer.context.span_id == inner.parent.span_id


def test_install_is_idempotent(spans):
    tracing = otel.install()
    assert tracing is otel.install()
    assert 1 == WATCH.observers.count(tracing)
    replaced = otel.install(TracerProvider())
    assert tracing not in WATCH.observers
    assert replaced in WATCH.observers


def test_bulkhead_fallback_and_hedge_attributes(spans):
    import asyncio

    bh = fluxus.bulkhead(1, name="pool")
    guarded = bh(lambda: "ok")
    with bh, pytest.raises(fluxus.BulkheadFull):
        guarded()
    assert 0 == fluxus.fallback(value=0, name="cache")(failing(10))()
    state = {"calls": 0}

    @fluxus.hedge(0.01, name="edge")
    async def slow_first():
        state["calls"] += 1
        await asyncio.sleep(5 if state["calls"] == 1 else 0)
        return state["calls"]

    assert 2 == asyncio.run(slow_first())

    found = by_name(spans)
    # The block holding the slot has a span of its own, ended after the call's.
    refused, block = [s for s in spans.get_finished_spans() if s.name.endswith("pool")]
    assert refused.attributes["fluxus.bulkhead.rejected"] is True
    assert "fluxus.bulkhead.rejected" not in block.attributes
    assert found["fluxus.fallback cache"].attributes["fluxus.fallback.used"] is True
    edge = found["fluxus.hedge edge"].attributes
    assert (1, 1) == (edge["fluxus.hedge.hedges"], edge["fluxus.hedge.winner"])
