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
import itertools
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ._breaker_core import CLOSED, OPEN, Circuit, CircuitState, Transition
from ._config import track
from ._core import in_background, mask_password, shielded, to_seconds, type_name
from .instrumentation._events import CircuitStorageRecovered, CircuitStorageUnavailable
from .instrumentation._hooks import emit

if TYPE_CHECKING:
    from ._breaker import Admission

_PRELUDE = """
-- The last argument is the time: empty for the server's clock, which every
-- process shares; the tests pass a fake one.
local clock = ARGV[#ARGV]
local function now()
  if clock ~= '' then return tonumber(clock) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function move(epoch, state)
  redis.call('HSET', KEYS[1], 'state', state, 'epoch', epoch + 1,
             'failures', 0, 'successes', 0)
  redis.call('DEL', KEYS[2])
end
local function open(epoch)
  move(epoch, 'open')
  redis.call('HSET', KEYS[1], 'opened_at', string.format('%.6f', now()))
end
local function plural(n, one, many)
  if n == 1 then return n .. ' ' .. one end
  return n .. ' ' .. many
end
"""

# ARGV: reset_timeout, max_trials, trial_timeout.
# Returns {code (0 refused, 1 closed, 2 trial), epoch, trial id, failures,
# retry_after ('inf' when opened by hand), old state, new state}.
_ADMIT = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch', 'failures',
                     'opened_at', 'forced')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
if state == 'closed' then
  return {1, epoch, '', tonumber(h[3] or '0'), '0', '', ''}
end
local old = ''
local t = now()
if state == 'open' then
  if h[5] == '1' then return {0, epoch, '', 0, 'inf', '', ''} end
  local wait = tonumber(h[4] or '0') + tonumber(ARGV[1]) - t
  if wait > 0 then
    return {0, epoch, '', 0, string.format('%.6f', wait), '', ''}
  end
  move(epoch, 'half-open')
  epoch = epoch + 1
  old = 'open'
end
local new = old == '' and '' or 'half-open'
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', t)
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[2]) then
  return {0, epoch, '', 0, '0', old, new}
end
local id = epoch .. ':' .. redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('ZADD', KEYS[2], t + tonumber(ARGV[3]), id)
return {2, epoch, id, 0, '0', old, new}
"""
)

# ARGV: outcome ('s', 'f' or 'n'), epoch, trial id ('' for a closed call),
# failure_threshold, success_threshold. Returns {} or {old, new, reason}.
_RECORD = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
local trial = ARGV[3] ~= ''
if trial then redis.call('ZREM', KEYS[2], ARGV[3]) end
if tonumber(ARGV[2]) ~= epoch or ARGV[1] == 'n' then return {} end
if trial then
  if state ~= 'half-open' then return {} end
  if ARGV[1] == 'f' then
    open(epoch)
    return {state, 'open', 'a trial call failed'}
  end
  local n = redis.call('HINCRBY', KEYS[1], 'successes', 1)
  if n >= tonumber(ARGV[5]) then
    move(epoch, 'closed')
    return {state, 'closed', plural(n, 'trial success', 'trial successes')}
  end
  return {}
end
if state ~= 'closed' then return {} end
if ARGV[1] == 's' then
  redis.call('HSET', KEYS[1], 'failures', 0)
  return {}
end
local n = redis.call('HINCRBY', KEYS[1], 'failures', 1)
if n >= tonumber(ARGV[4]) then
  open(epoch)
  return {state, 'open',
          plural(n, 'consecutive failure', 'consecutive failures')}
end
return {}
"""
)

# ARGV: 'reset' or 'open'. Returns {} or {old, new, reason}.
_CONTROL = (
    _PRELUDE
    + """
local h = redis.call('HMGET', KEYS[1], 'state', 'epoch')
local state = h[1] or 'closed'
local epoch = tonumber(h[2] or '0')
if ARGV[1] == 'reset' then
  redis.call('HSET', KEYS[1], 'forced', 0, 'failures', 0)
  if state == 'closed' then return {} end
  move(epoch, 'closed')
  return {state, 'closed', 'reset by hand'}
end
redis.call('HSET', KEYS[1], 'forced', 1)
if state == 'open' then return {} end
open(epoch)
return {state, 'open', 'opened by hand'}
"""
)

