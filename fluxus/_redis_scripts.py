"""Lua scripts by SHA; on Redis Cluster, straight to the node owning the keys.

Every step of a fluxus storage is one script on one policy's keys, and those
keys share a hash slot (:func:`fluxus._redis.tagged_key`). redis-py's
cluster client works out the slot, the node and the command's routing
policies on every command, which adds a third or more to a call
(``benchmarks/bench_redis_cluster.py``: a limiter call cost 1.36x its cost
on one server through it; the lookup here costs about 5 µs). :class:`Scripts`
remembers, per cluster client, which node owns each slot it has used, and
sends EVALSHA to that node's own client: one round trip, as on one server.

The memory is a shortcut, never a second truth about the cluster:

- an entry is made only after the cluster client itself ran a script for
  that slot, from its slot map as it stands then, and used only while that
  node is still the one the cluster client knows by that name;
- a reply saying the script did not run there (MOVED, ASK, TRYAGAIN,
  CLUSTERDOWN: the slot moved, is moving, or the cluster is failing over;
  NOSCRIPT: the node lacks the script) drops the entry and the same call
  goes through the cluster client, which follows the redirection, refreshes
  its slot map and loads the script exactly as it always does;
- any other failure (a connection refused or cut, a timeout) drops the
  entry and is raised, as the cluster client raises it: the script may have
  run, so it is never sent twice. The next call goes through the cluster
  client, which learns the new master as before.

So a failover or a resharding behaves as without the shortcut: the same
errors reach the storage's fail mode, and no step is counted twice.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

#: How a storage names its scripts.
K = TypeVar("K", bound=Hashable)


def _kind(client: Any) -> bool | None:
    """Return ``False``/``True`` for a sync/asyncio cluster client, else ``None``."""
    import redis.asyncio.cluster  # noqa: PLC0415 - an optional dependency
    import redis.cluster  # noqa: PLC0415

    if isinstance(client, redis.cluster.RedisCluster):
        return False
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return True
    return None


def _not_run() -> tuple[type[BaseException], ...]:
    """Replies meaning the script did not run on the node asked."""
    from redis.exceptions import (  # noqa: PLC0415 - an optional dependency
        AskError,  # MovedError is one
        ClusterDownError,
        NoScriptError,
        TryAgainError,
    )

    return (AskError, ClusterDownError, NoScriptError, TryAgainError)


class Scripts(Generic[K]):
    """A storage's Lua scripts, run by SHA on any client :mod:`fluxus._redis` builds.

    Args:
        sources: Each script's Lua source, by the name callers run it by.
    """

    def __init__(self, sources: Mapping[K, str]) -> None:
        self._sources = dict(sources)
        self._shas = {
            name: hashlib.sha1(lua.encode(), usedforsecurity=False).hexdigest()
            for name, lua in sources.items()
        }
        #: Per cluster client (``None`` for any other client): slot -> node.
        self._routes: weakref.WeakKeyDictionary[Any, dict[int, Any] | None] = (
            weakref.WeakKeyDictionary()
        )

    def _routes_of(self, client: Any) -> dict[int, Any] | None:
        try:
            return self._routes[client]
        except KeyError:
            routes: dict[int, Any] | None = {} if _kind(client) is not None else None
            self._routes[client] = routes
            return routes

    def _owner(self, client: Any, routes: dict[int, Any], slot: int) -> Any:
        """Return the node remembered for *slot* if the client still knows it."""
        node = routes.get(slot)
        if node is not None and client.get_node(node_name=node.name) is not node:
            # The cluster client has rebuilt its view of the nodes since.
            routes.pop(slot, None)
            return None
        return node

    @staticmethod
    def _remember(client: Any, routes: dict[int, Any], slot: int, key: str) -> None:
        from redis.exceptions import RedisClusterException  # noqa: PLC0415

        try:
            routes[slot] = client.get_node_from_key(key)
        except RedisClusterException:  # pragma: no cover - the slot just answered
            routes.pop(slot, None)

    def run(
        self, client: Any, name: K, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run script *name* on *keys* with *args* through the sync *client*."""
        routes = self._routes_of(client)
        if routes is None:
            return self._evalsha(client, name, keys, args)
        slot = client.keyslot(keys[0])
        node = self._owner(client, routes, slot)
        if node is not None:
            try:
                return self._direct(client.get_redis_connection(node), name, keys, args)
            except _not_run():
                routes.pop(slot, None)
            except BaseException:
                routes.pop(slot, None)
                raise
        reply = self._evalsha(client, name, keys, args)
        self._remember(client, routes, slot, keys[0])
        return reply

    async def run_async(
        self, client: Any, name: K, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """Run script *name* on *keys* with *args* through the asyncio *client*."""
        routes = self._routes_of(client)
        if routes is None:
            return await self._evalsha_async(client, name, keys, args)
        slot = client.keyslot(keys[0])
        node = self._owner(client, routes, slot)
        if node is not None:
            try:
                # An asyncio cluster node runs commands itself.
                return await node.execute_command(
                    "EVALSHA", self._shas[name], len(keys), *keys, *args
                )
            except _not_run():
                routes.pop(slot, None)
            except BaseException:
                routes.pop(slot, None)
                raise
        reply = await self._evalsha_async(client, name, keys, args)
        self._remember(client, routes, slot, keys[0])
        return reply

    def _direct(
        self, node_client: Any, name: K, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA on one node's own client; NOSCRIPT is the caller's to handle."""
        return node_client.evalsha(self._shas[name], len(keys), *keys, *args)

    def _evalsha(
        self, client: Any, name: K, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """EVALSHA, loading the script first where the server lacks it."""
        from redis.exceptions import NoScriptError  # noqa: PLC0415

        try:
            return client.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:
            # A cluster client loads it on every master.
            client.script_load(self._sources[name])
            return client.evalsha(self._shas[name], len(keys), *keys, *args)

    async def _evalsha_async(
        self, client: Any, name: K, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        from redis.exceptions import NoScriptError  # noqa: PLC0415

        try:
            return await client.evalsha(self._shas[name], len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self._sources[name])
            return await client.evalsha(self._shas[name], len(keys), *keys, *args)
