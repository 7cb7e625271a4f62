"""A Flask app protected by fluxus.

Run it with ``python examples/flask_app.py`` and call
``curl -i http://127.0.0.1:5000/quote`` a few times: the flaky upstream is
retried, and the sixth call within ten seconds gets a 429 with
``Retry-After``. ``/maintenance`` shows a 503 from an open circuit.
"""

from __future__ import annotations

import flask
import fluxus
from _shared import Window, fetch_quote
from fluxus.contrib.flask import Fluxus, client_ip

app = flask.Flask(__name__)
# Behind a load balancer, name it so that client_ip reads X-Forwarded-For.
app.config["FLUXUS_TRUSTED_PROXIES"] = []
Fluxus(app)

per_client = Window(limit=5, per=10.0)


@app.get("/quote")
def quote() -> dict[str, str]:
    per_client.check(client_ip())
    return {"quote": fetch_quote(), "client": client_ip()}


@app.get("/maintenance")
def maintenance() -> str:
    raise fluxus.CircuitOpenError("upstream", 30.0)


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=5000)
