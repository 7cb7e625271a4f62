"""A circuit shared among processes through Redis.

pybreaker's ``CircuitRedisStorage`` keeps the state in Redis but makes two or
three separate round trips per call, lets a trial call through in every
process and reads each machine's wall clock. Here every step of the state
machine in :mod:`fluxus._breaker_core` is one Lua script, so it is atomic;
the timer reads the Redis server's clock (``TIME``), the one clock every
process shares; the half-open trials are entries of a sorted set scored by
their expiry, so the trial limit holds across processes and a process that
dies mid-trial frees its slot after ``trial_timeout``.

Keys (``prefix`` defaults to ``fluxus:breaker``)::

    <prefix>:<name>:state    hash: state, epoch, failures, successes,
                             opened_at, forced, seq
    <prefix>:<name>:trials   sorted set: running trials, scored by expiry

A happy call costs one round trip: a success is written back only when there
may be failures to forget (the admission saw some, or this process recorded
one since), so a success that overlaps a failure in ANOTHER process may
leave that failure counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

from fluxus._aio import in_background, shielded
from fluxus._config import track
from fluxus._redis import (
    SCHEMES,
    PerLoop,
    StorageHealth,
    async_client,
    mask_password,
    scheme_of,
    sync_client,
    url_password,
)
from fluxus._validate import Duration, non_empty_str, positive_seconds, to_seconds
from fluxus.instrumentation._events import (
    CircuitStorageRecovered,
    CircuitStorageUnavailable,
)
from fluxus.instrumentation._hooks import emit

from ._circuit import CLOSED, OPEN, Circuit, CircuitState, Transition
from ._lua import SCRIPTS
from ._store import Admission


class _Down(Exception):
    """Redis could not be reached; the storage's fail mode applies."""


class _Bypass:
    """The token of a call let through while Redis was unreachable."""


_BYPASS = _Bypass()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _describe(client: Any) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"  # noqa: E501


