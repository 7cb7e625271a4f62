"""Optional dependencies: one :class:`ImportError` that names the extra.

Every integration and storage that needs a package outside fluxus's own
dependencies says which extra installs it, in one shape::

    fluxus.contrib.flask needs Flask: pip install 'fluxus[flask]'

raised when the integration is imported or the policy, sink or backend is
built (never at its first call). At the top of a module, around its
third-party imports::

    try:
        import flask
    except ImportError as exc:
        raise missing_extra(__name__, "flask") from exc

and where a storage or sink is built::

    redis = require("redis", "redis", "a Redis rate limit storage")

The message is one line meant to be shown as it is: a command line prints
``str(exc)`` and exits, without a traceback.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Final

#: The package each extra brings, as PyPI spells it.
PACKAGES: Final = {
    "django": "Django",
    "fastapi": "Starlette",
    "flask": "Flask",
    "otel": "opentelemetry-api",
    "prometheus": "prometheus-client",
    "redis": "redis",
    "trio": "trio",
}


def missing_extra(what: str, extra: str) -> ImportError:
    """Return the error saying that *what* needs the package of *extra*.

    Args:
        what: What needs it, the message's subject
            (``"fluxus.contrib.flask"``, ``"a Redis circuit storage"``).
        extra: The fluxus extra that installs it (``"flask"``), a key of
            :data:`PACKAGES`.

    Returns:
        An :class:`ImportError` (raise it ``from`` the original error) whose
        message is ``"<what> needs <package>: pip install 'fluxus[<extra>]'"``.
    """
    msg = f"{what} needs {PACKAGES[extra]}: pip install 'fluxus[{extra}]'"
    return ImportError(msg)


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import *module*, or raise the :func:`missing_extra` error.

    Args:
        module: The module to import (``"redis"``, ``"redis.asyncio"``).
        extra: The fluxus extra that installs it (``"redis"``), a key of
            :data:`PACKAGES`.
        what: What needs it, the message's subject.

    Returns:
        The imported module.

    Raises:
        ImportError: If *module* cannot be imported: the message names the
            package and *extra*; the original error is its cause.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_extra(what, extra) from exc
