"""Deliver events to the standard library's :mod:`logging`."""

from __future__ import annotations

import logging

from ._events import Event


class LoggingHook:
    """Log each event to the ``fluxus`` logger, its fields in ``extra``.

    Args:
        logger: The logger to use; by default ``logging.getLogger("fluxus")``.
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger("fluxus")

    def __call__(self, event: Event) -> None:
        """Log *event* at its level."""
        fields = event.fields()
        self._logger.log(
            event.level,
            "fluxus.%s %s",
            event.kind,
            " ".join(f"{k}={v!r}" for k, v in fields.items()),
            extra={"fluxus_event": fields},
        )
