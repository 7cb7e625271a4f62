"""A circuit kept in this process."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from ._circuit import CLOSED, OPEN, Circuit, CircuitState, Transition
from ._store import Admission

_floor = math.floor

#: Quick successes queued at most before one takes the lock (bounded memory).
_QUEUED = 4096


class MemoryStorage:
    """Keep the circuit in this process; each step holds a lock for microseconds.

    A closed circuit admits every call and a success with no failure to
    forget changes nothing, so the happy path takes no lock at all. With a
    window, a quick success that cannot open the circuit (same bucket, not
    the call that completes ``minimum_calls``) is queued without the lock
    (``list.append`` is atomic) and counted in the newest bucket by the next
    step that takes the lock, before that step runs.
    """

    remote = False

    def __init__(self, circuit: Circuit, clock: Callable[[], float]) -> None:
        self.circuit = circuit
        self.clock = clock
        self.lock = threading.Lock()
        #: Quick successes not counted yet, one epoch each.
        self.quick: list[int] = []

    def _count_quick(self) -> None:
        """Count the queued quick successes (the lock is held)."""
        quick = self.quick
        taken = len(quick)
        if taken:
            epoch = self.circuit.epoch
            current = sum(1 for queued in quick[:taken] if queued == epoch)
            del quick[:taken]
            self.circuit.count_quick(current)

    def admit(self, _function: str) -> Admission:
        """Admit a call or refuse it; see :meth:`Circuit.admit`."""
        circuit = self.circuit
        epoch = circuit.epoch  # before the state: see Circuit._move
        state = circuit.state
        if state is CLOSED:
            return epoch << 1, 0.0, None
        if state is OPEN:
            # Refusing needs no lock either: opened_at is written before the
            # state, and a stale one is older than reset_timeout, so it only
            # sends the caller to the locked path below.
            if circuit.forced:
                return None, math.inf, None
            wait = circuit.opened_at + circuit.reset_timeout - self.clock()
            if wait > 0:
                return None, wait, None
        with self.lock:
            self._count_quick()
            return circuit.admit(self.clock())

    def succeed(
        self, token: int, _function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a success; see :meth:`Circuit.succeed`."""
        circuit = self.circuit
        if not token & 1 and not circuit.failures:
            window = circuit.window
            if window is None:
                return None
            now = self.clock()
            quick = self.quick
            queued = len(quick)
            if (
                not slow
                and now < window.ends  # still in the newest bucket
                and queued < _QUEUED
                and token >> 1 == circuit.epoch
                and window.calls + queued + 1 != circuit.minimum_calls
            ):
                quick.append(token >> 1)
                return None
        else:
            now = self.clock()
        with self.lock:
            self._count_quick()
            return circuit.succeed(token, now, slow=slow)

    def fail(
        self, token: int, _function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a failure; see :meth:`Circuit.fail`."""
        with self.lock:
            self._count_quick()
            return self.circuit.fail(token, self.clock(), slow=slow)

    def release(self, token: int, _function: str) -> None:
        """Record an outcome that counts as neither; see :meth:`Circuit.release`."""
        if token & 1:
            with self.lock:
                self._count_quick()
                self.circuit.release(token)

    def state(self) -> CircuitState:
        """Return the current state, without moving it."""
        return self.circuit.state

    def reset(self) -> Transition | None:
        """Close the circuit by hand."""
        with self.lock:
            self._count_quick()
            return self.circuit.reset()

    def force_open(self) -> Transition | None:
        """Open the circuit by hand, until :meth:`reset`."""
        with self.lock:
            self._count_quick()
            return self.circuit.force_open(self.clock())

    # The Storage protocol's async steps: never awaited, since ``remote`` is
    # False and the drivers then step a memory circuit without awaiting.

    async def admit_async(self, function: str) -> Admission:  # pragma: no cover
        """Same as :meth:`admit`: memory needs no I/O."""
        return self.admit(function)

    async def succeed_async(  # pragma: no cover
        self, token: int, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Same as :meth:`succeed`."""
        return self.succeed(token, function, slow=slow)

    async def fail_async(  # pragma: no cover
        self, token: int, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Same as :meth:`fail`."""
        return self.fail(token, function, slow=slow)

    async def release_async(
        self, token: int, function: str
    ) -> None:  # pragma: no cover
        """Same as :meth:`release`."""
        self.release(token, function)
