"""The circuit breaker's state machine: pure, no locks, no clock, no I/O.

Callers pass the time in (monotonic seconds) and hold whatever lock their
storage needs around one step; the step returns what changed, and the caller
emits the events once the lock is released. The Redis storage runs the same
machine as Lua scripts (:mod:`fluxus._breaker_redis`); the Hypothesis tests
check this one against a small reference model.

The state names are pybreaker's (``"closed"``, ``"open"``, ``"half-open"``).
What pybreaker lacks is written here: the half-open trial limit, trial slots
freed when a trial finishes, and outcomes that count as neither a failure nor
a success (excluded errors, cancellation).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import pybreaker


class CircuitState(enum.Enum):
    """The state of a circuit breaker; the values are pybreaker's state names."""

    CLOSED = pybreaker.STATE_CLOSED
    OPEN = pybreaker.STATE_OPEN
    HALF_OPEN = pybreaker.STATE_HALF_OPEN


CLOSED = CircuitState.CLOSED
OPEN = CircuitState.OPEN
HALF_OPEN = CircuitState.HALF_OPEN


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change: from *old* to *new*, and why."""

    old: CircuitState
    new: CircuitState
    reason: str


class Circuit:
    """One circuit's counters and the rules that move it between states.

    A call is admitted with :meth:`admit`, which returns a token: an int
    holding the epoch (bumped on every state change) and a trial bit. An
    outcome reported with a token from an older epoch is ignored, so a slow
    call admitted before the circuit changed cannot disturb the new state.
    """

    __slots__ = (
        "epoch",
        "failure_threshold",
        "failures",
        "forced",
        "max_trials",
        "opened_at",
        "reset_timeout",
        "state",
        "success_threshold",
        "successes",
        "trials",
    )

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout: float,
        success_threshold: int,
        max_trials: int,
    ) -> None:
        self.failure_threshold: int = failure_threshold
        self.reset_timeout: float = reset_timeout
        self.success_threshold: int = success_threshold
        self.max_trials: int = max_trials
        self.state: CircuitState = CLOSED
        self.epoch: int = 0
        self.failures: int = 0
        self.successes: int = 0
        self.trials: int = 0
        self.opened_at: float = 0.0
        self.forced: bool = False

    def _move(self, new: CircuitState, reason: str) -> Transition:
        old = self.state
        # State before epoch: a lock-free reader that reads the epoch first
        # and then sees CLOSED holds a token that is either current and
        # closed, or stale (see MemoryStorage.admit).
        self.state = new
        self.epoch += 1
        self.failures = self.successes = self.trials = 0
        return Transition(old, new, reason)

    def admit(self, now: float) -> tuple[int | None, float, Transition | None]:
        """Decide whether a call may run now.

        Returns:
            ``(token, retry_after, transition)``: *token* is ``None`` when the
            call is rejected, *retry_after* then says for how long; a
            *transition* is returned when the timer moved the circuit to
            half-open.
        """
        transition = None
        if self.state is OPEN:
            if self.forced:  # open until reset: no wait is known
                return None, math.inf, None
            wait = self.opened_at + self.reset_timeout - now
            if wait > 0:
                return None, wait, None
            transition = self._move(HALF_OPEN, "reset timeout elapsed")
        if self.state is HALF_OPEN:
            if self.trials >= self.max_trials:
                return None, 0.0, transition
            self.trials += 1
            return self.epoch << 1 | 1, 0.0, transition
        return self.epoch << 1, 0.0, None

    def succeed(self, token: int) -> Transition | None:
        """Record a success of the call admitted with *token*."""
        if token >> 1 != self.epoch:
            return None
        if not token & 1:
            if self.state is CLOSED:
                self.failures = 0
            return None
        self.trials -= 1
        self.successes += 1
        if self.successes >= self.success_threshold:
            plural = "" if self.successes == 1 else "es"
            return self._move(CLOSED, f"{self.successes} trial success{plural}")
        return None

    def fail(self, token: int, now: float) -> Transition | None:
        """Record a failure of the call admitted with *token*."""
        if token >> 1 != self.epoch:
            return None
        if token & 1:
            return self._open(now, "a trial call failed")
        if self.state is not CLOSED:
            return None
        self.failures += 1
        if self.failures >= self.failure_threshold:
            plural = "" if self.failures == 1 else "s"
            return self._open(now, f"{self.failures} consecutive failure{plural}")
        return None

    def release(self, token: int) -> None:
        """Forget the call admitted with *token*: it counts as neither."""
        if token >> 1 == self.epoch and token & 1:
            self.trials -= 1

    def _open(self, now: float, reason: str) -> Transition:
        self.opened_at = now  # before the state: lock-free readers use it
        return self._move(OPEN, reason)

    def force_open(self, now: float) -> Transition | None:
        """Open the circuit until :meth:`reset`; return the change, if any."""
        self.forced = True
        if self.state is OPEN:
            return None
        return self._open(now, "opened by hand")

    def reset(self) -> Transition | None:
        """Close the circuit and clear its counters; return the change, if any."""
        self.forced = False
        if self.state is CLOSED:
            self.failures = 0
            return None
        return self._move(CLOSED, "reset by hand")
