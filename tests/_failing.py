"""A function that fails a given number of times, shared by the backend tests."""

from __future__ import annotations

from collections.abc import Callable


def failing(times: int) -> Callable[..., str]:
    """Return a function raising OSError on its first *times* calls, then "ok"."""
    state = {"n": 0}

    def fn(secret: object = None) -> str:
        state["n"] += 1
        if state["n"] <= times:
            raise OSError("upstream said no")
        return "ok"

    return fn
