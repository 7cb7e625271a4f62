"""The circuit breaker's state machine: pure, no locks, no clock, no I/O.

Callers pass the time in (monotonic seconds) and hold whatever lock their
storage needs around one step; the step returns what changed, and the caller
emits the events once the lock is released. The Redis storage runs the same
machine as Lua scripts (:mod:`fluxus._breaker_redis`); the Hypothesis tests
check this one against a small reference model.

The state names are pybreaker's (``"closed"``, ``"open"``, ``"half-open"``).
What pybreaker lacks is written here: the half-open trial limit, trial slots
freed when a trial finishes, outcomes that count as neither a failure nor
a success (excluded errors, cancellation), and the failure-rate and slow-call
rules over a sliding window of time buckets (:class:`Window`).
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


#: How many buckets a window is cut into: the window slides by a tenth.
BUCKETS = 10

_floor = math.floor


class Window:
    """Calls, failures and slow calls over the last *span* seconds, O(1) a call.

    Time is cut into buckets of ``span / BUCKETS`` seconds; the window holds
    the bucket *now* falls in and the ``BUCKETS - 1`` before it. Recording a
    call clears the buckets that slid out (at most ``BUCKETS`` of them) and
    adds to one; the totals are kept running, so no step walks the calls.
    """

    __slots__ = (
        "calls",
        "current",
        "ends",
        "failures",
        "head",
        "slots",
        "slow",
        "width",
    )

    calls: int
    current: list[int]
    ends: float
    failures: int
    head: float
    slots: list[list[int]]
    slow: int
    width: float

    def __init__(self, span: float) -> None:
        self.width = span / BUCKETS
        self.clear()

    def clear(self) -> None:
        """Forget every call."""
        self.head = -math.inf  # the index of the newest bucket
        self.ends = -math.inf  # when the newest bucket ends (no division per call)
        self.slots = [[0, 0, 0] for _ in range(BUCKETS)]
        self.current = self.slots[0]  # the newest bucket's counts
        self.calls = self.failures = self.slow = 0

    def _slide(self, index: int) -> None:
        """Make bucket *index* the newest, emptying those that slid out."""
        for stale in range(max(self.head + 1, index - BUCKETS + 1), index + 1):  # type: ignore[call-overload]
            slot = self.slots[stale % BUCKETS]
            self.calls -= slot[0]
            self.failures -= slot[1]
            self.slow -= slot[2]
            slot[0] = slot[1] = slot[2] = 0
        self.head = index
        # The first instant of the next bucket, as add() computes buckets:
        # ``now < ends`` says ``now`` falls in this one, without a division.
        ends = (index + 1) * self.width
        while _floor(math.nextafter(ends, -math.inf) / self.width) > index:
            ends = math.nextafter(ends, -math.inf)
        self.ends = ends
        self.current = self.slots[index % BUCKETS]

    def add(self, now: float, failed: bool, slow: bool, calls: int = 1) -> bool:  # noqa: FBT001 - positional on the hot path
        """Count *calls* calls that finished at *now* (all failed, or all slow).

        Returns whether the window slid (calls left it).
        """
        index = _floor(now / self.width)
        slid = index > self.head
        if slid:
            self._slide(index)
        slot = self.current  # a late clock counts in the newest
        slot[0] += calls
        self.calls += calls
        if failed:
            slot[1] += calls
            self.failures += calls
        if slow:
            slot[2] += calls
            self.slow += calls
        return slid


class Circuit:
    """One circuit's counters and the rules that move it between states.

    A call is admitted with :meth:`admit`, which returns a token: an int
    holding the epoch (bumped on every state change) and a trial bit. An
    outcome reported with a token from an older epoch is ignored, so a slow
    call admitted before the circuit changed cannot disturb the new state.
    """

    __slots__ = (
        "epoch",
        "failure_rate",
        "failure_threshold",
        "failures",
        "forced",
        "max_trials",
        "minimum_calls",
        "opened_at",
        "reset_timeout",
        "slow_call_rate",
        "state",
        "success_threshold",
        "successes",
        "trials",
        "window",
    )

    def __init__(
        self,
        failure_threshold: int | None,
        reset_timeout: float,
        success_threshold: int,
        max_trials: int,
        *,
        failure_rate: float | None = None,
        window: float = 60.0,
        minimum_calls: int = 10,
        slow_call_rate: float | None = None,
    ) -> None:
        self.failure_threshold: int | None = failure_threshold
        self.reset_timeout: float = reset_timeout
        self.success_threshold: int = success_threshold
        self.max_trials: int = max_trials
        self.failure_rate: float | None = failure_rate
        self.minimum_calls: int = minimum_calls
        #: ``None`` unless slow calls are told apart (``slow_call_duration``).
        self.slow_call_rate: float | None = slow_call_rate
        #: The closed circuit's recent calls, when a rate rule is on.
        self.window: Window | None = (
            None if failure_rate is None and slow_call_rate is None else Window(window)
        )
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
        if self.window is not None:
            self.window.clear()
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

    def succeed(  # noqa: PLR0911 - one return per rule
        self, token: int, now: float = 0.0, *, slow: bool = False
    ) -> Transition | None:
        """Record a success of the call admitted with *token*.

        *now* and *slow* (the call took at least ``slow_call_duration``)
        matter only to the window.
        """
        if token >> 1 != self.epoch:
            return None
        if not token & 1:
            if self.state is not CLOSED:
                return None
            self.failures = 0
            window = self.window
            if window is None:
                return None
            # A quick success only lowers the rates: judge only when calls
            # left the window or this one completes minimum_calls.
            if (
                window.add(now, False, slow)  # noqa: FBT003 - the hot path
                or slow
                or window.calls == self.minimum_calls
            ):
                return self._judge(now)
            return None
        self.trials -= 1
        self.successes += 1
        if self.successes >= self.success_threshold:
            plural = "" if self.successes == 1 else "es"
            return self._move(CLOSED, f"{self.successes} trial success{plural}")
        return None

    def fail(self, token: int, now: float, *, slow: bool = False) -> Transition | None:
        """Record a failure of the call admitted with *token*."""
        if token >> 1 != self.epoch:
            return None
        if token & 1:
            return self._open(now, "a trial call failed")
        if self.state is not CLOSED:
            return None
        self.failures += 1
        threshold = self.failure_threshold
        if threshold is not None and self.failures >= threshold:
            plural = "" if self.failures == 1 else "s"
            return self._open(now, f"{self.failures} consecutive failure{plural}")
        if self.window is None:
            return None
        self.window.add(now, True, slow)  # noqa: FBT003
        return self._judge(now)

    def count_quick(self, calls: int) -> None:
        """Count *calls* closed successes in the window's newest bucket.

        For successes that could not have opened the circuit: no judgement.
        """
        window = self.window
        if window is not None and calls and self.state is CLOSED:
            window.current[0] += calls
            window.calls += calls

    def _judge(self, now: float) -> Transition | None:
        """Open the circuit if the window's rates call for it."""
        window = self.window
        assert window is not None  # noqa: S101 - only called with a window
        calls = window.calls
        if calls < self.minimum_calls:
            return None
        rate = self.failure_rate
        if rate is not None and window.failures / calls >= rate:
            reason = f"{window.failures} of the last {calls} calls failed"
            return self._open(now, reason)
        rate = self.slow_call_rate
        if rate is not None and window.slow / calls >= rate:
            return self._open(now, f"{window.slow} of the last {calls} calls were slow")
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
