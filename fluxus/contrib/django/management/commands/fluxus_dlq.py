"""``manage.py fluxus_dlq``: ``python -m fluxus dlq`` where Django users look.

::

    python manage.py fluxus_dlq list failed.jsonl
    python manage.py fluxus_dlq replay failed.db --call shop.orders:submit

The subcommands and flags are those of ``python -m fluxus dlq``, parsed by
the same code; the command only runs them inside the project, so that
``--call`` can import the project's code with its settings loaded.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, ClassVar

from django.core.management.base import BaseCommand, CommandError, CommandParser

from fluxus import _dlq


class _Here:
    """Hands ``_dlq.add_parser`` this command's own parser as the ``dlq`` one."""

    def __init__(self, parser: CommandParser) -> None:
        self.parser = parser

    def add_parser(self, _name: str, **_kwargs: Any) -> CommandParser:
        return self.parser


class Command(BaseCommand):  # type: ignore[misc] # Django ships no annotations
    """Inspect, replay and purge a dead letter store (``python -m fluxus dlq``)."""

    help = (
        "Inspect and replay a dead letter store: the subcommands and flags of "
        "'python -m fluxus dlq' (list, show, replay, purge)."
    )
    requires_system_checks: ClassVar[tuple[str, ...]] = ()

    def add_arguments(self, parser: CommandParser) -> None:
        """Take everything after the command name as ``dlq``'s arguments."""
        parser.add_argument("dlq_args", nargs=argparse.REMAINDER, metavar="...")

    def run_from_argv(self, argv: list[str]) -> None:
        """Hand the command line on unparsed: ``dlq`` owns its flags."""
        self._called_from_command_line = True
        code = self._run(argv[2:])
        if code:
            sys.exit(code)

    def handle(self, *args: Any, **options: Any) -> None:
        """Run ``dlq`` with the arguments given to ``call_command``."""
        words = [str(arg) for arg in (*args, *options.get("dlq_args", ()))]
        code = self._run(words)
        if code:
            msg = f"fluxus_dlq exited with status {code}"
            raise CommandError(msg, returncode=code)

    def _run(self, words: list[str]) -> int:
        parser = CommandParser(
            prog="manage.py fluxus_dlq",
            description=self.help,
            called_from_command_line=bool(
                getattr(self, "_called_from_command_line", False)
            ),
        )
        _dlq.add_parser(_Here(parser))
        parsed = parser.parse_args(words)
        self.stdout.ending = self.stderr.ending = ""
        return _dlq.run(parsed, self.stdout, self.stderr, sys.stdin)
