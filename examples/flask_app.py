"""A Flask app protected by fluxus.

Run it with ``python examples/flask_app.py`` and call
``curl -i http://127.0.0.1:5000/quote`` a few times: the flaky upstream is
retried, and the sixth call within ten seconds gets a 429 with
``Retry-After``. ``/status`` asks a service that is down: two 502s, then the
circuit opens and the answer is a 503 with ``Retry-After``. Set
``FLUXUS_STORAGE_URI=redis://localhost:6379/0`` to share the limits and the
circuit among several server processes. ``POST /orders/<order_id>`` is
protected by one ``fluxus.stack`` of all five policies: a failure that
survives the retries is kept in ``orders-dead-letters.jsonl`` for replay.
"""

from __future__ import annotations

import os

import flask
import fluxus
from _shared import fetch_quote, fetch_status, submit_order
from fluxus.contrib.flask import Fluxus, client_ip

app = flask.Flask(__name__)
# Behind a load balancer, name it so that client_ip reads X-Forwarded-For.
app.config["FLUXUS_TRUSTED_PROXIES"] = []
app.config["FLUXUS_STORAGE_URI"] = os.environ.get("FLUXUS_STORAGE_URI", "memory://")
Fluxus(app)


@app.get("/quote")
@fluxus.rate_limit("5/10 seconds", key=client_ip)
def quote() -> dict[str, str]:
    return {"quote": fetch_quote(), "client": client_ip()}


@app.get("/status")
def status() -> tuple[dict[str, str], int]:
    try:
        return {"status": fetch_status()}, 200
    except ConnectionError as exc:
        return {"error": str(exc)}, 502


orders = fluxus.stack(
    fluxus.retry(3, on=ConnectionError, backoff=fluxus.backoff.constant(0.05)),
    fluxus.timeout(2.0),
    fluxus.circuit_breaker(failure_threshold=5, reset_timeout=30.0, name="orders"),
    fluxus.rate_limit("20/minute", key=client_ip, name="orders"),
    # A client refused with 429/503 is told to come back: keep real failures only.
    fluxus.dead_letter(
        fluxus.sinks.JsonlFile("orders-dead-letters.jsonl"),
        should_dlq=lambda e: not fluxus.is_rejection(e),
    ),
)


@app.post("/orders/<order_id>")
@orders
def place_order(order_id: str) -> tuple[dict[str, str], int]:
    return {"order": order_id, "receipt": submit_order(order_id)}, 201


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
