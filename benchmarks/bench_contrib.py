"""What fluxus.contrib costs a Flask request, against Werkzeug's own answers.

Run with ``python benchmarks/bench_contrib.py`` (needs ``fluxus[flask]``).
Three tables, each in one process with interleaved rounds:

- key functions inside a request: ``client_ip()`` without and with trusted
  proxies (three hops in ``X-Forwarded-For``), against reading
  ``request.remote_addr`` and Werkzeug's ``request.access_route``;
- a whole request through the test client, app without and with
  ``Fluxus(app)``: the happy path should not change;
- answering a rejection: the 429 ``handle_rejection`` builds, against
  returning Werkzeug's ``TooManyRequests`` from a view.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import flask
from werkzeug.exceptions import TooManyRequests

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus.contrib.flask import Fluxus, client_ip

from _harness import compare, report, time_sync

HEADERS = {"X-Forwarded-For": "198.51.100.4, 10.0.0.7, 10.0.0.8"}


def make_app(trusted=(), *, extension=True):
    app = flask.Flask("bench")
    app.config["FLUXUS_TRUSTED_PROXIES"] = list(trusted)
    if extension:
        Fluxus(app)

    @app.get("/")
    def index():
        return "ok"

    @app.get("/fluxus-429")
    def fluxus_429():
        raise fluxus.RateLimitExceeded("bench", 1.5)

    @app.get("/werkzeug-429")
    def werkzeug_429():
        raise TooManyRequests(retry_after=2)

    return app


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()
    calls = args.calls

    # Key functions: one request context per contender, pushed once.
    plain, trusted = make_app(), make_app(["10.0.0.0/8"])
    keys = {
        "request.remote_addr": (plain, lambda: flask.request.remote_addr),
        "request.access_route": (plain, lambda: flask.request.access_route[-1]),
        "client_ip()": (plain, client_ip),
        "client_ip() trusted": (trusted, client_ip),
    }
    timings = {}
    for name, (app, fn) in keys.items():
        context = app.test_request_context(
            "/", headers=HEADERS, environ_base={"REMOTE_ADDR": "10.0.0.2"}
        )

        def timing(context=context, fn=fn):
            with context:
                return time_sync(fn, calls)

        timings[name] = timing
    lines = report(
        f"key functions in a request, {args.rounds} rounds x {calls} calls",
        compare(timings, args.rounds),
        baseline="request.remote_addr",
        reference="request.access_route",
    )

    requests = calls // 20
    bare = make_app(extension=False).test_client()
    with_fluxus = make_app().test_client()
    medians = compare(
        {
            "flask, no fluxus": lambda: time_sync(lambda: bare.get("/"), requests),
            "flask + Fluxus(app)": lambda: time_sync(
                lambda: with_fluxus.get("/"), requests
            ),
        },
        args.rounds,
    )
    lines += [
        "",
        *report(
            f"a 200 request, {args.rounds} rounds x {requests} requests",
            medians,
            baseline="flask, no fluxus",
            reference="flask + Fluxus(app)",
        ),
    ]
    medians = compare(
        {
            "werkzeug 429": lambda: time_sync(
                lambda: with_fluxus.get("/werkzeug-429"), requests
            ),
            "fluxus 429": lambda: time_sync(
                lambda: with_fluxus.get("/fluxus-429"), requests
            ),
        },
        args.rounds,
    )
    lines += [
        "",
        *report(
            f"a 429 answer, {args.rounds} rounds x {requests} requests",
            medians,
            baseline="werkzeug 429",
            reference="fluxus 429",
        ),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
