"""Deliver events to structlog, the default."""

from __future__ import annotations

import logging
from typing import Any

import structlog

from ._events import Event


class StructlogHook:
    """Log each event through structlog as ``fluxus.<kind>``.

    Args:
        logger: The logger to use; by default ``structlog.get_logger("fluxus")``,
            so context bound with :mod:`structlog.contextvars` is kept.
    """

    def __init__(self, logger: Any = None) -> None:
        self._logger = logger if logger is not None else structlog.get_logger("fluxus")

    def __call__(self, event: Event) -> None:
        """Log *event* at its level."""
        method = logging.getLevelName(event.level).lower()
        getattr(self._logger, method)(f"fluxus.{event.kind}", **event.fields())
