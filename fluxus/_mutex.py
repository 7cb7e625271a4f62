"""A lock for the short sections of the in-memory stores, free of convoys.

A :class:`threading.Lock` that a thread waits for is handed to that thread
while it sleeps in the kernel, without the GIL. Under the GIL that starts a
convoy: a holder that loses the GIL inside its section (CPython switches
threads every 5 ms) makes every other caller sleep on the lock; each then
takes the lock without the GIL and waits for the GIL holding it, so the
thread that has the GIL finds the lock taken on its next call and sleeps
too. Every call then pays a thread switch: a memory rate limit called from
8 threads took 1.4 switches and 20 us a call instead of 4 us.

:class:`Mutex` is taken only by a thread that holds the GIL: a caller that
finds it taken naps (:data:`NAP_SECONDS`, which gives the GIL away) and
tries again. A section is microseconds of Python, so a taken mutex is rare
(the holder lost the GIL inside it) and short; the happy path costs what
``with threading.Lock():`` costs.
"""

from __future__ import annotations

import threading
import time

#: How long a caller that found the mutex taken sleeps before trying again.
NAP_SECONDS = 2e-5


class Mutex:
    """A non-reentrant lock that never waits in the kernel to be handed over."""

    __slots__ = ("_try", "release")

    def __init__(self) -> None:
        lock = threading.Lock()
        self._try = lock.acquire
        #: Release the mutex (held by the caller).
        self.release = lock.release

    def acquire(self) -> None:
        """Take the mutex, napping while another thread holds it."""
        attempt = self._try
        while not attempt(False):  # noqa: FBT003 - the fastest call
            time.sleep(NAP_SECONDS)

    def __enter__(self) -> None:
        if not self._try(False):  # noqa: FBT003 - the fastest call
            self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
