"""The figures the reliability suite reports: calls, faults, losses.

Tests add to the counters; ``conftest.py`` prints them at the end of the
run, which is how the figures of docs/reliability.rst are reproduced.
"""

from __future__ import annotations

import threading
from collections import Counter

FIGURES: Counter[str] = Counter()
_lock = threading.Lock()


def record(**counts: int) -> None:
    """Add *counts* to the run's figures."""
    with _lock:
        FIGURES.update(counts)


def summary() -> list[str]:
    """Return one line per figure, sorted by name."""
    return [f"{name}: {FIGURES[name]:,}" for name in sorted(FIGURES)]
