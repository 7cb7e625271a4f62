"""The hook registry: who receives the events.

Events are built only when a policy makes a decision (a failure, a
rejection); a call that succeeds touches none of this.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from ._events import Event

Hook = Callable[[Event], object]

_lock = threading.Lock()
_hooks: tuple[Hook, ...] | None = None
#: Failed hooks by id; holding them keeps their ids from being reused.
_reported: dict[int, object] = {}


def _default_hooks() -> tuple[Hook, ...]:
    from ._structlog import StructlogHook  # noqa: PLC0415

    return (StructlogHook(),)


def get_hooks() -> tuple[Hook, ...]:
    """Return the hooks that receive every event, in call order."""
    global _hooks  # noqa: PLW0603
    if _hooks is None:
        with _lock:
            if _hooks is None:
                _hooks = _default_hooks()
    return _hooks


def set_hooks(hooks: Iterable[Hook] | None) -> None:
    """Replace every hook; ``None`` restores the default (:class:`StructlogHook`).

    Raises:
        TypeError: If a hook is not callable.
    """
    global _hooks  # noqa: PLW0603
    new = None if hooks is None else tuple(hooks)
    for hook in new or ():
        if not callable(hook):
            msg = f"hooks must be callables taking an event, got {hook!r}"
            raise TypeError(msg)
    with _lock:
        _hooks = new


def add_hook(hook: Hook) -> None:
    """Add *hook* after the current hooks.

    Raises:
        TypeError: If *hook* is not callable.
    """
    if not callable(hook):
        msg = f"hook must be a callable taking an event, got {hook!r}"
        raise TypeError(msg)
    current = get_hooks()
    set_hooks((*current, hook))


def remove_hook(hook: Hook) -> None:
    """Remove *hook*; removing a hook that is not installed does nothing."""
    set_hooks(h for h in get_hooks() if h != hook)


def emit(event: Event) -> None:
    """Deliver *event* to every hook; a failing hook never breaks the call."""
    for hook in get_hooks():
        try:
            hook(event)
        except Exception as exc:  # noqa: BLE001 - a hook's bug must not break the call
            report_once(hook, exc)


def report_once(hook: object, exc: Exception) -> None:
    """Log that *hook* (or an observer) raised, the first time only."""
    key = id(hook)
    with _lock:
        if key in _reported:
            return
        _reported[key] = hook
    logging.getLogger("fluxus").error(
        "fluxus event hook %r raised; its later failures are not reported",
        hook,
        exc_info=exc,
    )
