"""fluxus in Django: a middleware for rejections, key functions, settings.

.. code-block:: python

   MIDDLEWARE = [
       ...,
       "django.contrib.auth.middleware.AuthenticationMiddleware",
       "fluxus.contrib.django.FluxusMiddleware",
   ]
   FLUXUS_TRUSTED_PROXIES = ["10.0.0.0/8"]

:class:`FluxusMiddleware` turns :class:`~fluxus.RateLimitExceeded` raised
by a view into 429, :class:`~fluxus.CircuitOpenError` into 503 and
:class:`~fluxus.DeadlineExceeded` into 504, with ``Retry-After`` where a
wait is known. Like Django's own error views it renders the template
``429.html`` / ``503.html`` / ``504.html`` when the project has one
(context: ``detail``, ``retry_after``, ``exception``, ``request_path``),
else a plain page in the style of Django's defaults. It runs in sync and
async stacks alike.

Settings (all optional):

- ``FLUXUS_STORAGE_URI``: the storage of the limiters and breakers built
  without ``storage=`` (default ``"memory://"``), for example
  ``"redis://localhost:6379/0"`` to share limits and circuits among the
  workers; :class:`FluxusMiddleware` makes it the process's default
  storage, which such policies look up on their first call. Read it with
  :func:`storage_uri`.
- ``FLUXUS_TRUSTED_PROXIES``: addresses or networks whose
  ``X-Forwarded-For`` entries :func:`client_ip` believes (default: none,
  the header is ignored).
- ``FLUXUS_RESOLVE_USER``: load ``request.user`` before the view
  (``await request.auser()`` in async stacks; default ``False``), so that
  :func:`user_key` can read it in async views, where Django refuses a
  synchronous query; the middleware must then come after
  ``AuthenticationMiddleware``.

Timeouts: ORM code wants ``fluxus.timeout(..., strategy="cooperative")``
with the deadline handed to the database (a statement timeout): a call the
``"thread"`` strategy moves to a worker uses the worker's own connection,
outside the caller's transaction. ``"thread"`` suits outbound calls. See
``docs/howto/timeouts.rst``.
"""

from __future__ import annotations

import copy
from typing import Any, Final, cast

from fluxus._extras import missing_extra

try:
    from asgiref.sync import iscoroutinefunction, markcoroutinefunction
    from django.conf import settings
    from django.core.exceptions import SynchronousOnlyOperation
    from django.http import HttpRequest, HttpResponse
    from django.template import TemplateDoesNotExist, loader
    from django.views.defaults import ERROR_PAGE_TEMPLATE
except ImportError as _missing:  # pragma: no cover - tested in a subprocess
    raise missing_extra(__name__, "django") from _missing

from fluxus.contrib._http import (
    DEFAULT_STORAGE_URI,
    TrustedProxies,
    check_storage_uri,
    rejection_for,
    use_storage_uri,
    user_or_ip,
)

__all__ = [
    "FluxusMiddleware",
    "client_ip",
    "rejection_response",
    "storage_uri",
    "user_key",
]


