"""One breaker's circuit in Redis: each step of the state machine one script."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from fluxus._aio import asyncio_only, in_background, shielded
from fluxus._redis import StorageHealth, tagged_key
from fluxus._redis_scripts import Scripts
from fluxus.instrumentation._events import (
    CircuitStorageRecovered,
    CircuitStorageUnavailable,
)
from fluxus.instrumentation._hooks import emit

from ._circuit import CLOSED, OPEN, Circuit, CircuitState, Transition
from ._lua import SCRIPTS
from ._store import Admission


class RedisOptions(Protocol):
    """What a circuit needs of its :class:`~fluxus.CircuitRedisStorage`."""

    prefix: str
    fail_open: bool
    timeout: float
    retry_interval: float
    trial_timeout: float
    description: str
    _secret: str | None

    def sync_client(self) -> Any:
        """Return the sync client."""

    async def async_client(self) -> Any:
        """Return the asyncio client of the running loop."""


#: How the refusal under trio names this storage.
_STORAGE = "the Redis storage of fluxus.circuit_breaker"


class _Down(Exception):
    """Redis could not be reached; the storage's fail mode applies."""


class _Bypass:
    """The token of a call let through while Redis was unreachable."""


_BYPASS = _Bypass()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisCircuit:
    """One breaker's circuit in Redis: the :class:`~fluxus._breaker.Storage` steps."""

    remote = True

    def __init__(
        self, storage: RedisOptions, circuit: Circuit, name: Callable[[], str]
    ) -> None:
        self.storage = storage
        self.settings = circuit
        self.name = name
        self.health: StorageHealth = StorageHealth(
            fail_open=storage.fail_open,
            retry_interval=storage.retry_interval,
            on_down=self._went_down,
            on_up=self._came_back,
            secret=storage._secret,  # noqa: SLF001 - its own package
        )
        self._failures = itertools.count(1)  # next() is atomic: threads share it
        #: The number of the last failure this process recorded.
        self.last_failure: int = 0
        #: Seconds to use instead of the Redis server's clock (tests only).
        self.clock: Callable[[], float] | None = None
        self._scripts = Scripts(SCRIPTS)
        #: Whether closed successes wait for the next admission to be
        #: reported (one round trip a call); off, each is its own.
        self.defer_successes = True
        #: Closed successes not reported yet: [epoch, quick, slow].
        self._unreported = [0, 0, 0]
        self._unreported_lock = threading.Lock()

    def _keys(self) -> list[str]:
        prefix, name = self.storage.prefix, self.name()
        return [
            tagged_key(prefix, name, "state"),
            tagged_key(prefix, name, "trials"),
            tagged_key(prefix, name, "window"),
        ]

    def _window_args(self) -> list[Any]:
        """The window's settings as the scripts take them ('' for off)."""
        settings = self.settings
        window = settings.window
        if window is None:
            return ["", 0, "", ""]
        return [
            repr(window.width),
            settings.minimum_calls,
            "" if settings.failure_rate is None else repr(settings.failure_rate),
            "" if settings.slow_call_rate is None else repr(settings.slow_call_rate),
        ]

    def _defer(self, epoch: int, *, slow: bool) -> None:
        """Keep a closed success for the next admission to report."""
        with self._unreported_lock:
            unreported = self._unreported
            if epoch > unreported[0]:  # older ones are stale now
                unreported[:] = [epoch, 0, 0]
            elif epoch < unreported[0]:
                return
            unreported[2 if slow else 1] += 1

    def _take_unreported(self) -> list[Any]:
        with self._unreported_lock:
            taken = list(self._unreported)
            self._unreported[1] = self._unreported[2] = 0
        return taken

    # Reaching Redis, and what to do when it cannot be reached.

    def _went_down(self, function: str, error_type: str, error_message: str) -> None:
        emit(
            CircuitStorageUnavailable(
                policy=self.name(),
                function=function,
                storage=self.storage.description,
                fail_open=self.storage.fail_open,
                error_type=error_type,
                error_message=error_message,
            )
        )

    def _came_back(self, function: str) -> None:
        emit(
            CircuitStorageRecovered(
                policy=self.name(), function=function, storage=self.storage.description
            )
        )

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    @contextlib.contextmanager
    def _reaching(self, function: str) -> Iterator[None]:
        """Run a step against Redis: skipped while resting, outages noted."""
        health = self.health
        if health.down_until is not None and health.resting():
            raise _Down
        try:
            yield
        except Exception as exc:
            health.failed(exc, function)
            raise _Down from exc
        health.answered(function)

    def _run(self, script: str, args: list[Any], function: str) -> list[Any]:
        with self._reaching(function):
            client = self.storage.sync_client()
            reply = self._scripts.run(
                client, script, self._keys(), [*args, self._now()]
            )
        return list(reply)

    async def _run_async(
        self, script: str, args: list[Any], function: str
    ) -> list[Any]:
        asyncio_only(_STORAGE)
        with self._reaching(function):
            client = await self.storage.async_client()
            async with asyncio.timeout(self.storage.timeout):
                reply = await self._scripts.run_async(
                    client, script, self._keys(), [*args, self._now()]
                )
        return list(reply)

    # Requests and replies, shared by the sync and the async steps.

    def _admit_args(self) -> list[Any]:
        settings = self.settings
        return [
            settings.reset_timeout,
            settings.max_trials,
            self.storage.trial_timeout,
            *self._window_args(),
            *self._take_unreported(),
        ]

    def _admission(self, reply: list[Any]) -> Admission:
        code, epoch, trial, failures, wait, old, new, reason = reply
        transition = None
        if _text(old):
            transition = Transition(
                CircuitState(_text(old)),
                CircuitState(_text(new)),
                _text(reason) or "reset timeout elapsed",
            )
        if not code:
            return None, float(_text(wait)), transition
        token = (int(epoch), _text(trial), int(failures), self.last_failure)
        return token, 0.0, transition

    def _unreachable(self) -> Admission:
        if self.storage.fail_open:
            return _BYPASS, 0.0, None
        return None, self.storage.retry_interval, None

    def _record_args(
        self, outcome: str, token: Any, *, slow: bool = False
    ) -> list[Any] | None:
        if token is _BYPASS:
            return None
        epoch, trial, failures, last_failure = token
        settings = self.settings
        if outcome == "f":
            self.last_failure = next(self._failures)
        elif not (trial or failures) and last_failure == self.last_failure:
            # Nothing to forget: no failure counted when the call was
            # admitted, none recorded by this process since. The window
            # hears of it with the next admission (or now, if not deferred).
            if settings.window is None or outcome == "n":
                return None
            if self.defer_successes:
                self._defer(epoch, slow=slow)
                return None
        threshold = settings.failure_threshold
        return [
            outcome,
            epoch,
            trial,
            "" if threshold is None else threshold,
            settings.success_threshold,
            "1" if slow else "",
            *self._window_args(),
        ]

    @staticmethod
    def _transition(reply: list[Any]) -> Transition | None:
        if not reply:
            return None
        old, new, reason = (_text(part) for part in reply)
        return Transition(CircuitState(old), CircuitState(new), reason)

    def _record(
        self, outcome: str, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        args = self._record_args(outcome, token, slow=slow)
        if args is None:
            return None
        try:
            return self._transition(self._run("record", args, function))
        except _Down:
            return None

    async def _record_async(
        self, outcome: str, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        args = self._record_args(outcome, token, slow=slow)
        if args is None:
            return None
        try:
            reply = await shielded(self._run_async("record", args, function))
        except _Down:
            return None
        return self._transition(reply)

    # The steps.

    def admit(self, function: str) -> Admission:
        """Admit a call or refuse it, in one script."""
        try:
            return self._admission(self._run("admit", self._admit_args(), function))
        except _Down:
            return self._unreachable()

    def succeed(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a success."""
        return self._record("s", token, function, slow=slow)

    def fail(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a failure."""
        return self._record("f", token, function, slow=slow)

    def release(self, token: Any, function: str) -> None:
        """Record an outcome that counts as neither; frees a trial slot."""
        if token is not _BYPASS and token[1]:
            self._record("n", token, function)

    async def _admit_step(self, function: str) -> Admission:
        try:
            reply = await self._run_async("admit", self._admit_args(), function)
        except _Down:
            return self._unreachable()
        return self._admission(reply)

    async def admit_async(self, function: str) -> Admission:
        """Admit a call or refuse it, in one script, without blocking the loop."""
        asyncio_only(_STORAGE)
        step = asyncio.ensure_future(self._admit_step(function))
        try:
            return await shielded(step)
        except asyncio.CancelledError:
            # The caller is gone: give back the trial slot it may have got.
            step.add_done_callback(lambda done: self._give_back(done, function))
            raise

    def _give_back(self, step: asyncio.Future[Admission], function: str) -> None:
        if step.cancelled() or step.exception() is not None:
            return
        token = step.result()[0]
        if token is not None:
            in_background(self.release_async(token, function))

    async def succeed_async(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a success, without blocking the loop."""
        return await self._record_async("s", token, function, slow=slow)

    async def fail_async(
        self, token: Any, function: str, *, slow: bool = False
    ) -> Transition | None:
        """Record a failure, without blocking the loop."""
        return await self._record_async("f", token, function, slow=slow)

    async def release_async(self, token: Any, function: str) -> None:
        """Record an outcome that counts as neither, without blocking the loop."""
        if token is not _BYPASS and token[1]:
            await self._record_async("n", token, function)

    def state(self) -> CircuitState:
        """Return the shared state (what the fail mode implies if Redis is down)."""
        try:
            if self.health.resting():
                raise _Down  # noqa: TRY301 - same answer as a failed read
            client = self.storage.sync_client()
            value = client.hget(self._keys()[0], "state")
        except Exception:  # noqa: BLE001 - any failure means "unreachable"
            return CLOSED if self.storage.fail_open else OPEN
        return CLOSED if value is None else CircuitState(_text(value))

    def _control(self, action: str) -> Transition | None:
        try:
            return self._transition(self._run("control", [action], ""))
        except _Down as exc:
            msg = f"cannot {action} circuit {self.name()!r}: Redis is unreachable"
            raise ConnectionError(msg) from exc.__cause__

    def reset(self) -> Transition | None:
        """Close the shared circuit by hand."""
        return self._control("reset")

    def force_open(self) -> Transition | None:
        """Open the shared circuit by hand, until :meth:`reset`."""
        return self._control("open")
