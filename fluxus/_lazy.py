"""Storage built on first use, and forgotten after a fork or a new default.

Policies are built when a module is imported, before a web app has read
its configuration, and a process that forks (gunicorn) must not hand its
connections, locks or timer threads to its children. So a policy's storage
is built by its first call, and dropped again in a forked child or, for a
policy without ``storage=``, when the default storage changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from ._config import track

T = TypeVar("T")


class Lazy(Generic[T]):
    """A storage built on first use: read ``value``, or :meth:`get` when ``None``.

    Args:
        build: Builds the storage; called under a lock, once per life.
        follows_default: Whether the storage follows the default storage
            (no ``storage=`` given): it is then forgotten when that changes.
        on_forget: Called (under the lock) when the storage is dropped.
    """

    __slots__ = (
        "__weakref__",
        "_build",
        "_follows_default",
        "_lock",
        "_on_forget",
        "value",
    )

    def __init__(
        self,
        build: Callable[[], T],
        *,
        follows_default: bool,
        on_forget: Callable[[], None] | None = None,
    ) -> None:
        self._build = build
        self._follows_default = follows_default
        self._on_forget = on_forget
        self._lock = threading.Lock()
        #: The storage, or ``None`` until the first call (and after a fork).
        self.value: T | None = None
        track(self)

    def get(self) -> T:
        """Return the storage, building it first if need be."""
        value = self.value
        if value is not None:
            return value
        with self._lock:
            value = self.value
            if value is None:
                value = self.value = self._build()
            return value

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the storage: after a fork, or when the default storage changes."""
        if forked:  # pragma: no cover - forked children only
            # The parent's lock may be held by a thread the child lacks.
            self._lock = threading.Lock()
        elif not self._follows_default or self.value is None:
            return
        with self._lock:
            self.value = None
            if self._on_forget is not None:
                self._on_forget()
