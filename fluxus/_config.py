"""Process-wide switches: the testing mode and the default storage.

Strictly private; :mod:`fluxus.testing` and :mod:`fluxus.contrib` are the
public faces.

The default storage is what a rate limiter or circuit breaker built without
``storage=`` uses. Decorators run when their module is imported, before a
web app has read its configuration, so such policies resolve their storage
on first use; :func:`set_default_storage` sends them back to resolve again,
and so does a fork (gunicorn loads the app, then forks its workers): a child
never keeps its parent's connections, locks or timer threads.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import dataclass
from typing import Final, Protocol

#: The storage of policies built without one, until an app names another.
MEMORY: Final = "memory://"


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


class StorageUser(Protocol):
    """A policy (or storage) that holds connections or state of its storage."""

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the storage so that the next use builds it again.

        Args:
            forked: ``True`` in a freshly forked child (drop everything the
                parent made), ``False`` when the default storage changed
                (only policies following the default care).
        """


class _Config:
    __slots__ = ("lock", "storage", "testing", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.testing = TestingMode()
        self.storage: str = MEMORY
        self.users: weakref.WeakSet[StorageUser] = weakref.WeakSet()


CONFIG = _Config()


def default_storage() -> str:
    """Return the storage URI of policies built without ``storage=``."""
    return CONFIG.storage


def set_default_storage(uri: str | None) -> None:
    """Make *uri* the storage of every policy built without ``storage=``.

    Policies already in use drop what they hold and resolve the new storage
    on their next call (in memory they start afresh); policies given an
    explicit ``storage=`` keep theirs. Setting the same URI again changes
    nothing. The caller validates *uri*.

    Args:
        uri: A storage URI; ``None`` restores ``"memory://"``.
    """
    uri = MEMORY if uri is None else uri
    with CONFIG.lock:
        if uri == CONFIG.storage:
            return
        CONFIG.storage = uri
        users = list(CONFIG.users)
    for user in users:
        user._forget_storage(forked=False)  # noqa: SLF001 - the protocol's hook


def track(user: StorageUser) -> None:
    """Have *user* forget its storage after a fork or a new default."""
    with CONFIG.lock:
        CONFIG.users.add(user)


def _after_fork_in_child() -> None:  # pragma: no cover - forked children only
    # The parent's other threads are gone: a lock one of them held would
    # never be released, so the child starts with fresh ones.
    CONFIG.lock = threading.Lock()
    for user in list(CONFIG.users):
        user._forget_storage(forked=True)  # noqa: SLF001 - the protocol's hook


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=_after_fork_in_child)