class CircuitRedisStorage:
    """Share circuits among processes and machines through Redis.

    Pass it as ``storage=`` (a Redis URL or client works too, with the
    defaults below). Circuits are keyed by the breaker's ``name``, so give
    each shared breaker an explicit one.

    Args:
        target: A ``redis://``, ``rediss://`` or ``unix://`` URL, a
            ``redis.Redis`` or a ``redis.asyncio.Redis`` client. Sync
            functions use a sync client and ``async def`` functions an
            asyncio one; fluxus builds the missing one from the URL or the
            client's connection settings (host, port, db, credentials).
        prefix: The first part of every key.
        fail_open: When Redis cannot be reached, let calls through
            unprotected (``True``, the default: an outage of Redis alone
            does not take the service down) or refuse them with
            :class:`~fluxus.CircuitOpenError` (``False``).
        timeout: Socket and connect timeout, in seconds, of the clients
            fluxus builds (async calls are bounded by it whatever the client).
        retry_interval: After Redis failed, how long fluxus applies the fail
            mode without asking Redis again.
        trial_timeout: How long a half-open trial holds its slot at most: a
            process that dies mid-trial cannot block trials for longer.
        param: The parameter name used in error messages.

    Raises:
        ImportError: If the ``redis`` package is not installed.
        TypeError: If *target* is neither a URL nor a Redis client.
        ValueError: If the URL is not a Redis URL or a duration is invalid.
    """

    def __init__(
        self,
        target: str | Any,
        *,
        prefix: str = "fluxus:breaker",
        fail_open: bool = True,
        timeout: Duration = 0.5,
        retry_interval: Duration = 1.0,
        trial_timeout: Duration = 60.0,
        param: str = "target",
    ) -> None:
        try:
            import redis  # noqa: PLC0415
            import redis.asyncio  # noqa: PLC0415
            import redis.connection  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - redis is a test dependency
            msg = "a Redis circuit storage needs the redis package: fluxus[redis]"
            raise ImportError(msg) from exc
        self.prefix = non_empty_str(prefix, "prefix")
        self.fail_open = bool(fail_open)
        self.timeout = positive_seconds(timeout, "timeout")
        self.retry_interval = to_seconds(retry_interval, "retry_interval")
        self.trial_timeout = positive_seconds(trial_timeout, "trial_timeout")
        self._url: str | None = None
        self._sync: Any = None
        self._async: Any = None
        self._per_loop = PerLoop(self._make_async)
        if isinstance(target, str):
            if "://" not in target or scheme_of(target) not in SCHEMES:
                msg = (
                    f"{param} must be a redis://, rediss:// or unix:// URL or a "
                    f"Redis client, got {mask_password(target)!r}"
                )
                raise ValueError(msg)
            try:
                redis.connection.parse_url(target)  # type: ignore[no-untyped-call] # redis-py leaves it unannotated
            except ValueError:
                msg = f"{param} is not a usable Redis URL: {mask_password(target)!r}"
                raise ValueError(msg) from None
            # The clients are built on first use, and again in a forked
            # child: a connection is never shared by two processes.
            self._url = target
            self.description = mask_password(target)
            self._secret = url_password(target)
            track(self)
            return
        if isinstance(target, redis.Redis):
            self._sync = target
        elif isinstance(target, redis.asyncio.Redis):
            self._async = target
        else:
            msg = (
                f"{param} must be None, a Redis URL, a redis.Redis or "
                f"redis.asyncio.Redis client, or a CircuitRedisStorage, "
                f"got {target!r}"
            )
            raise TypeError(msg)
        self.description = _describe(target)
        self._secret = self._password()
        track(self)

    def __repr__(self) -> str:
        return f"<fluxus.CircuitRedisStorage {self.description!r}>"

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the clients fluxus built, in a forked child.

        A client given by the user stays: redis-py's connection pool opens
        new connections itself once it sees it runs in another process.
        """
        if forked:  # pragma: no cover - forked children only
            if self._url is not None or self._async is not None:
                self._sync = None
            self._per_loop.forget()

    def _timeouts(self) -> dict[str, Any]:
        return {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}

    def _password(self) -> str | None:
        client = self._sync if self._sync is not None else self._async
        password = client.connection_pool.connection_kwargs.get("password")
        return str(password) if password else None

    def _settings(self, client: Any) -> dict[str, Any]:
        kwargs = client.connection_pool.connection_kwargs
        keep = ("host", "port", "db", "username", "password", "path")
        settings = {key: kwargs[key] for key in keep if key in kwargs}
        if "path" in settings:
            settings["unix_socket_path"] = settings.pop("path")
        return settings | self._timeouts()

    def sync_client(self) -> Any:
        """Return the client sync functions use, building it on first use."""
        if self._sync is None:
            import redis  # noqa: PLC0415 - an optional dependency

            if self._url is not None:
                self._sync = sync_client(self._url, self.timeout)
            else:
                self._sync = redis.Redis(**self._settings(self._async))
        return self._sync

    def _make_async(self) -> Any:
        import redis.asyncio  # noqa: PLC0415 - an optional dependency

        if self._url is not None:
            return async_client(self._url, self.timeout)
        return redis.asyncio.Redis(**self._settings(self._sync))

    async def async_client(self) -> Any:
        """Return an asyncio client bound to the running event loop."""
        if self._async is not None:
            return self._async
        return await self._per_loop.get()

    def circuit(self, circuit: Circuit, name: Callable[[], str]) -> RedisCircuit:
        """Return one breaker's storage: *circuit*'s settings under *name*'s keys."""
        return RedisCircuit(self, circuit, name)


