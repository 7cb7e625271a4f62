"""A single-file Django project protected by fluxus.

Run it with ``python examples/django_app.py runserver`` and call
``curl -i http://127.0.0.1:8000/quote`` (a sync view) or ``/aquote`` (an
async view) a few times: the flaky upstream is retried, and the sixth call
within ten seconds gets a 429 page with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import sys

from _shared import Window, fetch_quote
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="an example, not a secret",  # noqa: S106 - an example project
    ALLOWED_HOSTS=["127.0.0.1", "localhost", "testserver"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["fluxus.contrib.django.FluxusMiddleware"],
    FLUXUS_TRUSTED_PROXIES=[],  # for example ["10.0.0.0/8"] behind a proxy
    FLUXUS_STORAGE_URI="memory://",  # "redis://..." to share limits
)

import django  # noqa: E402 - after settings.configure
import fluxus  # noqa: E402
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from fluxus.contrib.django import client_ip  # noqa: E402

django.setup()

per_client = Window(limit=5, per=10.0)


def quote(request: HttpRequest) -> JsonResponse:
    per_client.check(client_ip(request))
    return JsonResponse({"quote": fetch_quote()})


@fluxus.retry(3, on=ConnectionError)
async def aquote(request: HttpRequest) -> JsonResponse:
    per_client.check(client_ip(request))
    await asyncio.sleep(0.01)
    return JsonResponse({"quote": fetch_quote()})


urlpatterns = [path("quote", quote), path("aquote", aquote)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