_SCHEMES = ("redis", "rediss", "unix")


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


async def _close_with_loop(client: Any) -> AsyncIterator[None]:
    """Close *client* when its event loop shuts down.

    A started async generator is closed by the loop's ``shutdown_asyncgens()``
    (``asyncio.run`` and test runners call it), inside that loop: the one
    place where a client bound to the loop can still close its connections.
    """
    try:
        yield
    finally:
        await client.aclose()


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
        timeout: float | Any = 0.5,
        retry_interval: float | Any = 1.0,
        trial_timeout: float | Any = 60.0,
        param: str = "target",
    ) -> None:
        try:
            import redis  # noqa: PLC0415
            import redis.asyncio  # noqa: PLC0415
            import redis.connection  # noqa: PLC0415
        except ImportError as exc:  # pragma: no cover - redis is a test dependency
            msg = "a Redis circuit storage needs the redis package: fluxus[redis]"
            raise ImportError(msg) from exc
        if not isinstance(prefix, str) or not prefix:
            msg = f"prefix must be a non-empty string, got {prefix!r}"
            raise TypeError(msg)
        self.prefix = prefix
        self.fail_open = bool(fail_open)
        self.timeout = to_seconds(timeout, "timeout")
        self.retry_interval = to_seconds(retry_interval, "retry_interval")
        self.trial_timeout = to_seconds(trial_timeout, "trial_timeout")
        if self.timeout <= 0 or self.trial_timeout <= 0:
            msg = "timeout and trial_timeout must be > 0 seconds"
            raise ValueError(msg)
        self._url: str | None = None
        self._sync: Any = None
        self._async: Any = None
        self._per_loop: weakref.WeakKeyDictionary[Any, Any] = (
            weakref.WeakKeyDictionary()
        )
        if isinstance(target, str):
            scheme = target.partition("://")[0].lower()
            if "://" not in target or scheme not in _SCHEMES:
                msg = (
                    f"{param} must be a redis://, rediss:// or unix:// URL or a "
                    f"Redis client, got {mask_password(target)!r}"
                )
                raise ValueError(msg)
            try:
                parsed = redis.connection.parse_url(target)  # type: ignore[no-untyped-call] # redis-py leaves it unannotated
                password = parsed.get("password")
            except ValueError:
                msg = f"{param} is not a usable Redis URL: {mask_password(target)!r}"
                raise ValueError(msg) from None
            # The clients are built on first use, and again in a forked
            # child: a connection is never shared by two processes.
            self._url = target
            self.description = mask_password(target)
            self._secret = str(password) if password else None
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
            self._per_loop = weakref.WeakKeyDictionary()

    def _timeouts(self) -> dict[str, Any]:
        return {"socket_timeout": self.timeout, "socket_connect_timeout": self.timeout}

    def _pooled(self) -> dict[str, Any]:
        # A pool that waits for a free connection: redis-py's default one
        # raises at once when all are busy, and a burst of concurrent calls
        # would then be taken for an outage of Redis.
        return {"timeout": self.timeout, **self._timeouts()}

    def _password(self) -> str | None:
        client = self._sync if self._sync is not None else self._async
        password = client.connection_pool.connection_kwargs.get("password")
        return str(password) if password else None

    def _masked(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return text

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
            import redis  # noqa: PLC0415

            if self._url is not None:
                self._sync = redis.Redis.from_pool(
                    redis.BlockingConnectionPool.from_url(self._url, **self._pooled())
                )
            else:
                self._sync = redis.Redis(**self._settings(self._async))
        return self._sync

    async def async_client(self) -> Any:
        """Return an asyncio client bound to the running event loop."""
        if self._async is not None:
            return self._async
        import redis.asyncio  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        entry = self._per_loop.get(loop)
        if entry is None:
            if self._url is not None:
                client = redis.asyncio.Redis.from_pool(
                    redis.asyncio.BlockingConnectionPool.from_url(
                        self._url, **self._pooled()
                    )
                )
            else:
                client = redis.asyncio.Redis(**self._settings(self._sync))
            closer = _close_with_loop(client)
            await anext(closer)
            entry = self._per_loop[loop] = (client, closer)
        return entry[0]

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
        self.down_until: float | None = None
        self._failures = itertools.count(1)  # next() is atomic: threads share it
        #: The number of the last failure this process recorded.
        self.last_failure = 0
        #: Seconds to use instead of the Redis server's clock (tests only).
        self.clock: Callable[[], float] | None = None
        self._scripts: dict[bool, tuple[Any, Any, Any]] = {}

    def _keys(self) -> list[str]:
        base = f"{self.storage.prefix}:{self.name()}"
        return [f"{base}:state", f"{base}:trials"]

    def _scripts_for(self, client: Any, *, asynchronous: bool) -> tuple[Any, Any, Any]:
        # A script object only remembers its SHA; each call names its client.
        scripts = self._scripts.get(asynchronous)
        if scripts is None:
            scripts = (
                client.register_script(_ADMIT),
                client.register_script(_RECORD),
                client.register_script(_CONTROL),
            )
            self._scripts[asynchronous] = scripts
        return scripts

    # Reaching Redis, and what to do when it cannot be reached.

    def _skip(self) -> bool:
        return self.down_until is not None and time.monotonic() < self.down_until

    def _went_down(self, exc: BaseException, function: str) -> None:
        first = self.down_until is None
        self.down_until = time.monotonic() + self.storage.retry_interval
        if first:
            emit(
                CircuitStorageUnavailable(
                    policy=self.name(),
                    function=function,
                    storage=self.storage.description,
                    fail_open=self.storage.fail_open,
                    error_type=type_name(type(exc)),
                    error_message=self.storage._masked(str(exc)),  # noqa: SLF001
                )
            )

    def _came_back(self, function: str) -> None:
        if self.down_until is not None:
            self.down_until = None
            emit(
                CircuitStorageRecovered(
                    policy=self.name(),
                    function=function,
                    storage=self.storage.description,
                )
            )

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def _run(self, which: int, args: list[Any], function: str) -> list[Any]:
        if self._skip():
            raise _Down
        client = self.storage.sync_client()
        try:
            reply = self._scripts_for(client, asynchronous=False)[which](
                keys=self._keys(), args=[*args, self._now()], client=client
            )
        except Exception as exc:
            self._went_down(exc, function)
            raise _Down from exc
        self._came_back(function)
        return list(reply)

    async def _run_async(self, which: int, args: list[Any], function: str) -> list[Any]:
        if self._skip():
            raise _Down
        client = await self.storage.async_client()
        try:
            async with asyncio.timeout(self.storage.timeout):
                reply = await self._scripts_for(client, asynchronous=True)[which](
                    keys=self._keys(), args=[*args, self._now()], client=client
                )
        except Exception as exc:
            self._went_down(exc, function)
            raise _Down from exc
        self._came_back(function)
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
            return self._transition(self._run(1, args, function))
        except _Down:
            return None

    async def _record_async(
        self, outcome: str, token: Any, function: str
    ) -> Transition | None:
        args = self._record_args(outcome, token)
        if args is None:
            return None
        try:
            reply = await shielded(self._run_async(1, args, function))
        except _Down:
            return None
        return self._transition(reply)

    # The steps.

    def admit(self, function: str) -> Admission:
        """Admit a call or refuse it, in one script."""
        try:
            return self._admission(self._run(0, self._admit_args(), function))
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
            reply = await self._run_async(0, self._admit_args(), function)
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
            if self._skip():
                raise _Down  # noqa: TRY301 - same answer as a failed read
            client = self.storage.sync_client()
            value = client.hget(self._keys()[0], "state")
        except Exception:  # noqa: BLE001 - any failure means "unreachable"
            return CLOSED if self.storage.fail_open else OPEN
        return CLOSED if value is None else CircuitState(_text(value))

    def _control(self, action: str) -> Transition | None:
        try:
            return self._transition(self._run(2, [action], ""))
        except _Down as exc:
            msg = f"cannot {action} circuit {self.name()!r}: Redis is unreachable"
            raise ConnectionError(msg) from exc.__cause__

    def reset(self) -> Transition | None:
        """Close the shared circuit by hand."""
        return self._control("reset")

    def force_open(self) -> Transition | None:
        """Open the shared circuit by hand, until :meth:`reset`."""
        return self._control("open")
