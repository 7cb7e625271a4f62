"""Redis plumbing shared by every fluxus storage: URLs, clients, outages.

- :data:`SCHEMES` and :func:`normalize_url`: the URL schemes accepted, limits'
  ``redis+unix://``, ``redis+cluster://`` and ``redis+sentinel://`` spellings
  included; :func:`check_url` validates one;
- :func:`tagged_key`: keys with a hash tag, so one script's keys share a
  Redis Cluster slot;
- :func:`mask_password` and :func:`mask_secret`: passwords never shown, in
  URLs (user info or ``?password=``) and inside driver error messages;
- :func:`sync_client` and :func:`async_client`: one way to build a client
  (:func:`close_sync` closes a sync one),
  with a blocking connection pool, socket timeouts and redis-py's own retries
  off (an outage costs a caller one timeout, not several);
- :class:`PerLoop`: one asyncio client per event loop, closed with its loop;
- :class:`StorageHealth`: what a storage does while Redis is unreachable
  (fail open or closed, leave it alone for a retry interval, report the
  outage and the recovery once).
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ._core import type_name

#: Redis Cluster, in limits' notation: ``redis+cluster://host:port[,host:port]``.
CLUSTER = "redis+cluster"
#: Sentinel, in limits' notation: ``redis+sentinel://host:port[,...]/service``.
SENTINEL = "redis+sentinel"
#: Redis URL schemes; ``redis+unix`` is limits' spelling of ``unix``.
SCHEMES = frozenset({"redis", "rediss", "unix", "redis+unix", CLUSTER, SENTINEL})

_LIMITS_UNIX = "redis+unix://"


def scheme_of(url: str) -> str:
    """Return the lower-case scheme of *url* (``""`` without one)."""
    return urllib.parse.urlsplit(url).scheme.lower()


def normalize_url(url: str) -> str:
    """Return *url* in redis-py's spelling (``redis+unix://`` -> ``unix://``)."""
    if url.startswith(_LIMITS_UNIX):
        return "unix://" + url.removeprefix(_LIMITS_UNIX)
    return url


def _locations(url: str) -> list[tuple[str, int]]:
    """Return the ``host:port`` pairs of a cluster or Sentinel URL.

    Raises:
        ValueError: If a location lacks its host or port.
    """
    netloc = urllib.parse.urlsplit(url).netloc.rpartition("@")[2]
    locations = []
    for location in netloc.split(","):
        parts = urllib.parse.urlsplit(f"//{location.strip()}")
        if not parts.hostname or parts.port is None:
            msg = f"location {location!r} needs a host and a port"
            raise ValueError(msg)
        locations.append((parts.hostname, parts.port))
    return locations


def _service(url: str) -> str:
    service = urllib.parse.urlsplit(url).path.strip("/")
    if not service:
        msg = "a redis+sentinel:// URL ends with the service name: /mymaster"
        raise ValueError(msg)
    return service


def check_url(url: str, param: str) -> str:
    """Return *url* if it is a Redis URL fluxus can connect with.

    Raises:
        ValueError: If its scheme is not one of :data:`SCHEMES`, or it cannot
            be parsed (a cluster or Sentinel location without a port, a
            Sentinel URL without its service name).
    """
    if "://" not in url or scheme_of(url) not in SCHEMES:
        msg = (
            f"{param} must be a Redis URL ({', '.join(sorted(SCHEMES))}) or a "
            f"Redis client, got {mask_password(url)!r}"
        )
        raise ValueError(msg)
    try:
        scheme = scheme_of(url)
        if scheme in {CLUSTER, SENTINEL}:
            _locations(url)
            if scheme == SENTINEL:
                _service(url)
        else:
            import redis.connection  # noqa: PLC0415 - an optional dependency

            redis.connection.parse_url(normalize_url(url))  # type: ignore[no-untyped-call] # redis-py leaves it unannotated
    except ValueError as exc:
        msg = f"{param} is not a usable Redis URL: {mask_password(url)!r} ({exc})"
        raise ValueError(msg) from None
    return url


def tagged_key(prefix: str, name: str, part: str) -> str:
    """Return the key ``<prefix>:{<name>}:<part>``, *name* escaped.

    Redis Cluster hashes only the text between the first ``{`` and the next
    ``}``, so every part of one *name* lands in one slot and one Lua script
    may touch them all. ``%``, ``{`` and ``}`` in *name* are percent-escaped:
    the tag is exactly the name, and two names never share a key.
    """
    escaped = name.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")
    return f"{prefix}:{{{escaped}}}:{part}"


def url_password(url: str) -> str | None:
    """Return the password *url* carries, in its user info or its query."""
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.unquote(parts.password)
    for name, value in urllib.parse.parse_qsl(parts.query):
        if name == "password" and value:
            return value
    return None


