"""A compartment shared among processes and machines through Redis.

The slots are leases: entries of a sorted set scored by the instant they
expire (the Redis server's clock, which every process shares). A holder
renews its lease while its call runs (one thread per process renews every
lease it holds, ``lease / 3`` apart), so only the slot of a holder that
died (``kill -9``, a lost machine) expires, ``lease`` seconds after its last
renewal. Waiters queue in a second sorted set, scored by arrival; a waiter
polls, which renews its place, and takes a slot when one is free within the
first places of the queue, so waiters are served in order across processes
and nobody barges past them. A waiter that stopped polling loses its place.

Every step is one Lua script, so it is atomic; the name is the keys' hash
tag, so on Redis Cluster they share a slot and the scripts may touch them
all (see :func:`fluxus._redis.tagged_key`)::

    <prefix>:{<name>}:leases   sorted set: lease id -> expiry
    <prefix>:{<name>}:queue    sorted set: waiter id -> arrival number
    <prefix>:{<name>}:waits    sorted set: waiter id -> expiry of its place
    <prefix>:{<name>}:seq      the arrival counter

While Redis cannot be reached, calls run without a slot (``fail_open``) or
are refused with :class:`~fluxus.BulkheadFull` naming the storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from fluxus._aio import asyncio_only, in_background, shielded
from fluxus._config import track
from fluxus._extras import require
from fluxus._redis import (
    SCHEMES,
    PerLoop,
    StorageHealth,
    async_client,
    mask_password,
    scheme_of,
    sync_client,
    tagged_key,
    url_password,
)
from fluxus._redis_scripts import Scripts
from fluxus.instrumentation._events import (
    BulkheadStorageRecovered,
    BulkheadStorageUnavailable,
)
from fluxus.instrumentation._hooks import emit

from ._leases import RENEWER
from ._lua import _COUNT, _GIVE_BACK, _PARTS, _RENEW, _TAKE
from ._store import Unreachable

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._policy import Bulkhead

#: A waiter asks again this often at first, then less often, up to the cap.
FIRST_POLL, MAX_POLL = 0.002, 0.05
#: How long a waiter that stopped asking keeps its place, at most.
PLACE_TTL = 5.0
#: Socket timeout of the clients. (How long Redis is left alone after it
#: failed is :data:`fluxus._redis.RETRY_INTERVAL`.)
TIMEOUT = 0.5

_STORAGE = "the Redis storage of fluxus.bulkhead"


class _Bypass:
    """The token of a call run without a slot while Redis was unreachable."""

    def __repr__(self) -> str:
        return "<no slot: Redis unreachable>"


BYPASS = _Bypass()


class _Down(Exception):
    """Redis could not be reached; the fail mode applies."""


class RedisCompartment:
    """One bulkhead's slots in Redis."""

    remote = True

    def __init__(
        self, policy: Bulkhead, url: str, *, prefix: str = "fluxus:bulkhead"
    ) -> None:
        self._policy = policy
        self.url = url
        self.description = mask_password(url)
        self.prefix = prefix
        self.lease = policy.lease
        self.place_ttl = min(policy.lease, PLACE_TTL)
        self._own_name = f"unnamed:{uuid.uuid4().hex}"
        self._waiting = 0
        self._lock = threading.Lock()
        #: Wakes this process's sync waiters when one of its slots is freed.
        self._freed = threading.Condition(self._lock)
        self._scripts = Scripts(dict(enumerate((_TAKE, _GIVE_BACK, _RENEW, _COUNT))))
        self._sync: Any = None
        self._per_loop = PerLoop(lambda: async_client(url, TIMEOUT))
        self.health = StorageHealth(
            fail_open=policy.fail_open,
            on_down=self._went_down,
            on_up=self._came_back,
            secret=url_password(url),
        )
        #: Seconds to use instead of the Redis server's clock (tests only).
        self.clock: Callable[[], float] | None = None
        track(self)

    def _forget_storage(self, *, forked: bool) -> None:
        """Drop the clients in a forked child: they belong to the parent."""
        if forked:  # pragma: no cover - forked children only
            self._sync = None
            self._per_loop.forget()
            self.health.forget()

    # -- keys, scripts, reaching Redis -------------------------------------

    def _keys(self) -> list[str]:
        name = self._policy._name or self._own_name  # noqa: SLF001 - its own policy
        return [tagged_key(self.prefix, name, p) for p in _PARTS]

    def _now(self) -> str:
        return "" if self.clock is None else repr(self.clock())

    def _went_down(self, function: str, error_type: str, error_message: str) -> None:
        emit(
            BulkheadStorageUnavailable(
                policy=self._policy.name,
                function=function,
                storage=self.description,
                fail_open=self.health.fail_open,
                error_type=error_type,
                error_message=error_message,
            )
        )

    def _came_back(self, function: str) -> None:
        emit(
            BulkheadStorageRecovered(
                policy=self._policy.name, function=function, storage=self.description
            )
        )

    def _run(self, which: int, args: list[Any]) -> Any:
        if self.health.resting():
            raise _Down
        if self._sync is None:
            self._sync = sync_client(self.url, TIMEOUT)
        client = self._sync
        try:
            reply = self._scripts.run(client, which, self._keys(), [*args, self._now()])
        except Exception as exc:
            self.health.failed(exc, "")
            raise _Down from exc
        self.health.answered("")
        return reply

    async def _run_async(self, which: int, args: list[Any]) -> Any:
        if self.health.resting():
            raise _Down
        try:
            client = await self._per_loop.get()
            async with asyncio.timeout(TIMEOUT):
                reply = await self._scripts.run_async(
                    client, which, self._keys(), [*args, self._now()]
                )
        except Exception as exc:
            self.health.failed(exc, "")
            raise _Down from exc
        self.health.answered("")
        return reply

    def _unreachable(self) -> object:
        if self.health.fail_open:
            return BYPASS
        raise Unreachable(self.description)

    def _take_args(self, lease_id: str, *, may_wait: bool) -> list[Any]:
        policy = self._policy
        return [
            lease_id,
            policy.max_concurrent,
            policy.max_waiting,
            self.lease,
            self.place_ttl,
            "1" if may_wait else "0",
        ]

    # -- counts ------------------------------------------------------------

    @property
    def in_use(self) -> int:
        """Live leases, held by every process sharing the compartment."""
        try:
            return int(self._run(3, []))
        except _Down:
            return 0

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""
        return self._waiting

    def _count_waiter(self, step: int) -> None:
        with self._lock:
            self._waiting += step

    def renew(self, ids: list[str]) -> None:
        """Push back the expiry of the leases *ids* (the renewing thread)."""
        self._run(2, [self.lease, *ids])

    # -- the sync steps -----------------------------------------------------

    def take(self, budget: float) -> object | None:
        """Take a lease, waiting up to *budget* seconds; ``None`` if none came."""
        lease_id = uuid.uuid4().hex
        until = time.monotonic() + budget
        try:
            code, _ = self._run(0, self._take_args(lease_id, may_wait=budget > 0))
            if code == 2:  # noqa: PLR2004 - waiting
                code = self._wait(lease_id, until)
        except _Down:
            return self._unreachable()
        if code != 1:
            return None
        RENEWER.add(self, lease_id)
        return lease_id

    def _wait(self, lease_id: str, until: float) -> int:
        self._count_waiter(1)
        pause = FIRST_POLL
        code = 0
        try:
            while (left := until - time.monotonic()) > 0:
                with self._freed:  # a slot freed here ends the pause early
                    self._freed.wait(min(pause, left))
                pause = min(pause * 2, MAX_POLL)
                code, _ = self._run(0, self._take_args(lease_id, may_wait=True))
                if code != 2:  # noqa: PLR2004 - still waiting
                    return int(code)
            code, _ = self._run(0, self._take_args(lease_id, may_wait=False))
            return int(code)
        finally:
            self._count_waiter(-1)
            if code != 1:
                self._give_up(lease_id)

    def _give_up(self, lease_id: str) -> None:
        with contextlib.suppress(_Down):  # its place expires on its own
            self._run(1, [lease_id])

    def give_back(self, token: object) -> None:
        """Give the lease *token* back."""
        if token is BYPASS:
            return
        assert isinstance(token, str)  # noqa: S101 - the tokens take() returns
        RENEWER.discard(self, token)
        self._give_up(token)
        with self._freed:
            self._freed.notify()

    # -- the async steps ----------------------------------------------------

    async def take_async(self, budget: float) -> object | None:
        """Take a lease without blocking the loop; see :meth:`take`."""
        asyncio_only(_STORAGE)
        lease_id = uuid.uuid4().hex
        until = time.monotonic() + budget
        step = asyncio.ensure_future(
            self._run_async(0, self._take_args(lease_id, may_wait=budget > 0))
        )
        try:
            code, _ = await shielded(step)
            if code == 2:  # noqa: PLR2004 - waiting
                code = await self._wait_async(lease_id, until)
        except _Down:
            return self._unreachable()
        except BaseException:
            # Cancelled: the script may have leased a slot or a place.
            in_background(self._give_up_async(lease_id, after=step))
            raise
        if code != 1:
            return None
        RENEWER.add(self, lease_id)
        return lease_id

    async def _wait_async(self, lease_id: str, until: float) -> int:
        self._count_waiter(1)
        pause = FIRST_POLL
        try:
            while (left := until - time.monotonic()) > 0:
                await asyncio.sleep(min(pause, left))
                pause = min(pause * 2, MAX_POLL)
                code, _ = await shielded(
                    self._run_async(0, self._take_args(lease_id, may_wait=True))
                )
                if code != 2:  # noqa: PLR2004 - still waiting
                    return int(code)
            code, _ = await shielded(
                self._run_async(0, self._take_args(lease_id, may_wait=False))
            )
            if code != 1:
                await shielded(self._give_up_async(lease_id))
            return int(code)
        finally:
            self._count_waiter(-1)

    async def _give_up_async(
        self, lease_id: str, after: asyncio.Future[Any] | None = None
    ) -> None:
        if after is not None:
            with contextlib.suppress(BaseException):
                await after
        with contextlib.suppress(_Down):
            await self._run_async(1, [lease_id])

    async def give_back_async(self, token: object) -> None:
        """Give the lease *token* back without blocking the loop."""
        if token is BYPASS:
            return
        assert isinstance(token, str)  # noqa: S101 - the tokens take() returns
        RENEWER.discard(self, token)
        await shielded(self._give_up_async(token))


def redis_compartment(policy: Bulkhead, storage: object) -> RedisCompartment:
    """Return the Redis compartment of *policy* for *storage*, a Redis URL.

    Raises:
        TypeError: If *storage* is not a string.
        ValueError: If it is not a Redis URL.
        ImportError: If the ``redis`` package is not installed.
    """
    if not isinstance(storage, str):
        msg = (
            "storage must be None, 'memory://' or a redis://, rediss:// or "
            f"unix:// URL, got {storage!r}"
        )
        raise TypeError(msg)
    if scheme_of(storage) not in SCHEMES:
        msg = (
            "storage must be None, 'memory://' or a redis://, rediss:// or "
            f"unix:// URL, got {mask_password(storage)!r}"
        )
        raise ValueError(msg)
    require("redis", "redis", "a bulkhead with Redis storage")
    return RedisCompartment(policy, storage)
