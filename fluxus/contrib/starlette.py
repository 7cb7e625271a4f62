"""fluxus in Starlette and FastAPI: rejections as JSON answers, key functions.

.. code-block:: python

   from fastapi import FastAPI, Request
   from fluxus.contrib.starlette import client_ip, install

   app = FastAPI()
   install(app, trusted_proxies=["10.0.0.0/8"])

:class:`~fluxus.RateLimitExceeded` becomes 429, :class:`~fluxus.CircuitOpenError`
503 and :class:`~fluxus.DeadlineExceeded` 504, with a JSON body in
FastAPI's form (``{"detail": "..."}``) and ``Retry-After`` where a wait is
known. A WebSocket endpoint that is refused is closed with code 1013 (try
again later).

Key functions find the :class:`~starlette.requests.Request` (or
``WebSocket``) among the endpoint's arguments, so a FastAPI endpoint
limited per client declares one (``request: Request``). Under uvicorn,
``--forwarded-allow-ips`` may already have rewritten the client address
from ``X-Forwarded-For``; trust proxies in one place only.

Timeouts: ``async def`` endpoints are cancelled at the deadline whatever the
strategy. Sync endpoints run in Starlette's thread pool, where
``strategy="signal"`` is unavailable; ``"thread"`` works, and
``"cooperative"`` keeps thread-bound database sessions in their thread. See
``docs/howto/timeouts.rst``.
"""

from __future__ import annotations

import os
from typing import Any, Final, Protocol

from fluxus._extras import missing_extra

try:
    from starlette.requests import HTTPConnection
    from starlette.responses import JSONResponse, Response
    from starlette.websockets import WebSocket
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise missing_extra(__name__, "fastapi") from _missing

from fluxus.contrib._http import (
    DEFAULT_STORAGE_URI,
    REJECTIONS,
    TrustedProxies,
    check_storage_uri,
    rejection_for,
    use_storage_uri,
    user_or_ip,
)

__all__ = ["client_ip", "handle_rejection", "install", "storage_uri", "user_key"]

#: The WebSocket close code for "try again later" (RFC 6455 registry).
_TRY_AGAIN_LATER: Final = 1013


class _App(Protocol):
    """What :func:`install` needs of a Starlette or FastAPI app."""

    @property
    def state(self) -> Any: ...

    def add_exception_handler(
        self, exc_class_or_status_code: Any, handler: Any
    ) -> None:
        """Register *handler* for an exception class."""


class _State:
    """What :func:`install` keeps in ``app.state.fluxus``."""

    __slots__ = ("storage_uri", "trusted_proxies")

    def __init__(self, trusted_proxies: TrustedProxies, storage_uri: str) -> None:
        self.trusted_proxies = trusted_proxies
        self.storage_uri = storage_uri


def _from_environment() -> _State:
    return _State(
        TrustedProxies(
            os.environ.get("FLUXUS_TRUSTED_PROXIES", ""), "FLUXUS_TRUSTED_PROXIES"
        ),
        check_storage_uri(
            os.environ.get("FLUXUS_STORAGE_URI", DEFAULT_STORAGE_URI),
            "FLUXUS_STORAGE_URI",
        ),
    )


def install(
    app: _App,
    *,
    trusted_proxies: object = None,
    storage_uri: str | None = None,
) -> None:
    """Register the exception handlers and settings of fluxus on *app*.

    Args:
        app: A Starlette or FastAPI app.
        trusted_proxies: Addresses or networks whose ``X-Forwarded-For``
            entries :func:`client_ip` believes; by default the
            comma-separated ``FLUXUS_TRUSTED_PROXIES`` environment variable,
            else none (the header is ignored).
        storage_uri: The storage of the limiters and breakers built without
            ``storage=`` (for example ``"redis://localhost:6379/0"``, shared
            by the workers); by default the ``FLUXUS_STORAGE_URI``
            environment variable, else ``"memory://"``. When either is given
            it becomes this process's default storage, which such policies
            look up on their first call, even if decorated before.

    Raises:
        TypeError: If a setting has the wrong type.
        ValueError: If a setting holds a bad value.
    """
    state = _from_environment()
    if trusted_proxies is not None:
        state.trusted_proxies = TrustedProxies(trusted_proxies, "trusted_proxies")
    if storage_uri is not None:
        state.storage_uri = use_storage_uri(storage_uri, "storage_uri")
    elif "FLUXUS_STORAGE_URI" in os.environ:
        use_storage_uri(state.storage_uri, "FLUXUS_STORAGE_URI")
    app.state.fluxus = state
    for error in REJECTIONS:
        app.add_exception_handler(error, handle_rejection)


async def handle_rejection(conn: HTTPConnection, exc: Exception) -> Response | None:
    """Answer a fluxus rejection: 429, 503 or 504 with ``Retry-After``.

    Registered by :func:`install`; an HTTP request gets JSON
    ``{"detail": "..."}``, a WebSocket is closed with code 1013.
    """
    rejection = rejection_for(exc)
    if rejection is None:
        raise exc
    if isinstance(conn, WebSocket):
        await conn.close(code=_TRY_AGAIN_LATER, reason=rejection.detail)
        return None
    return JSONResponse(
        {"detail": rejection.detail},
        status_code=rejection.status,
        headers=rejection.headers,
    )


def _connection(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HTTPConnection):
            return value
    msg = (
        "fluxus.contrib.starlette key functions need the endpoint to take the "
        "Request (or WebSocket) as an argument, for example `request: Request`"
    )
    raise TypeError(msg)


def _state(conn: HTTPConnection) -> _State:
    app = conn.scope.get("app")
    state = getattr(getattr(app, "state", None), "fluxus", None)
    if isinstance(state, _State):
        return state
    return _from_environment()


def client_ip(*args: Any, **kwargs: Any) -> str:
    """Return the address of the client of the request among the arguments.

    A key function for per-client limits (``key=client_ip``). The
    ``X-Forwarded-For`` header counts only when the peer is one of the
    trusted proxies given to :func:`install`; see ``TrustedProxies``.

    Raises:
        TypeError: If no ``Request`` or ``WebSocket`` is among the arguments.
    """
    conn = _connection(args, kwargs)
    remote = conn.client.host if conn.client is not None else ""
    trusted = _state(conn).trusted_proxies
    if not trusted:
        return remote
    return trusted.client_address(remote, conn.headers.getlist("x-forwarded-for"))


def user_key(*args: Any, **kwargs: Any) -> str:
    """Return ``"user:<identity>"`` for an authenticated user, else ``"ip:<address>"``.

    The user is ``request.user``, set by Starlette's
    ``AuthenticationMiddleware``; without that middleware every request
    counts as anonymous.

    Raises:
        TypeError: If no ``Request`` or ``WebSocket`` is among the arguments.
    """
    conn = _connection(args, kwargs)
    user = conn.scope.get("user")
    user_id = None
    if user is not None and getattr(user, "is_authenticated", False):
        try:
            user_id = user.identity
        except NotImplementedError:  # BaseUser leaves identity optional
            user_id = user.display_name
    return user_or_ip(user_id, client_ip(conn))


def storage_uri(app: object) -> str:
    """Return the storage URI of the app's limiters and breakers.

    Returns:
        The ``storage_uri`` given to :func:`install`, else the
        ``FLUXUS_STORAGE_URI`` environment variable, else ``"memory://"``.
    """
    state = getattr(getattr(app, "state", None), "fluxus", None)
    if isinstance(state, _State):
        return state.storage_uri
    return _from_environment().storage_uri
