"""Log letters: a record in the logs, nothing to replay."""

from __future__ import annotations

import logging
from collections.abc import Iterator

from fluxus._dead_letter import DeadLetter

from ._base import StoringSink, check_limit


class Log(StoringSink):
    """Log each letter through :mod:`logging`; keep nothing.

    The record names the letter, the function and the error, with the
    traceback. The call's arguments may be secret, so they are logged only
    with ``include_args=True``, and then as their ``repr`` after the
    policy's ``redact`` masked the names it was given.

    Args:
        logger: The logger; by default ``logging.getLogger("fluxus.dead_letter")``.
        level: The level of the records (default: ``logging.ERROR``).
        include_args: Log the arguments too.
    """

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        level: int = logging.ERROR,
        include_args: bool = False,
    ) -> None:
        if not isinstance(level, int) or isinstance(level, bool):
            msg = f"level must be a logging level (an int), got {level!r}"
            raise TypeError(msg)
        self.logger: logging.Logger = logger or logging.getLogger("fluxus.dead_letter")
        self.level = level
        self.include_args = include_args

    def put(self, letter: DeadLetter) -> None:
        """Log *letter*."""
        fields = {
            "letter_id": letter.id,
            "function": letter.function,
            "error_type": letter.error_type,
            "error_message": letter.error_message,
            "failed_at": letter.failed_at.isoformat(),
        }
        arguments = ""
        if self.include_args:
            fields["args"] = repr(letter.args)
            fields["kwargs"] = repr(letter.kwargs)
            arguments = f" args={letter.args!r} kwargs={letter.kwargs!r}"
        self.logger.log(
            self.level,
            "dead letter %s from %s: %s: %s%s\n%s",
            letter.id,
            letter.function,
            letter.error_type,
            letter.error_message,
            arguments,
            letter.traceback.rstrip("\n"),
            extra={"fluxus_dead_letter": fields},
        )

    async def aput(self, letter: DeadLetter) -> None:
        """Log *letter*; logging handlers are expected not to block for long."""
        self.put(letter)

    def letters(self, limit: int | None = None) -> Iterator[DeadLetter]:
        """Yield no letters: a log keeps nothing to replay."""
        check_limit(limit)
        return iter(())

    def remove(self, letter_id: str) -> bool:  # noqa: ARG002 - the sink protocol
        """Do nothing: a log keeps nothing; return ``False``."""
        return False

    def clear(self) -> int:
        """Do nothing: a log keeps nothing; return 0."""
        return 0
