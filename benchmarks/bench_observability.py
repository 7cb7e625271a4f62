"""Happy-path cost of the Prometheus and OpenTelemetry backends.

Run with ``python benchmarks/bench_observability.py``. Each policy wraps the
same function twice: a trivial one (the backend's absolute cost per call)
and one that decodes a 1 KB JSON document (a small but real unit of work,
still far cheaper than any network call). A backend is installed only while
its contender is timed, so the contenders without it pay nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus.instrumentation import otel, prometheus, set_hooks
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from _harness import compare, report, time_sync

PAYLOAD = json.dumps({"items": [{"id": i, "name": f"item-{i}"} for i in range(40)]})


def trivial(x=1):
    return x


def decode(payload=PAYLOAD):
    return json.loads(payload)


def with_prometheus(fn, calls, registry):
    def timed():
        prometheus.install(registry)
        try:
            return time_sync(fn, calls)
        finally:
            prometheus.uninstall(registry)

    return timed


def with_otel(fn, calls, provider):
    def timed():
        otel.install(provider)
        try:
            return time_sync(fn, calls)
        finally:
            otel.uninstall()

    return timed


def contenders(work, calls, registry, provider):
    retry = fluxus.retry(3, name="bench-retry")(work)
    breaker = fluxus.circuit_breaker(name="bench-breaker")(work)
    return {
        "bare call": lambda: time_sync(work, calls),
        "fluxus.retry": lambda: time_sync(retry, calls),
        "retry + prometheus": with_prometheus(retry, calls, registry),
        "retry + otel": with_otel(retry, calls, provider),
        "fluxus.circuit_breaker": lambda: time_sync(breaker, calls),
        "breaker + prometheus": with_prometheus(breaker, calls, registry),
    }


def ratio_line(medians):
    retry = medians["retry + prometheus"] / medians["fluxus.retry"]
    breaker = medians["breaker + prometheus"] / medians["fluxus.circuit_breaker"]
    return (
        f"  with prometheus / without: retry {retry:.2f}x, "
        f"circuit_breaker {breaker:.2f}x"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=10_000)
    args = parser.parse_args()
    set_hooks([])  # nothing fails here; keep the default hook out of the way
    registry = CollectorRegistry()
    provider = TracerProvider()  # no exporter: the cost of making the spans

    lines: list[str] = []
    for label, work in [("trivial function", trivial), ("1 KB JSON decode", decode)]:
        medians = compare(contenders(work, args.calls, registry, provider), args.rounds)
        lines += [
            *report(
                f"{label}, {args.rounds} rounds x {args.calls} calls, medians",
                medians,
                baseline="bare call",
                reference="fluxus.retry",
            ),
            ratio_line(medians),
            "",
        ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