class RedisCircuit:
    """One breaker's circuit in Redis: the :class:`~fluxus._breaker.Storage` steps."""

    remote = True

    def __init__(
        self, storage: CircuitRedisStorage, circuit: Circuit, name: Callable[[], str]
    ) -> None:
        self.storage = storage
        self.settings = circuit
        self.name = name
        self.health = StorageHealth(
            fail_open=storage.fail_open,
            retry_interval=storage.retry_interval,
            on_down=self._went_down,
            on_up=self._came_back,
            secret=storage._secret,  # noqa: SLF001 - its own package
        )
        self._failures = itertools.count(1)  # next() is atomic: threads share it
        #: The number of the last failure this process recorded.
        self.last_failure = 0
        #: Seconds to use instead of the Redis server's clock (tests only).
        self.clock: Callable[[], float] | None = None
        self._scripts: dict[bool, dict[str, Any]] = {}

    def _keys(self) -> list[str]:
        base = f"{self.storage.prefix}:{self.name()}"
        return [f"{base}:state", f"{base}:trials"]

    def _scripts_for(self, client: Any, *, asynchronous: bool) -> dict[str, Any]:
        # A script object only remembers its SHA; each call names its client.
        scripts = self._scripts.get(asynchronous)
        if scripts is None:
            scripts = {
                name: client.register_script(lua) for name, lua in SCRIPTS.items()
            }
            self._scripts[asynchronous] = scripts
        return scripts

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
            reply = self._scripts_for(client, asynchronous=False)[script](
                keys=self._keys(), args=[*args, self._now()], client=client
            )
        return list(reply)

    async def _run_async(
        self, script: str, args: list[Any], function: str
    ) -> list[Any]:
        with self._reaching(function):
            client = await self.storage.async_client()
            async with asyncio.timeout(self.storage.timeout):
                reply = await self._scripts_for(client, asynchronous=True)[script](
                    keys=self._keys(), args=[*args, self._now()], client=client
                )
        return list(reply)

    # Requests and replies, shared by the sync and the async steps.

    def _admit_args(self) -> list[Any]:
        settings = self.settings
        return [
            settings.reset_timeout,
            settings.max_trials,
            self.storage.trial_timeout,
        ]

    def _admission(self, reply: list[Any]) -> Admission:
        code, epoch, trial, failures, wait, old, new = reply
        transition = None
        if _text(old):
            transition = Transition(
                CircuitState(_text(old)),
                CircuitState(_text(new)),
                "reset timeout elapsed",
            )
        if not code:
            return None, float(_text(wait)), transition
        token = (int(epoch), _text(trial), int(failures), self.last_failure)
        return token, 0.0, transition

    def _unreachable(self) -> Admission:
        if self.storage.fail_open:
            return _BYPASS, 0.0, None
        return None, self.storage.retry_interval, None

    def _record_args(self, outcome: str, token: Any) -> list[Any] | None:
        if token is _BYPASS:
            return None
        epoch, trial, failures, last_failure = token
        if outcome == "f":
            self.last_failure = next(self._failures)
        elif not (trial or failures) and last_failure == self.last_failure:
            # Nothing to forget: no failure counted when the call was
            # admitted, none recorded by this process since.
            return None
        settings = self.settings
        return [
            outcome,
            epoch,
            trial,
            settings.failure_threshold,
            settings.success_threshold,
        ]

    @staticmethod
    def _transition(reply: list[Any]) -> Transition | None:
        if not reply:
            return None
        old, new, reason = (_text(part) for part in reply)
        return Transition(CircuitState(old), CircuitState(new), reason)

    def _record(self, outcome: str, token: Any, function: str) -> Transition | None:
        args = self._record_args(outcome, token)
        if args is None:
            return None
        try:
            return self._transition(self._run("record", args, function))
        except _Down:
            return None

    async def _record_async(
        self, outcome: str, token: Any, function: str
    ) -> Transition | None:
        args = self._record_args(outcome, token)
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

    def succeed(self, token: Any, function: str) -> Transition | None:
        """Record a success."""
        return self._record("s", token, function)

    def fail(self, token: Any, function: str) -> Transition | None:
        """Record a failure."""
        return self._record("f", token, function)

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

    async def succeed_async(self, token: Any, function: str) -> Transition | None:
        """Record a success, without blocking the loop."""
        return await self._record_async("s", token, function)

    async def fail_async(self, token: Any, function: str) -> Transition | None:
        """Record a failure, without blocking the loop."""
        return await self._record_async("f", token, function)

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
