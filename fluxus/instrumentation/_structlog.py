"""Deliver events to structlog, the default, or to logging when it is unused."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from ._events import Event
from ._logging import LoggingHook


class StructlogHook:
    """Log each event through structlog as ``fluxus.<kind>``.

    Without an explicit *logger* the hook follows the application: while
    structlog has not been configured (:func:`structlog.is_configured`) but
    the standard library's ``fluxus`` logger has handlers (``basicConfig()``,
    ``dictConfig()``, a framework's logging setup), events go to
    :mod:`logging` through a :class:`~fluxus.instrumentation.LoggingHook`;
    otherwise to structlog. ``set_hooks([LoggingHook()])`` forces logging.

    Args:
        logger: The logger to use; by default ``structlog.get_logger("fluxus")``,
            so context bound with :mod:`structlog.contextvars` is kept.
    """

    def __init__(self, logger: Any = None) -> None:
        self._auto = logger is None
        self._logger = logger if logger is not None else structlog.get_logger("fluxus")
        self._stdlib = LoggingHook()

    def __call__(self, event: Event) -> None:
        """Log *event* at its level."""
        if (
            self._auto
            and not structlog.is_configured()
            and logging.getLogger("fluxus").hasHandlers()
        ):
            self._stdlib(event)
            return
        method = logging.getLevelName(event.level).lower()
        getattr(self._logger, method)(f"fluxus.{event.kind}", **event.fields())
