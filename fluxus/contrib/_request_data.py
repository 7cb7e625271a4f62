"""Web requests in dead letters: stored as data, not as a ``repr``.

A dead letter of a view holds its request. The codec of :mod:`fluxus.sinks`
asks this module (through :func:`fluxus.sinks._codec.register_encoder`) to
turn Django, Werkzeug (Flask) and Starlette requests into plain data: the
method, path, query string, headers other than ``Authorization`` and
``Cookie``, the body where it was read, and the user's id where known. The
letter can then be inspected, and replayed by a function that takes that
data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from fluxus.sinks._codec import register_encoder

#: Headers never stored: they carry credentials.
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _headers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    return {k: v for k, v in pairs if k.lower() not in SECRET_HEADERS}


def _text(raw: bytes | str) -> str | bytes:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw


def django_request(request: Any) -> dict[str, Any]:
    """Return a Django ``HttpRequest`` as data."""
    body: str | bytes | None = None
    with contextlib.suppress(Exception):  # the stream was read as a form
        body = _text(request.body)
    user = getattr(request, "user", None)
    return {
        "method": request.method,
        "path": request.path,
        "query": request.META.get("QUERY_STRING", ""),
        "headers": _headers(request.headers.items()),
        "body": body,
        "user": getattr(user, "pk", None)
        if getattr(user, "is_authenticated", False)
        else None,
    }


def werkzeug_request(request: Any) -> dict[str, Any]:
    """Return a Werkzeug (Flask) ``Request`` as data."""
    return {
        "method": request.method,
        "path": request.path,
        "query": _text(request.query_string),
        "headers": _headers(request.headers.items()),
        "body": _text(request.get_data(cache=True)),
        "user": (request.authorization or {}).get("username")
        if request.authorization is not None
        else None,
    }


def starlette_request(request: Any) -> dict[str, Any]:
    """Return a Starlette (FastAPI) ``Request`` as data; the body if it was read."""
    body = getattr(request, "_body", None)
    user = request.scope.get("user")
    return {
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": _headers(request.headers.items()),
        "body": None if body is None else _text(body),
        "user": getattr(user, "identity", None) if user is not None else None,
    }


def register() -> None:
    """Register the converters of the frameworks that are installed."""
    with contextlib.suppress(ImportError):
        from django.http import HttpRequest  # noqa: PLC0415 - optional

        register_encoder(HttpRequest, django_request)
    with contextlib.suppress(ImportError):
        from werkzeug.wrappers import Request  # noqa: PLC0415 - optional

        register_encoder(Request, werkzeug_request)
    with contextlib.suppress(ImportError):
        from starlette.requests import Request as StarletteRequest  # noqa: PLC0415 - optional

        register_encoder(StarletteRequest, starlette_request)


register()
