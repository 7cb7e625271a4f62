"""Deliver events to structlog when the application uses it, else to logging."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from ._events import Event
from ._logging import LoggingHook


class StructlogHook:
    """Log each event through structlog as ``fluxus.<kind>``.

    Without an explicit *logger* the hook follows the application: once
    structlog has been configured (:func:`structlog.is_configured`), events
    go to structlog; until then they go to the standard library's ``fluxus``
    logger through a :class:`~fluxus.instrumentation.LoggingHook`, so the
    application's :mod:`logging` configuration decides where they end up
    (unconfigured, Python's last-resort handler writes warnings and errors
    to stderr). Events never reach stdout through structlog's default
    printer. ``set_hooks([LoggingHook()])`` forces logging.

    Args:
        logger: The logger to use, always, configured or not; by default
            ``structlog.get_logger("fluxus")``, so context bound with
            :mod:`structlog.contextvars` is kept.
    """

    def __init__(self, logger: Any = None) -> None:
        self._auto = logger is None
        self._logger = logger if logger is not None else structlog.get_logger("fluxus")
        self._stdlib = LoggingHook()

    def __call__(self, event: Event) -> None:
        """Log *event* at its level."""
        if self._auto and not structlog.is_configured():
            self._stdlib(event)
            return
        method = logging.getLevelName(event.level).lower()
        getattr(self._logger, method)(f"fluxus.{event.kind}", **event.fields())