class FluxusMiddleware:
    """Answer fluxus rejections raised by views with 429, 503 or 504.

    Sync and async capable: Django passes the next handler in its own mode
    and the middleware follows it, so it never forces a thread switch.
    Django asks ``process_exception`` of the middleware from the last one
    up and stops at the first answer: list this one below any middleware
    that answers every exception (error reporters).
    The settings are checked when Django builds the middleware (at start),
    and a ``FLUXUS_STORAGE_URI`` setting becomes the storage of every limiter
    and breaker built without ``storage=``, in this process.

    Raises:
        TypeError: If a ``FLUXUS_*`` setting has the wrong type.
        ValueError: If a ``FLUXUS_*`` setting holds a bad value.
    """

    sync_capable: Final = True
    async_capable: Final = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async: bool = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)
        if hasattr(settings, "FLUXUS_STORAGE_URI"):
            use_storage_uri(settings.FLUXUS_STORAGE_URI, "FLUXUS_STORAGE_URI")
        _trusted_proxies()
        self.resolve_user: bool = bool(getattr(settings, "FLUXUS_RESOLVE_USER", False))
        if self.is_async and _answers_async_views():
            # Django would answer through process_exception, which it calls
            # in a thread of its own (sync_to_async): a hop per rejection.
            self.process_view = self._call_async_view

    async def _call_async_view(
        self,
        request: HttpRequest,
        view: Any,
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        """Call an async view here and answer its rejections in the event loop.

        Only installed when nothing is lost by it (see
        :func:`_answers_async_views`): no later middleware has a
        ``process_view``, no other one a ``process_exception``, and no
        database asks for ``ATOMIC_REQUESTS``.
        """
        if not iscoroutinefunction(view):
            return None  # a sync view: Django runs it in its thread
        try:
            response = await view(request, *view_args, **view_kwargs)
        except Exception as exc:
            answer = rejection_response(request, exc)
            if answer is None:
                raise  # Django answers it as it would have (500)
            return answer
        if response is None:
            # Returning None would make Django call the view a second time.
            name = getattr(view, "__qualname__", type(view).__qualname__)
            msg = (
                f"The view {view.__module__}.{name} didn't return an "
                "HttpResponse object. It returned None instead."
            )
            raise ValueError(msg)
        return cast("HttpResponse", response)

    def __call__(self, request: HttpRequest) -> Any:
        """Handle *request*, returning a coroutine in an async stack."""
        if self.is_async:
            return self.__acall__(request)
        if self.resolve_user and hasattr(request, "user"):
            # Load the lazy user here, in the request's thread: an async view
            # under WSGI runs in an event loop, where Django refuses to.
            request.user.is_authenticated  # noqa: B018 - evaluated for its effect
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        """Handle *request* in an async stack."""
        if self.resolve_user and hasattr(request, "auser"):
            request.user = await request.auser()
        return await self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        """Answer a fluxus rejection; leave other exceptions to Django."""
        return rejection_response(request, exception)


def _answers_async_views() -> bool:
    """Tell whether the middleware may call async views itself.

    True when the project's ``MIDDLEWARE`` lists no ``process_view`` after
    :class:`FluxusMiddleware` (which calling the view would skip), no other
    ``process_exception`` (which an error raised there would skip), and no
    database has ``ATOMIC_REQUESTS`` (Django refuses it for async views).
    """
    from django.db import connections  # noqa: PLC0415 - read at start only
    from django.utils.module_loading import import_string  # noqa: PLC0415

    if any(db.get("ATOMIC_REQUESTS") for db in connections.settings.values()):
        return False
    after = False
    for entry in getattr(settings, "MIDDLEWARE", None) or ():
        try:
            cls = import_string(entry)
        except Exception:  # noqa: BLE001 - Django reports these itself
            return False
        if isinstance(cls, type) and issubclass(cls, FluxusMiddleware):
            after = True
            continue
        if hasattr(cls, "process_exception") or (
            after and hasattr(cls, "process_view")
        ):
            return False
    return after


def rejection_response(request: HttpRequest, exc: Exception) -> HttpResponse | None:
    """Return the HTTP answer to the fluxus rejection *exc*, else ``None``.

    Used by :class:`FluxusMiddleware`; call it from your own error handling
    to answer rejections the same way.
    """
    rejection = rejection_for(exc)
    if rejection is None:
        return None
    context = {
        "detail": rejection.detail,
        "exception": exc,
        "request_path": request.path,
        "retry_after": rejection.retry_after,
    }
    try:
        template = loader.get_template(f"{rejection.status}.html")
    except TemplateDoesNotExist:
        body = ERROR_PAGE_TEMPLATE % {
            "title": f"{rejection.title} ({rejection.status})",
            "details": rejection.detail,
        }
    else:
        body = template.render(context, request)
    response = HttpResponse(body, status=rejection.status)
    for header, value in rejection.headers.items():
        response[header] = value
    return response


def _request(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HttpRequest:
    for value in (*args, *kwargs.values()):
        if isinstance(value, HttpRequest):
            return value
    # A class-based view method decorated after View.setup() has run.
    if args and isinstance(getattr(args[0], "request", None), HttpRequest):
        return args[0].request
    msg = (
        "fluxus.contrib.django key functions need the view's HttpRequest among "
        "its arguments (a function view's first argument, or a view method's "
        "second)"
    )
    raise TypeError(msg)


class _TrustedProxiesCache:
    """The parsed ``FLUXUS_TRUSTED_PROXIES``, parsed again when it changes."""

    __slots__ = ("entry",)

    def __init__(self) -> None:
        self.entry: tuple[object, TrustedProxies] | None = None

    def get(self) -> TrustedProxies:
        raw = getattr(settings, "FLUXUS_TRUSTED_PROXIES", ())
        entry = self.entry
        if entry is not None and entry[0] == raw:
            return entry[1]
        parsed = TrustedProxies(raw, "FLUXUS_TRUSTED_PROXIES")
        # A copy, so that a list mutated in place is noticed next time.
        self.entry = (copy.copy(raw), parsed)
        return parsed


_TRUSTED_PROXIES: Final = _TrustedProxiesCache()


def _trusted_proxies() -> TrustedProxies:
    return _TRUSTED_PROXIES.get()


def client_ip(*args: Any, **kwargs: Any) -> str:
    """Return the address of the client of the request among the arguments.

    A key function for per-client limits (``key=client_ip``) on function
    views (``view(request, ...)``) and view methods (``get(self, request,
    ...)``). ``X-Forwarded-For`` counts only when ``REMOTE_ADDR`` is one of
    ``FLUXUS_TRUSTED_PROXIES``.

    Raises:
        TypeError: If no ``HttpRequest`` is among the arguments.
    """
    request = _request(args, kwargs)
    remote = str(request.META.get("REMOTE_ADDR") or "")
    trusted = _trusted_proxies()
    if not trusted:
        return remote
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR")
    return trusted.client_address(remote, [forwarded] if forwarded else [])


def user_key(*args: Any, **kwargs: Any) -> str:
    """Return ``"user:<pk>"`` for an authenticated user, else ``"ip:<address>"``.

    The user is ``request.user`` (``AuthenticationMiddleware``). In async
    views set ``FLUXUS_RESOLVE_USER = True`` so that the middleware loads
    it before the view.

    Raises:
        TypeError: If no ``HttpRequest`` is among the arguments.
        RuntimeError: If the user is still to be loaded in an async view.
    """
    request = _request(args, kwargs)
    try:
        user = getattr(request, "user", None)
        user_id = user.pk if user is not None and user.is_authenticated else None
    except SynchronousOnlyOperation as exc:
        msg = (
            "fluxus.contrib.django.user_key cannot load request.user in an async "
            "view; set FLUXUS_RESOLVE_USER = True and put FluxusMiddleware after "
            "AuthenticationMiddleware"
        )
        raise RuntimeError(msg) from exc
    return user_or_ip(user_id, client_ip(request))


def storage_uri() -> str:
    """Return the storage URI of the project's limiters and breakers.

    Returns:
        The ``FLUXUS_STORAGE_URI`` setting, ``"memory://"`` if unset.

    Raises:
        TypeError: If the setting is not a string.
        ValueError: If it is not a storage URI.
    """
    value = getattr(settings, "FLUXUS_STORAGE_URI", DEFAULT_STORAGE_URI)
    return check_storage_uri(value, "FLUXUS_STORAGE_URI")
