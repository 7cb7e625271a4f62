"""Database transactions and connections around the ``"thread"`` timeout.

A call that the ``"thread"`` strategy moves to a worker thread leaves the
caller's database transaction: Django keeps one connection per thread, and
Flask-SQLAlchemy one ``Session`` per application context, which the worker
would share with the caller through the copied context. So:

- :func:`caller_in_transaction` tells whether the calling thread is inside
  a transaction the call must stay in (a Django ``atomic()`` block on any
  database alias, ``ATOMIC_REQUESTS`` included, or a Flask-SQLAlchemy
  session of the current application context that has begun one); the
  timeout then runs the call in the calling thread with its deadline
  published, as ``strategy="cooperative"`` does, and
  :func:`warn_in_transaction` says so once per function.
- :func:`call_in_worker` runs a call in a worker thread so that it uses
  connections of its own and gives them back when it ends: Django
  connections the worker opened are closed (``CONN_MAX_AGE`` never applies
  to a thread Django does not manage, and a connection killed by the server
  is never reused), and a Flask-SQLAlchemy call gets an application context
  of its own, so its ``Session`` is never the caller's and is removed (its
  connection back in the pool) when the call ends.

Nothing here imports Django, Flask or SQLAlchemy: a framework not imported
yet by the application has no transaction to look at, and the checks cost a
dictionary look-up each.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from ._core import _stacklevel_outside_fluxus
from .exceptions import TransactionWarning

__all__ = [
    "call_in_worker",
    "caller_in_transaction",
    "close_thread_connections",
    "warn_in_transaction",
]

_modules = sys.modules

#: The functions :func:`warn_in_transaction` has warned about.
_warned: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def caller_in_transaction() -> bool:
    """Return whether the calling thread is inside a database transaction.

    True inside a Django ``atomic()`` block on any alias (``ATOMIC_REQUESTS``
    and ``TestCase`` included), or when the Flask-SQLAlchemy session of the
    current application context has begun a transaction. False when
    neither framework is imported. Called on every ``"thread"`` timeout
    call, so written for speed: a few attribute and dictionary look-ups.
    """
    django_db = _modules.get("django.db")
    if django_db is not None:
        connections = django_db.connections
        cached = _django_storage
        if cached[0] is not connections:
            cached = _remember_storage(connections)
        held = cached[1].__dict__
        if "cvar" in held:
            # An event loop's thread: the connections are in a context variable.
            for conn in connections.all(initialized_only=True):
                if conn.in_atomic_block:
                    return True
        else:
            for conn in held.values():
                if conn.in_atomic_block:
                    return True
    if _modules.get("flask_sqlalchemy") is None:
        return False
    session = _flask_session()
    return session is not None and bool(session.in_transaction())


class _NoStorage:
    """Stands for a thread-local storage when Django's is not where expected."""

    def __init__(self) -> None:
        self.cvar = None  # makes the check ask connections.all()


#: Django's connection handler and the thread-local storage of its
#: connections (asgiref's thread-critical Local keeps them in a
#: threading.local in sync threads): read directly, a tenth of the cost of
#: connections.all().
_django_storage: tuple[object, Any] = (None, None)


def _remember_storage(connections: Any) -> tuple[object, Any]:
    global _django_storage  # noqa: PLW0603 - a cache of one entry
    try:
        storage = connections._connections._storage  # noqa: SLF001
    except AttributeError:  # pragma: no cover - another asgiref layout
        storage = _NoStorage()
    _django_storage = (connections, storage)
    return _django_storage


def _flask_session() -> Any:
    """Return the Flask-SQLAlchemy session of the current app context, if any."""
    flask_globals = _modules.get("flask.globals")
    if flask_globals is None:  # pragma: no cover - flask_sqlalchemy imports flask
        return None
    app_ctx = flask_globals._cv_app.get(None)  # noqa: SLF001
    if app_ctx is None:
        return None
    extension = app_ctx.app.extensions.get("sqlalchemy")
    if extension is None:
        return None
    registry = extension.session.registry
    if registry.scopefunc is _default_scope():
        # The default scope is the app context's id: look it up directly.
        return registry.registry.get(id(app_ctx))
    return registry() if registry.has() else None


def _default_scope() -> object:
    """Return Flask-SQLAlchemy's default scope function."""
    session_module = _modules.get("flask_sqlalchemy.session")
    return getattr(session_module, "_app_ctx_id", None)


def warn_in_transaction(policy: str, function: str) -> None:
    """Warn once per function that a thread timeout ran in the caller's thread."""
    key = (policy, function)
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(
        f"fluxus.timeout {policy!r} ran {function} in the calling thread: the "
        "caller is inside a database transaction, which a worker thread would "
        "leave. The deadline is published (fluxus.remaining()) but the call is "
        "not interrupted; use strategy='cooperative' and the database's own "
        "statement timeout to say so explicitly",
        TransactionWarning,
        stacklevel=_stacklevel_outside_fluxus(),
    )


def call_in_worker(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call *func* in a worker thread with connections of its own.

    Run inside the caller's copied context. A Flask-SQLAlchemy application
    context is replaced by one of the same app (with a copy of ``g``), so
    the call's ``Session`` is its own and is removed when the call ends;
    the Django connections the call opened are closed when it ends.
    """
    if _modules.get("flask_sqlalchemy") is not None:
        own = _own_app_context()
        if own is not None:
            with own:
                return _call_and_close(func, args, kwargs)
    return _call_and_close(func, args, kwargs)


def _call_and_close(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    try:
        return func(*args, **kwargs)
    finally:
        close_thread_connections()


def _own_app_context() -> Any:
    """Return a new app context for the worker, or None when none is needed."""
    flask_globals = _modules["flask.globals"]
    app_ctx = flask_globals._cv_app.get(None)  # noqa: SLF001
    if app_ctx is None or "sqlalchemy" not in app_ctx.app.extensions:
        return None
    own = app_ctx.app.app_context()
    own.g.__dict__.update(app_ctx.g.__dict__)
    return own


def close_thread_connections() -> None:
    """Close the Django database connections the current thread opened.

    For threads Django does not manage (it closes the connections of its
    request threads itself): called by the ``"thread"`` timeout's workers
    after each call. Does nothing when Django is not imported.
    """
    django_db = _modules.get("django.db")
    if django_db is None:
        return
    connections = django_db.connections
    try:
        held = connections._connections._storage.__dict__  # noqa: SLF001
    except AttributeError:  # pragma: no cover - another asgiref layout
        held = None
    if held is not None and not held:
        return
    for conn in connections.all(initialized_only=True):
        # A connection that cannot even be closed (the server is gone) is
        # dropped all the same; the next call opens a new one.
        with contextlib.suppress(Exception):
            conn.close()
        with contextlib.suppress(AttributeError):
            del connections[conn.alias]
