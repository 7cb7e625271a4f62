"""The leases a process holds in Redis, renewed by one daemon thread."""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._redis import RedisCompartment


class _Renewer:
    """A daemon thread renewing the leases this process holds."""

    def __init__(self) -> None:
        self.forget()

    def forget(self) -> None:
        """Start afresh: a forked child has none of its parent's threads."""
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.thread: threading.Thread | None = None
        self.held: weakref.WeakKeyDictionary[RedisCompartment, set[str]] = (
            weakref.WeakKeyDictionary()
        )

    def add(self, compartment: RedisCompartment, lease_id: str) -> None:
        with self.lock:
            if compartment not in self.held:
                self.held[compartment] = set()
                self.wake.set()  # its lease may be shorter than the others'
            self.held[compartment].add(lease_id)
            if self.thread is None:
                self.thread = threading.Thread(
                    target=self._run, name="fluxus-bulkhead-leases", daemon=True
                )
                self.thread.start()

    def discard(self, compartment: RedisCompartment, lease_id: str) -> None:
        with self.lock:
            ids = self.held.get(compartment)
            if ids is not None:
                ids.discard(lease_id)

    def _run(self) -> None:
        while True:
            with self.lock:
                held = [(c, list(ids)) for c, ids in self.held.items() if ids]
                interval = min((c.lease / 3 for c in self.held), default=1.0)
                self.wake.clear()
            for compartment, ids in held:
                with contextlib.suppress(Exception):  # an outage: tried again later
                    compartment.renew(ids)
            self.wake.wait(interval)


RENEWER = _Renewer()

if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows only
    os.register_at_fork(after_in_child=RENEWER.forget)
