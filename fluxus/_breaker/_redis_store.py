"""A circuit shared among processes through Redis.

pybreaker's ``CircuitRedisStorage`` keeps the state in Redis but makes two or
three separate round trips per call, lets a trial call through in every
process and reads each machine's wall clock. Here every step of the state
machine in :mod:`fluxus._breaker_core` is one Lua script, so it is atomic;
the timer reads the Redis server's clock (``TIME``), the one clock every
process shares; the half-open trials are entries of a sorted set scored by
their expiry, so the trial limit holds across processes and a process that
dies mid-trial frees its slot after ``trial_timeout``.

Keys (``prefix`` defaults to ``fluxus:breaker``; the braces are a hash tag,
so on Redis Cluster both keys of one breaker share a slot)::

    <prefix>:{<name>}:state    hash: state, epoch, failures, successes,
                               opened_at, forced, seq
    <prefix>:{<name>}:trials   sorted set: running trials, scored by expiry

A happy call costs one round trip: a success is written back only when there
may be failures to forget (the admission saw some, or this process recorded
one since), so a success that overlaps a failure in ANOTHER process may
leave that failure counted.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fluxus._config import track
from fluxus._extras import require
from fluxus._redis import (
    PerLoop,
    async_client,
    check_url,
    mask_password,
    sync_client,
    url_password,
)
from fluxus._validate import (
    Duration,
    check_fail_open,
    non_empty_str,
    positive_seconds,
    to_seconds,
)

from ._circuit import Circuit
from ._redis_circuit import RedisCircuit


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
        target: A ``redis://``, ``rediss://``, ``unix://`` (or
            ``redis+unix://``), ``redis+cluster://host:port[,host:port...]``
            or ``redis+sentinel://host:port[,host:port...]/service`` URL, a
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
            redis-py's own retries are off, so one reply later than this
            counts as an outage and applies the fail mode for
            *retry_interval*: the default leaves room for a busy server or
            host, and an outage costs it once per *retry_interval*.
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
        timeout: Duration = 2.0,
        retry_interval: Duration = 1.0,
        trial_timeout: Duration = 60.0,
        param: str = "target",
    ) -> None:
        sync = require("redis", "redis", "a Redis circuit storage")
        asyncio = require("redis.asyncio", "redis", "a Redis circuit storage")
        self.prefix: str = non_empty_str(prefix, "prefix")
        self.fail_open: bool = check_fail_open(fail_open)
        self.timeout: float = positive_seconds(timeout, "timeout")
        self.retry_interval: float = to_seconds(retry_interval, "retry_interval")
        self.trial_timeout: float = positive_seconds(trial_timeout, "trial_timeout")
        self._url: str | None = None
        self._sync: Any = None
        self._async: Any = None
        self._per_loop = PerLoop(self._make_async)
        if isinstance(target, str):
            check_url(target, param)
            # The clients are built on first use, and again in a forked
            # child: a connection is never shared by two processes.
            self._url = target
            self.description: str = mask_password(target)
            self._secret = url_password(target)
            track(self)
            return
        if isinstance(target, sync.Redis):
            self._sync = target
        elif isinstance(target, asyncio.Redis):
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