def mask_password(url: str) -> str:
    """Return *url* with its password, if any, replaced by ``***``.

    Storage URLs reach reprs, errors, events and the command line; their
    passwords must not, whether in the user info or a ``?password=`` query.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and "password=" not in parts.query:
        return url
    if parts.password is not None:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password=" in parts.query:
        query = "&".join(
            "password=***" if pair.startswith("password=") else pair
            for pair in parts.query.split("&")
        )
        parts = parts._replace(query=query)
    return urllib.parse.urlunsplit(parts)


def mask_secret(text: str, secret: str | None) -> str:
    """Return *text* with every occurrence of *secret* replaced by ``***``."""
    if secret:
        text = text.replace(secret, "***")
    return text


#: Seconds a caller waits for a free pooled connection. A full pool means
#: callers are queueing (each connection is back within a socket timeout),
#: not that Redis is down, so this wait is bounded apart from, and well
#: beyond, the socket timeout: a burst of tasks is never taken for an outage.
POOL_WAIT = 10.0

#: Seconds a new connection may take at least. An asyncio connect is timed
#: on the loop, so a burst of tasks opening a pool's connections at once
#: lags it past a short socket timeout on a busy machine; a Redis that is
#: down refuses at once and is still seen at once.
CONNECT_TIMEOUT = 2.0


def client_options(url: str, timeout: float) -> dict[str, Any]:
    """Return the pool options every fluxus client uses.

    The pool blocks (up to :data:`POOL_WAIT`, at least *timeout*) when every
    connection is busy: redis-py's default pool raises at once, which would
    make a burst of concurrent callers look like an outage. Socket timeouts
    (*timeout*) bound every I/O unless the URL's query sets them; redis-py's
    retries are off.
    """
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    options: dict[str, Any] = {"timeout": max(timeout, POOL_WAIT)}
    if "socket_timeout" not in query:
        options["socket_timeout"] = timeout
    if "socket_connect_timeout" not in query:
        options["socket_connect_timeout"] = max(timeout, CONNECT_TIMEOUT)
    return options


def _topology_options(url: str, timeout: float) -> dict[str, Any]:
    """Return the node options of a cluster or Sentinel URL's clients."""
    parts = urllib.parse.urlsplit(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    for name, value in urllib.parse.parse_qsl(parts.query):
        if name in options:
            options[name] = float(value)
    if parts.username:
        options["username"] = urllib.parse.unquote(parts.username)
    if password := url_password(url):
        options["password"] = password
    return options


def sync_client(url: str, timeout: float) -> Any:
    """Return a sync client for *url*, built the fluxus way.

    A ``redis.Redis`` for one server, a ``redis.cluster.RedisCluster`` for
    ``redis+cluster://`` and the master of a ``redis+sentinel://`` service.
    """
    import redis  # noqa: PLC0415 - an optional dependency
    import redis.backoff  # noqa: PLC0415
    import redis.retry  # noqa: PLC0415

    scheme = scheme_of(url)
    if scheme == CLUSTER:
        import redis.cluster  # noqa: PLC0415

        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(*n) for n in _locations(url)],  # type: ignore[no-untyped-call]
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            **_topology_options(url, timeout),
        )
    if scheme == SENTINEL:
        import redis.sentinel  # noqa: PLC0415

        # As limits does, the sentinels get the master's credentials too.
        options = _topology_options(url, timeout)
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            _locations(url), sentinel_kwargs=dict(options), **options
        )
        return sentinel.master_for(  # type: ignore[no-untyped-call]
            _service(url), retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0)
        )
    return redis.Redis.from_pool(
        redis.BlockingConnectionPool.from_url(
            normalize_url(url),
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0),
            **client_options(url, timeout),
        )
    )


def close_sync(client: Any) -> None:
    """Close a client :func:`sync_client` built, with every socket it opened.

    A Sentinel-managed client also closes its clients of the sentinels.
    """
    client.close()
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        sentinel.close()


def async_client(url: str, timeout: float) -> Any:
    """Return an asyncio client for *url*, built as :func:`sync_client` does."""
    import redis.asyncio  # noqa: PLC0415 - an optional dependency
    import redis.asyncio.retry  # noqa: PLC0415
    import redis.backoff  # noqa: PLC0415

    scheme = scheme_of(url)
    if scheme == CLUSTER:
        import redis.asyncio.cluster  # noqa: PLC0415

        return redis.asyncio.cluster.RedisCluster(
            startup_nodes=[
                redis.asyncio.cluster.ClusterNode(*n) for n in _locations(url)
            ],
            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
            **_topology_options(url, timeout),
        )
    if scheme == SENTINEL:
        import redis.asyncio.sentinel  # noqa: PLC0415

        options = _topology_options(url, timeout)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            _locations(url), sentinel_kwargs=dict(options), **options
        )
        return sentinel.master_for(
            _service(url),
            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
        )
    return redis.asyncio.Redis.from_pool(
        redis.asyncio.BlockingConnectionPool.from_url(
            normalize_url(url),
            retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
            **client_options(url, timeout),
        )
    )


