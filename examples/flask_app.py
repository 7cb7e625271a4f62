"""A Flask app protected by fluxus.

Run it with ``python examples/flask_app.py`` and call
``curl -i http://127.0.0.1:5000/quote`` a few times: the flaky upstream is
retried, and the sixth call within ten seconds gets a 429 with
``Retry-After``. ``/status`` asks a service that is down: two 502s, then the
circuit opens and the answer is a 503 with ``Retry-After``. Set
``FLUXUS_STORAGE_URI=redis://localhost:6379/0`` to share the limits and the
circuit among several server processes.
"""

from __future__ import annotations

import os

import flask
import fluxus
from _shared import fetch_quote, fetch_status
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


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
