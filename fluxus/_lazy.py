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
from typing import Any, Generic, TypeVar

from ._config import track

T = TypeVar("T")


class Lazy(Generic[T]):
    """A storage built on first use: read ``value``, or :meth:`get` when ``None``.

    The storage's hot *steps* (method names) are also attributes of the
    ``Lazy`` itself: the storage's bound methods once it is built, and before
    that forwarders that build it first. A wrapper keeps the ``Lazy`` and
    calls ``lazy.admit(...)``: one attribute load, whatever storage is in use.
    (No ``__getattr__`` here: it would slow every attribute load down.)
    Subclasses annotate the steps for the type checker.

    Args:
        build: Builds the storage; called under a lock, once per life.
        follows_default: Whether the storage follows the default storage
            (no ``storage=`` given): it is then forgotten when that changes.
        on_forget: Called (under the lock) when the storage is dropped.
        steps: The storage's attributes to expose (a forwarder is truthy, so
            a flag such as ``remote`` reads true until the storage is built).
    """

    def __init__(
        self,
        build: Callable[[], T],
        *,
        follows_default: bool,
        on_forget: Callable[[], None] | None = None,
        steps: tuple[str, ...] = (),
    ) -> None:
        self._build = build
        self._follows_default = follows_default
        self._on_forget = on_forget
        self._steps = steps
        self._lock = threading.Lock()
        #: The storage, or ``None`` until the first call (and after a fork).
        self.value: T | None = None
        self._unbind()
        track(self)

    def _unbind(self) -> None:
        for name in self._steps:
            setattr(self, name, self._forwarder(name))

    def _forwarder(self, name: str) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return getattr(self.get(), name)(*args, **kwargs)

        return forward

    def set(self, value: T) -> None:
        """Use *value* as the storage from now on (tests wrap one)."""
        self.value = value
        for name in self._steps:
            # A stand-in lacking a flag (``remote``) reads as not having it.
            setattr(self, name, getattr(value, name, None))

    def get(self) -> T:
        """Return the storage, building it first if need be."""
        value = self.value
        if value is not None:
            return value
        with self._lock:
            value = self.value
            if value is None:
                self.set(value := self._build())
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
            self._unbind()
            if self._on_forget is not None:
                self._on_forget()