class PerLoop:
    """One asyncio client per event loop, closed when that loop shuts down.

    An asyncio connection belongs to the loop that opened it, and programs
    (tests above all) run several loops one after the other. Each client is
    tied to an async generator started in its loop: ``asyncio.run`` closes
    such generators before it closes the loop, and closing this one closes
    the client, so no connection outlives its loop.
    """

    def __init__(
        self,
        make: Callable[[], Any],
        close: Callable[[Any], Awaitable[None]] | None = None,
    ) -> None:
        self._make = make
        self._close = close or _aclose
        self._clients: weakref.WeakKeyDictionary[Any, tuple[Any, Any]] = (
            weakref.WeakKeyDictionary()
        )

    async def get(self) -> Any:
        """Return the client of the running loop, building it on first use."""
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client = self._make()
            await _discover(client)
            closer = _close_at_shutdown(client, self._close)
            await anext(closer)
            entry = self._clients[loop] = (client, closer)
        return entry[0]

    def forget(self) -> None:
        """Drop every client (in a forked child: they belong to the parent)."""
        self._clients = weakref.WeakKeyDictionary()


async def _discover(client: Any) -> None:
    """Learn a cluster client's slots now, not in a caller's first command.

    Discovery (``CLUSTER SLOTS`` and ``COMMAND``, whose reply is large) takes
    longer than one command, and a first command runs under the caller's
    per-step timeout: cut short there, every call in a new event loop would
    count as an outage. Each I/O is still bounded by the socket timeouts. A
    failed discovery closes what it opened (redis-py does so) and raises.
    """
    import redis.asyncio.cluster  # noqa: PLC0415 - present: the client is built

    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        await client.initialize()


async def _aclose(client: Any) -> None:
    await client.aclose()
    # A Sentinel-managed client asks the sentinels through clients of their
    # own, which its aclose() leaves open.
    pool = getattr(client, "connection_pool", None)
    manager = getattr(pool, "sentinel_manager", None)
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()
    # A cluster client whose first topology discovery was cut short (by a
    # caller's deadline) thinks it holds nothing: disconnect its nodes anyway.
    nodes = getattr(client, "nodes_manager", None)
    if nodes is not None:
        await nodes.aclose("nodes_cache")
        await nodes.aclose("startup_nodes")


async def _close_at_shutdown(
    client: Any, close: Callable[[Any], Awaitable[None]]
) -> AsyncIterator[None]:
    """Close *client* when its event loop shuts down.

    A started async generator is closed by the loop's ``shutdown_asyncgens()``
    (``asyncio.run`` and test runners call it), inside that loop: the one
    place where a client bound to the loop can still close its connections.
    """
    try:
        yield
    finally:
        await close(client)


#: Seconds a storage that failed is left alone, unless its options say.
RETRY_INTERVAL = 1.0


class StorageHealth:
    """Whether a shared storage answers, and what to do while it does not.

    One rule for every policy's storage. A step that fails starts an
    outage: for *retry_interval* seconds (from the latest failure) the
    storage is not asked at all and callers get the fail mode at once,
    instead of each paying a connection timeout. The first step after that
    asks again: if it answers, the outage is over; if it fails, the
    storage rests another *retry_interval*. An outage is reported once,
    through *on_down* (an event) when it starts, and its end once, through
    *on_up*; the failed retries in between report nothing.

    Attributes:
        fail_open: Whether calls pass (``True``) or are refused while down.
        retry_interval: Seconds the storage is left alone after a failure.
        down_until: ``None`` while healthy, else when to try it again.
    """

    __slots__ = (
        "_on_down",
        "_on_up",
        "_secret",
        "down_until",
        "fail_open",
        "retry_interval",
    )

    def __init__(
        self,
        *,
        fail_open: bool,
        retry_interval: float = RETRY_INTERVAL,
        on_down: Callable[[str, str, str], None],
        on_up: Callable[[str], None],
        secret: str | None = None,
    ) -> None:
        self.fail_open: bool = fail_open
        self.retry_interval: float = retry_interval
        self.down_until: float | None = None
        self._on_down = on_down
        self._on_up = on_up
        self._secret = secret

    def resting(self) -> bool:
        """Return whether the storage is down and not to be asked yet."""
        until = self.down_until
        return until is not None and time.monotonic() < until

    def refusing(self) -> bool:
        """Return whether calls are refused because the storage is down.

        True during an outage of a storage that fails closed
        (``fail_open=False``): the refusal then names the storage.
        """
        return not self.fail_open and self.down_until is not None

    def failed(self, exc: BaseException, function: str) -> None:
        """Note that the storage failed *function*'s step with *exc*."""
        first = self.down_until is None
        self.down_until = time.monotonic() + self.retry_interval
        if first:
            self._on_down(
                function, type_name(type(exc)), mask_secret(str(exc), self._secret)
            )

    def answered(self, function: str) -> None:
        """Note that the storage answered; report the recovery after an outage."""
        if self.down_until is not None:
            self.down_until = None
            self._on_up(function)

    def forget(self) -> None:
        """Start healthy again (a new storage, a forked child)."""
        self.down_until = None
