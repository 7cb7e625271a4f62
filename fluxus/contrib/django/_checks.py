"""System checks (``manage.py check``) of fluxus's settings and middleware.

- ``fluxus.E001``: ``FLUXUS_STORAGE_URI`` is not a storage URI fluxus can
  use (``'redis//typo'``, an unknown scheme, a missing extra).
- ``fluxus.E002``: ``FLUXUS_TRUSTED_PROXIES`` holds something that is not an
  address or a network.
- ``fluxus.E003``: ``FLUXUS_RESOLVE_USER`` is not a bool.
- ``fluxus.E004``: ``FLUXUS_RESOLVE_USER = True`` while ``FluxusMiddleware``
  is not listed after ``AuthenticationMiddleware`` (the user would be
  loaded before there is one to load: a logged-in async request fails).
- ``fluxus.W001``: ``FluxusMiddleware`` is not in ``MIDDLEWARE``, so the
  rejections views raise are answered with 500 instead of 429/503/504.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning  # noqa: A004
from django.utils.module_loading import import_string

from fluxus.contrib._http import TrustedProxies, check_storage_uri

_MIDDLEWARE = "fluxus.contrib.django.FluxusMiddleware"
_AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_settings(**_kwargs: Any) -> list[CheckMessage]:
    """Check the ``FLUXUS_*`` settings the way the middleware reads them."""
    found: list[CheckMessage] = []
    if hasattr(settings, "FLUXUS_STORAGE_URI"):
        try:
            check_storage_uri(settings.FLUXUS_STORAGE_URI, "FLUXUS_STORAGE_URI")
        except (TypeError, ValueError, ImportError) as exc:
            found.append(
                Error(
                    str(exc),
                    hint="For example 'memory://' or 'redis://localhost:6379/0'.",
                    id="fluxus.E001",
                )
            )
    try:
        TrustedProxies(
            getattr(settings, "FLUXUS_TRUSTED_PROXIES", ()), "FLUXUS_TRUSTED_PROXIES"
        )
    except (TypeError, ValueError) as exc:
        found.append(
            Error(
                str(exc),
                hint="A list of addresses and networks, such as ['10.0.0.0/8'].",
                id="fluxus.E002",
            )
        )
    resolve = getattr(settings, "FLUXUS_RESOLVE_USER", False)
    if not isinstance(resolve, bool):
        found.append(
            Error(
                f"FLUXUS_RESOLVE_USER must be True or False, got {resolve!r}",
                id="fluxus.E003",
            )
        )
    return found


def _position(middleware: list[str], base: str) -> int | None:
    """Return the index of the first entry that is *base* or a subclass of it."""
    try:
        wanted = import_string(base)
    except Exception:  # noqa: BLE001 - an app not installed cannot be imported
        wanted = None
    for index, entry in enumerate(middleware):
        if entry == base:
            return index
        try:
            cls = import_string(entry)
        except Exception:  # noqa: BLE001, S112 - Django reports these at start
            continue
        if wanted is not None and isinstance(cls, type) and issubclass(cls, wanted):
            return index
    return None


def check_middleware(**_kwargs: Any) -> list[CheckMessage]:
    """Check that ``FluxusMiddleware`` is listed, and after authentication."""
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = _position(middleware, _MIDDLEWARE)
    if ours is None:
        return [
            Warning(
                f"{_MIDDLEWARE} is not in MIDDLEWARE: fluxus rejections raised "
                "by views are answered with 500 instead of 429, 503 or 504.",
                hint=f"Add '{_MIDDLEWARE}' to MIDDLEWARE.",
                id="fluxus.W001",
            )
        ]
    if getattr(settings, "FLUXUS_RESOLVE_USER", False) is not True:
        return []
    auth = _position(middleware, _AUTH)
    if auth is None or auth > ours:
        where = "is missing" if auth is None else "comes after it"
        return [
            Error(
                f"FLUXUS_RESOLVE_USER = True needs {_MIDDLEWARE} after "
                f"{_AUTH} in MIDDLEWARE, which {where}: request.user is not "
                "there yet when the middleware loads it.",
                hint=f"Move '{_MIDDLEWARE}' below '{_AUTH}'.",
                id="fluxus.E004",
            )
        ]
    return []
