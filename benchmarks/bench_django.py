"""What the database rule and the Django middleware cost.

Run with ``python benchmarks/bench_django.py`` (needs Django,
Flask-SQLAlchemy). Two tables, each in one process with interleaved rounds:

- the per-call transaction check of the ``"thread"`` timeout
  (``fluxus._db.caller_in_transaction``): with no framework loaded (as
  measured in a child process would be the same dictionary look-ups), with
  Django and a connection open in the thread, and inside a Flask app
  context with a Flask-SQLAlchemy session; against an empty call;
- a 429 on an async view through Django's ASGI handler: the view returning
  a 429 itself, against a ``RateLimitExceeded`` answered by
  ``FluxusMiddleware`` in the event loop, and the same answered through
  ``process_exception`` (what Django does with it otherwise: a thread hop).
"""

# ruff: noqa: E402 - Django is configured before the modules that read settings
from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench",  # noqa: S106 - a benchmark's
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["fluxus.contrib.django"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=["fluxus.contrib.django.FluxusMiddleware"],
    LOGGING_CONFIG=None,
)
django.setup()
# Django logs every 4xx response (one thread hop of its own in async
# stacks); keep the records, drop the terminal output.
logging.getLogger("django").addHandler(logging.NullHandler())
logging.getLogger("django").propagate = False

import flask
import fluxus
import fluxus._timeout._strategies as driver
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.http import HttpResponse
from django.urls import path
from flask_sqlalchemy import SQLAlchemy
from fluxus._db import caller_in_transaction
from fluxus.contrib.django import FluxusMiddleware

from _harness import compare, report, time_async, time_sync


async def view_429(_request):
    return HttpResponse("slow down", status=429, headers={"Retry-After": "2"})


async def fluxus_429(_request):
    raise fluxus.RateLimitExceeded("bench", 1.5)


urlpatterns = [path("view-429", view_429), path("fluxus-429", fluxus_429)]


def asgi_get(handler, url):
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": url,
        "raw_path": url.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench")],
        "client": ("127.0.0.1", 1234),
        "server": ("bench", 80),
    }
    body = {"type": "http.request", "body": b"", "more_body": False}

    async def send(_message):
        return None

    async def call():
        sent = []

        async def receive():
            if sent:  # the disconnect listener: wait until cancelled
                await asyncio.Event().wait()
            sent.append(1)
            return body

        await handler(scope, receive, send)

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    calls = args.calls

    def nothing():
        return False

    connection.ensure_connection()  # this thread holds a Django connection
    app = flask.Flask("bench")
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db = SQLAlchemy(app)

    def in_flask():
        with app.app_context():
            db.session.execute(db.text("SELECT 1"))
            return time_sync(caller_in_transaction, calls)

    medians = compare(
        {
            "empty call": lambda: time_sync(nothing, calls),
            "check, Django connection": lambda: time_sync(caller_in_transaction, calls),
            "check, + Flask-SQLAlchemy session": in_flask,
        },
        args.rounds,
    )
    lines = report(
        f"transaction check per call, {args.rounds} rounds x {calls} calls",
        medians,
        baseline="empty call",
        reference="check, Django connection",
    )

    # The whole "thread" timeout call, with the check and without it (the
    # driver as it was): the check's share of a call.
    timed = fluxus.timeout(5.0)(nothing)
    thread_calls = calls // 20

    def without_check():
        saved = driver.caller_in_transaction
        driver.caller_in_transaction = nothing
        try:
            return time_sync(timed, thread_calls)
        finally:
            driver.caller_in_transaction = saved

    medians = compare(
        {
            "timeout call, no check": without_check,
            "timeout call, with check": lambda: time_sync(timed, thread_calls),
        },
        args.rounds,
    )
    lines += [
        "",
        *report(
            f'a "thread" timeout call, {args.rounds} rounds x {thread_calls} calls',
            medians,
            baseline="timeout call, no check",
            reference="timeout call, with check",
        ),
    ]

    requests = calls // 200
    taking_over = ASGIHandler()
    through_exception = ASGIHandler()
    for handler in (taking_over, through_exception):
        handler.load_middleware(is_async=True)
    # The same middleware without the event-loop answer: Django's own path.
    saved = FluxusMiddleware.__init__

    def without(self, get_response):
        saved(self, get_response)
        self.__dict__.pop("process_view", None)

    FluxusMiddleware.__init__ = without
    through_exception.load_middleware(is_async=True)
    FluxusMiddleware.__init__ = saved

    medians = compare(
        {
            "view returns 429": lambda: time_async(
                asgi_get(taking_over, "/view-429"), requests
            ),
            "fluxus 429, in the loop": lambda: time_async(
                asgi_get(taking_over, "/fluxus-429"), requests
            ),
            "fluxus 429, process_exception": lambda: time_async(
                asgi_get(through_exception, "/fluxus-429"), requests
            ),
        },
        args.rounds,
    )
    lines += [
        "",
        *report(
            f"a 429 on an async view (ASGI), {args.rounds} rounds x {requests} "
            "requests",
            medians,
            baseline="view returns 429",
            reference="fluxus 429, in the loop",
        ),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
