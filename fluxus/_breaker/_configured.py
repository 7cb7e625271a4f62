"""A breaker's settings and its storage, built on first use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxus._config import default_storage
from fluxus._core import Policy
from fluxus._lazy import Lazy
from fluxus._redis import scheme_of

from ._circuit import Circuit, CircuitState, Transition, Window
from ._memory import MemoryStorage
from ._options import _CONFIGURABLE, _default_redis, _settings
from ._redis_store import CircuitRedisStorage
from ._store import Admission, Storage


class _Store(Lazy[Storage]):
    """A breaker's storage, built on first use, its steps one attribute away."""

    admit: Callable[[str], Admission]
    succeed: Callable[..., Transition | None]
    fail: Callable[..., Transition | None]
    release: Callable[[Any, str], None]
    remote: bool


class _Configured(Policy):
    """The circuit, its settings and its storage: what the steps run on."""

    # Set by CircuitBreaker.__init__.
    _settings: dict[str, Any]
    _window: float
    _slow_call_duration: float | None
    _excluded_types: tuple[type[BaseException], ...]
    _excluded_predicates: tuple[Callable[[Exception], bool], ...]
    _listeners: tuple[Any, ...]
    _fail_open: bool
    _given: CircuitRedisStorage | str | None
    _clock: Callable[[], float]
    _circuit: Circuit
    _last_error: BaseException | None
    _store: _Store

    # -- the storage, built on first use ------------------------------------

    def _new_circuit(self) -> Circuit:
        settings = self._settings
        return Circuit(
            settings["failure_threshold"],
            settings["reset_timeout"],
            settings["success_threshold"],
            settings["half_open_max_requests"],
            failure_rate=settings["failure_rate"],
            window=self._window,
            minimum_calls=settings["minimum_calls"],
            slow_call_rate=None
            if self._slow_call_duration is None
            else settings["slow_call_rate"],
        )

    # -- settings -------------------------------------------------------------

    @property
    def failure_threshold(self) -> int | None:
        """Consecutive failures that open the circuit (``None``: rule off)."""
        threshold: int | None = self._settings["failure_threshold"]
        return threshold

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before a trial call."""
        seconds: float = self._settings["reset_timeout"]
        return seconds

    @property
    def success_threshold(self) -> int:
        """Trial successes in a row that close the circuit."""
        threshold: int = self._settings["success_threshold"]
        return threshold

    @property
    def half_open_max_requests(self) -> int:
        """Trial calls allowed to run at the same time."""
        trials: int = self._settings["half_open_max_requests"]
        return trials

    @property
    def failure_rate(self) -> float | None:
        """The failed fraction of the window's calls that opens the circuit."""
        rate: float | None = self._settings["failure_rate"]
        return rate

    @property
    def window(self) -> float:
        """Seconds over which the rates are measured."""
        return self._window

    @property
    def minimum_calls(self) -> int:
        """Calls the window must hold before a rate can open the circuit."""
        calls: int = self._settings["minimum_calls"]
        return calls

    @property
    def slow_call_duration(self) -> float | None:
        """Seconds from which a call counts as slow (``None``: not told apart)."""
        return self._slow_call_duration

    @property
    def slow_call_rate(self) -> float:
        """The slow fraction of the window's calls that opens the circuit."""
        rate: float = self._settings["slow_call_rate"]
        return rate

    def configure(self, **changes: Any) -> None:
        """Change settings at run time, checked like :func:`circuit_breaker`'s.

        Takes ``failure_threshold``, ``reset_timeout``, ``success_threshold``,
        ``half_open_max_requests``, ``failure_rate``, ``minimum_calls`` and
        ``slow_call_rate``. The state and the counts are kept; the next step
        follows the new settings (in Redis, each process's next step sends
        its own).

        Raises:
            TypeError: If a name is not one of those, or a value has the
                wrong type.
            ValueError: If a value is out of range.
        """
        unknown = sorted(set(changes) - set(_CONFIGURABLE))
        if unknown:
            msg = (
                f"configure() cannot change {', '.join(unknown)}; it takes "
                f"{', '.join(_CONFIGURABLE)}"
            )
            raise TypeError(msg)
        settings = _settings(**(self._settings | changes))
        self._settings = settings
        circuit = self._circuit
        circuit.failure_threshold = settings["failure_threshold"]
        circuit.reset_timeout = settings["reset_timeout"]
        circuit.success_threshold = settings["success_threshold"]
        circuit.max_trials = settings["half_open_max_requests"]
        circuit.failure_rate = settings["failure_rate"]
        circuit.minimum_calls = settings["minimum_calls"]
        if self._slow_call_duration is not None:
            circuit.slow_call_rate = settings["slow_call_rate"]
        if circuit.window is None and circuit.failure_rate is not None:
            circuit.window = Window(self._window)

    def _build(self) -> Storage:
        """Build the storage (on first use).

        Raises:
            ValueError: If the default storage cannot hold a circuit.
        """
        given = self._given
        uri = default_storage()
        if given is None and scheme_of(uri) != "memory":
            given = _default_redis(uri, fail_open=self._fail_open)
        if isinstance(given, CircuitRedisStorage):
            return given.circuit(self._circuit, lambda: self.name)
        return MemoryStorage(self._circuit, self._clock)

    def _start_afresh(self) -> None:
        """The storage was dropped: in memory the circuit starts closed again.

        A forked worker does not inherit the failures its parent counted.
        """
        self._circuit = self._new_circuit()
        self._last_error = None

    @property
    def _storage(self) -> Storage:
        """The storage, built on first use."""
        return self._store.get()

    @_storage.setter
    def _storage(self, storage: Storage) -> None:
        self._store.set(storage)

    @property
    def state(self) -> CircuitState:
        """The circuit's state; it reads ``OPEN`` until a call after the timeout."""
        return self._storage.state()

    @property
    def last_error(self) -> BaseException | None:
        """The exception that last opened the circuit (in this process), or ``None``."""
        return self._last_error
