"""fluxus in Flask: rejections as HTTP answers, key functions, settings.

.. code-block:: python

   from flask import Flask
   from fluxus.contrib.flask import Fluxus

   app = Flask(__name__)
   app.config["FLUXUS_TRUSTED_PROXIES"] = ["10.0.0.0/8"]
   Fluxus(app)  # or fluxus.contrib.flask.init_app(app)

:class:`~fluxus.RateLimitExceeded` becomes 429, :class:`~fluxus.CircuitOpenError`
503 and :class:`~fluxus.DeadlineExceeded` 504, as Werkzeug's error pages
with ``Retry-After`` where a wait is known. The app's own handlers for
those codes (``@app.errorhandler(429)``) render the page if it has them;
``Retry-After`` is added to whatever they return.

Config keys:

- ``FLUXUS_STORAGE_URI``: the storage of the limiters and breakers built
  without ``storage=`` (default ``"memory://"``), for example
  ``"redis://localhost:6379/0"`` to share limits and circuits among the
  workers; :meth:`Fluxus.init_app` makes it the process's default storage,
  which such policies look up on their first call. Read it with
  :func:`storage_uri`.
- ``FLUXUS_TRUSTED_PROXIES``: addresses or networks whose
  ``X-Forwarded-For`` entries :func:`client_ip` believes (default: none,
  the header is ignored). Behind Werkzeug's ``ProxyFix``, leave it empty:
  ``request.remote_addr`` is already the client.

Timeouts: views and helpers that use the request's database session
(Flask-SQLAlchemy's is scoped to the thread) want
``fluxus.timeout(..., strategy="cooperative")`` with the deadline handed to
the database; the default ``"thread"`` strategy suits outbound calls (the
request context is visible in its worker). See ``docs/howto/timeouts.rst``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from fluxus._extras import missing_extra

try:
    import flask
    from werkzeug.exceptions import (
        GatewayTimeout,
        HTTPException,
        ServiceUnavailable,
        TooManyRequests,
    )
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise missing_extra(__name__, "flask") from _missing

from fluxus.contrib._http import (
    DEFAULT_STORAGE_URI,
    REJECTIONS,
    TrustedProxies,
    check_storage_uri,
    rejection_for,
    use_storage_uri,
    user_or_ip,
)
from fluxus.exceptions import FluxusError

__all__ = [
    "Fluxus",
    "client_ip",
    "handle_rejection",
    "init_app",
    "storage_uri",
    "user_key",
]

_EXTENSION: Final = "fluxus"

_HTTP_ERRORS: Final[dict[int, type[HTTPException]]] = {
    429: TooManyRequests,
    503: ServiceUnavailable,
    504: GatewayTimeout,
}


def _default_current_user() -> object:
    return flask.g.get("user")


class Fluxus:
    """The fluxus extension of a Flask app, in Flask's extension style.

    Args:
        app: The app to set up now; or call :meth:`init_app` later
            (application factories).
        current_user: Returns the authenticated user of the current
            request, or ``None``; :func:`user_key` uses it. By default
            ``flask.g.user``; with Flask-Login, pass
            ``lambda: flask_login.current_user``.

    Raises:
        TypeError: If *current_user* is not callable.
    """

    def __init__(
        self,
        app: flask.Flask | None = None,
        *,
        current_user: Callable[[], object] | None = None,
    ) -> None:
        if current_user is not None and not callable(current_user):
            msg = f"current_user must be a callable or None, got {current_user!r}"
            raise TypeError(msg)
        self.current_user: Callable[[], object] = current_user or _default_current_user
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        """Register the error handlers on *app* and check its config.

        A ``FLUXUS_STORAGE_URI`` in the config becomes the storage of every
        limiter and breaker built without ``storage=``, in this process.

        Raises:
            TypeError: If ``FLUXUS_STORAGE_URI`` or ``FLUXUS_TRUSTED_PROXIES``
                has the wrong type.
            ValueError: If either holds a bad value.
        """
        if "FLUXUS_STORAGE_URI" in app.config:
            use_storage_uri(app.config["FLUXUS_STORAGE_URI"], "FLUXUS_STORAGE_URI")
        app.config.setdefault("FLUXUS_STORAGE_URI", DEFAULT_STORAGE_URI)
        app.config.setdefault("FLUXUS_TRUSTED_PROXIES", ())
        state = _State(
            self,
            TrustedProxies(
                app.config["FLUXUS_TRUSTED_PROXIES"], "FLUXUS_TRUSTED_PROXIES"
            ),
        )
        app.extensions[_EXTENSION] = state
        for error in REJECTIONS:
            app.register_error_handler(error, handle_rejection)


class _State:
    """What :meth:`Fluxus.init_app` keeps in ``app.extensions["fluxus"]``."""

    __slots__ = ("extension", "trusted_proxies")

    def __init__(self, extension: Fluxus, trusted_proxies: TrustedProxies) -> None:
        self.extension = extension
        self.trusted_proxies = trusted_proxies


_UNCONFIGURED: Final = Fluxus()


def init_app(app: flask.Flask) -> Fluxus:
    """Set fluxus up on *app*; the same as ``Fluxus(app)``.

    Returns:
        The :class:`Fluxus` extension object.
    """
    return Fluxus(app)


def handle_rejection(exc: FluxusError) -> flask.Response:
    """Answer a fluxus rejection: 429, 503 or 504 with ``Retry-After``.

    The answer is Werkzeug's error page, or what the app's own handler for
    that status code returns; the original exception is its ``__cause__``.
    Registered by :meth:`Fluxus.init_app`.
    """
    rejection = rejection_for(exc)
    if rejection is None:
        raise exc
    http_error = _HTTP_ERRORS[rejection.status](description=rejection.detail)
    http_error.__cause__ = exc
    app = flask.current_app
    response = app.make_response(app.handle_http_exception(http_error))
    for header, value in rejection.headers.items():
        response.headers.setdefault(header, value)
    return response


def _state() -> _State:
    app = flask.current_app
    state = app.extensions.get(_EXTENSION)
    if isinstance(state, _State):
        return state
    # Not set up (yet): read the config as it is, so the key functions agree
    # with what init_app would have checked.
    trusted = TrustedProxies(
        app.config.get("FLUXUS_TRUSTED_PROXIES", ()), "FLUXUS_TRUSTED_PROXIES"
    )
    return _State(_UNCONFIGURED, trusted)


def client_ip(*_args: Any, **_kwargs: Any) -> str:
    """Return the address of the client of the current request.

    A key function for per-client limits (``key=client_ip``): it takes the
    view's arguments and ignores them, reading :data:`flask.request`. The
    ``X-Forwarded-For`` header counts only when ``request.remote_addr`` is
    one of ``FLUXUS_TRUSTED_PROXIES``; see :class:`TrustedProxies`.

    Raises:
        RuntimeError: Outside a request.
    """
    trusted = _state().trusted_proxies
    request = flask.request
    remote = request.remote_addr or ""
    if not trusted:
        return remote
    # WSGI joins repeated headers into one environ entry; reading it there
    # skips building Werkzeug's header view.
    forwarded = request.environ.get("HTTP_X_FORWARDED_FOR")
    return trusted.client_address(remote, [forwarded] if forwarded else [])


def user_key(*args: Any, **kwargs: Any) -> str:
    """Return ``"user:<id>"`` for an authenticated user, else ``"ip:<address>"``.

    The user comes from the ``current_user`` hook of :class:`Fluxus`
    (``flask.g.user`` by default). Its id is ``get_id()`` (Flask-Login),
    else ``id``, else the user itself as a string; a user whose
    ``is_authenticated`` is false counts as anonymous.
    """
    user = _state().extension.current_user()
    return user_or_ip(_user_id(user), client_ip(*args, **kwargs))


def _user_id(user: object) -> object:
    if user is None or not getattr(user, "is_authenticated", True):
        return None
    get_id = getattr(user, "get_id", None)
    if callable(get_id):
        return get_id()
    return getattr(user, "id", user)


def storage_uri(app: flask.Flask | None = None) -> str:
    """Return the storage URI of the app's limiters and breakers.

    Args:
        app: The app; by default :data:`flask.current_app`.

    Returns:
        ``FLUXUS_STORAGE_URI`` from the app's config, ``"memory://"`` if unset.
    """
    config = (app or flask.current_app).config
    value = config.get("FLUXUS_STORAGE_URI", DEFAULT_STORAGE_URI)
    return check_storage_uri(value, "FLUXUS_STORAGE_URI")
