"""A single-file Django project protected by fluxus.

Run it with ``python examples/django_app.py runserver`` and call
``curl -i http://127.0.0.1:8000/quote`` (a sync view) or ``/aquote`` (an
async view) a few times: the flaky upstream is retried, and the sixth call
within ten seconds, to either view, gets a 429 page with ``Retry-After``.
``/status`` asks a service that is down: two 502s, then 503 from the open
circuit. ``FLUXUS_STORAGE_URI=redis://localhost:6379/0`` in the environment
shares the limits and the circuit among server processes.
"""

from __future__ import annotations

import asyncio
import os
import sys

from _shared import fetch_quote, fetch_status
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="an example, not a secret",  # noqa: S106 - an example project
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["fluxus.contrib.django.FluxusMiddleware"],
    FLUXUS_TRUSTED_PROXIES=[],  # for example ["10.0.0.0/8"] behind a proxy
    FLUXUS_STORAGE_URI=os.environ.get("FLUXUS_STORAGE_URI", "memory://"),
)

import django  # noqa: E402 - after settings.configure
import fluxus  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from fluxus.contrib.django import client_ip  # noqa: E402

django.setup()

#: One budget per client, shared by both views.
per_client = fluxus.rate_limit("5/10 seconds", key=client_ip)


@per_client
def quote(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"quote": fetch_quote()})


@per_client
@fluxus.retry(3, on=ConnectionError)
async def aquote(request: HttpRequest) -> JsonResponse:
    await asyncio.sleep(0.01)
    return JsonResponse({"quote": fetch_quote()})


def status(request: HttpRequest) -> JsonResponse:
    try:
        return JsonResponse({"status": fetch_status()})
    except ConnectionError as exc:
        return JsonResponse({"error": str(exc)}, status=502)


urlpatterns = [path("quote", quote), path("aquote", aquote), path("status", status)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
