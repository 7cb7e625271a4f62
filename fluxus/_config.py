"""Process-wide switches: the testing mode.

Strictly private; :mod:`fluxus.testing` is the public face.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TestingMode:
    """What the testing mode changes: waits, and optionally attempts."""

    active: bool = False
    attempts: int | None = None

    def cap_attempts(self, attempts: int) -> int:
        """Return *attempts*, lowered to the testing cap when one is set."""
        if self.active and self.attempts is not None:
            return min(attempts, self.attempts)
        return attempts


class _Config:
    __slots__ = ("lock", "testing")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.testing = TestingMode()


CONFIG = _Config()
