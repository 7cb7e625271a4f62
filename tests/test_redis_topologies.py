"""Shared state on a single Redis, on Redis Cluster and through Sentinel.

The cluster (three masters, three replicas) and the Sentinel setup (a
master, a replica, three sentinels) are real processes on loopback,
started once per session; the failover tests SIGKILL a master mid-run.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import fluxus
import pytest
import redis
from fluxus._redis import check_url, mask_password, sync_client, tagged_key

import _topologies
from _figures import record

pytestmark = pytest.mark.redis


def unique() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


# -- URIs and keys ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://127.0.0.1", "needs a host and a port"),
        ("redis+cluster://127.0.0.1:7000,:7001", "needs a host and a port"),
        ("redis+sentinel://127.0.0.1:26379", "service name"),
        ("redis+sentinel://127.0.0.1:26379/", "service name"),
        ("memcached://127.0.0.1:11211", "must be a Redis URL"),
    ],
)
def test_bad_topology_urls_are_refused_when_built(url, problem):
    with pytest.raises(ValueError, match=problem):
        fluxus.circuit_breaker(1, 1, name=unique(), storage=url)
    with pytest.raises(ValueError, match=problem):
        check_url(url, "url")


def test_topology_passwords_are_masked():
    url = "redis+sentinel://:s3cret@127.0.0.1:26379,127.0.0.1:26380/fluxus"
    storage = fluxus.CircuitRedisStorage(url)
    assert "s3cret" not in repr(storage)
    assert "s3cret" not in mask_password(url)
    with pytest.raises(ValueError, match="service name") as info:
        check_url("redis+sentinel://:s3cret@127.0.0.1:26379", "url")
    assert "s3cret" not in str(info.value)


def test_tagged_keys_keep_names_apart_and_share_a_slot(redis_cluster):
    client = redis.Redis(port=redis_cluster.nodes[0].port)
    names = ["a", "a:b", "{a}", "a}b", "%7Ba%7D", "a{b}c"]
    keys = {tagged_key("p", n, "state") for n in names}
    assert len(keys) == len(names)
    for name in names:
        state, trials = (tagged_key("p", name, part) for part in ("state", "trials"))
        assert client.cluster("keyslot", state) == client.cluster("keyslot", trials)
    assert "p:{%7Ba%7D}:state" == tagged_key("p", "{a}", "state")
    assert "p:{%257Ba%257D}:state" == tagged_key("p", "%7Ba%7D", "state")


# -- the same bodies on every topology ------------------------------------------


def test_breaker_opens_and_shares_its_circuit(any_redis_url, mode):
    name = unique()
    first = fluxus.circuit_breaker(2, 60, name=name, storage=any_redis_url)
    second = fluxus.circuit_breaker(2, 60, name=name, storage=any_redis_url)

    def fail():
        raise OSError("down")

    fn = first(mode.make(fail))
    for _ in range(2):
        with pytest.raises(OSError):
            mode.run(fn)
    with pytest.raises(fluxus.CircuitOpenError):
        mode.run(second(mode.make(lambda: "ok")))
    assert "open" == second.state.value
    second.reset()
    assert "ok" == mode.run(first(mode.make(lambda: "ok")))


def test_breaker_lets_one_trial_through(any_redis_url):
    name = unique()
    breaker = fluxus.circuit_breaker(1, 0.2, name=name, storage=any_redis_url)
    other = fluxus.circuit_breaker(1, 0.2, name=name, storage=any_redis_url)
    inside, leave = threading.Event(), threading.Event()

    def trial():
        inside.set()
        leave.wait(10)
        return "ok"

    with pytest.raises(OSError):
        breaker(lambda: (_ for _ in ()).throw(OSError("down")))()
    time.sleep(0.3)
    runner = threading.Thread(target=breaker(trial))
    runner.start()
    assert inside.wait(10)
    with pytest.raises(fluxus.CircuitOpenError):
        other(lambda: "ok")()
    leave.set()
    runner.join(10)
    assert "closed" == other.state.value


def test_limiter_shares_one_budget(any_redis_url, mode):
    name = unique()
    first = fluxus.rate_limit(0.05, burst=3, storage=any_redis_url, name=name)
    second = fluxus.rate_limit(0.05, burst=3, storage=any_redis_url, name=name)
    admitted = 0
    for limiter in (first, second, first, second):
        try:
            mode.run(limiter(mode.make(lambda: None)))
            admitted += 1
        except fluxus.RateLimitExceeded as exc:
            assert 10 < exc.retry_after <= 20  # noqa: PT017
    assert 3 == admitted


def test_window_limiter_works_through_limits(any_redis_url, mode):
    limiter = fluxus.rate_limit("2 per minute", storage=any_redis_url, name=unique())
    fn = limiter(mode.make(lambda: None))
    mode.run(fn)
    mode.run(fn)
    with pytest.raises(fluxus.RateLimitExceeded):
        mode.run(fn)


# -- many processes through the cluster ------------------------------------------

_LIMITED = textwrap.dedent(
    """
    import json, sys, threading, time
    import fluxus
    fluxus.instrumentation.set_hooks([])
    url, name, run = sys.argv[1], sys.argv[2], float(sys.argv[3])
    # Callers that wait for their slot: Redis schedules each one interval
    # after the last, whenever it asks, so the rate does not hang on how
    # promptly a loaded machine wakes a process (a caller polling after a
    # refusal loses every slot nobody asked for in time).
    limiter = fluxus.rate_limit(100, burst=1, storage=url, name=name, timeout=None)
    limiter.allow()  # imported and connected before the start
    print("ready", flush=True)
    start = float(sys.stdin.readline())
    admitted = []

    def caller():
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < start + run:
            limiter(lambda: None)()
            admitted.append(time.time())

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join()
    print(json.dumps(admitted), flush=True)
    """
)


def test_four_processes_share_a_limiter_through_the_cluster(redis_cluster):
    # Each process starts its clock only once all are ready: importing and
    # connecting takes seconds on a loaded machine, and a start fixed in
    # advance let the late ones miss most of the run.
    name = unique()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _LIMITED, redis_cluster.url, name, "3.0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        assert "ready" == worker.stdout.readline().strip()
    start = time.time() + 0.2
    for worker in workers:
        worker.stdin.write(f"{start!r}\n")
        worker.stdin.flush()
    results = [json.loads(w.communicate(timeout=60)[0]) for w in workers]
    assert all(results)
    admitted = sorted(t for result in results for t in result)
    # The rate is the slope of admission number against time: a late
    # wake-up shifts one admission, not the rate.
    slope = statistics.linear_regression(range(len(admitted)), admitted).slope
    record(
        cluster_limiter_admitted=len(admitted),
        cluster_limiter_rate=round(1 / slope, 1),
    )
    assert abs(1 / slope - 100) <= 2
    expected = 1 + 100 * (admitted[-1] - admitted[0])
    assert abs(len(admitted) - expected) <= 0.05 * expected


_TRIAL = textwrap.dedent(
    """
    import sys, time
    import fluxus
    fluxus.instrumentation.set_hooks([])
    url, name = sys.argv[1], sys.argv[2]
    breaker = fluxus.circuit_breaker(1, 0.1, name=name, storage=url)
    breaker.state  # connected before the start
    print("ready", flush=True)
    sys.stdin.readline()

    def trial():
        time.sleep(2)
        return "trial"

    try:
        print(breaker(trial)(), flush=True)
    except fluxus.CircuitOpenError:
        print("refused", flush=True)
    """
)


def test_four_processes_get_one_half_open_trial_through_the_cluster(redis_cluster):
    name = unique()
    breaker = fluxus.circuit_breaker(1, 0.1, name=name, storage=redis_cluster.url)
    breaker.open()
    breaker.reset()
    with pytest.raises(OSError):
        breaker(lambda: (_ for _ in ()).throw(OSError("down")))()
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _TRIAL, redis_cluster.url, name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        assert "ready" == worker.stdout.readline().strip()
    time.sleep(0.2)  # the reset timeout has passed
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    answers = sorted(w.communicate(timeout=60)[0].strip() for w in workers)
    assert ["refused", "refused", "refused", "trial"] == answers


# -- failover: a master SIGKILLed mid-run ----------------------------------------


class _Outage:
    """When one kind of call failed during a failover, and for how long."""

    def __init__(self) -> None:
        self.first_failure: float | None = None
        self.recovered: float | None = None

    def failed(self) -> None:
        if self.first_failure is None:
            self.first_failure = time.monotonic()

    def answered(self) -> None:
        if self.first_failure is not None and self.recovered is None:
            self.recovered = time.monotonic()

    @property
    def window(self) -> float:
        assert self.recovered is not None, "never came back"
        return self.recovered - (self.first_failure or self.recovered)


def _policies(url: str, name: str) -> tuple[object, object]:
    """A breaker and a limiter failing closed: a refusal is the outage."""
    storage = fluxus.CircuitRedisStorage(url, fail_open=False)
    breaker = fluxus.circuit_breaker(1, 3600, name=name, storage=storage)
    limiter = fluxus.rate_limit(1e6, storage=url, name=name, fail_open=False)
    return breaker(lambda: None), limiter(lambda: None)


def _hammer(url: str, name: str, kill: callable) -> dict[str, float]:
    """INCR a counter, call a breaker and a limiter; kill the master midway.

    Returns the outage window of each (first failed call to first answer
    after it), the increments acknowledged and those lost (acknowledged but
    missing from the value read after the failover).
    """
    client = sync_client(url, 0.5)
    key = tagged_key("fluxus:test", name, "counter")
    guarded, limited = _policies(url, name)
    outages = {"incr": _Outage(), "breaker": _Outage(), "limiter": _Outage()}
    acknowledged = 0
    killed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not killed and acknowledged == 200:
            kill()
            killed = True
        for what, call in (
            ("incr", lambda: client.incr(key)),
            ("breaker", guarded),
            ("limiter", limited),
        ):
            try:
                call()
            except (redis.RedisError, OSError, fluxus.FluxusError):
                outages[what].failed()
            else:
                outages[what].answered()
                acknowledged += what == "incr"
        if all(o.recovered for o in outages.values()) and acknowledged >= 400:
            break
        if any(o.first_failure and not o.recovered for o in outages.values()):
            time.sleep(0.01)
    value = int(client.get(key))
    client.close()
    figures = {
        f"{what}_window_ms": round(o.window * 1000) for what, o in outages.items()
    }
    return {**figures, "acknowledged": acknowledged, "lost": acknowledged - value}


def _on_one_master(cluster_client: redis.RedisCluster) -> tuple[str, int]:
    """Return a name whose keys share a master (and that master's port).

    The breaker and the limiter named *name*, and the breaker opened before
    the failover (``<name>-opened``).
    """
    while True:
        name = unique()
        state = tagged_key("fluxus:breaker", name, "state")
        port = cluster_client.get_node_from_key(state).port
        others = [
            f"fluxus:ratelimit:{name}:",
            tagged_key("fluxus:breaker", f"{name}-opened", "state"),
        ]
        if all(cluster_client.get_node_from_key(k).port == port for k in others):
            return name, int(port)


def _cluster_client(redis_cluster):
    """Return a cluster client starting from whichever node answers.

    A master an earlier test killed is started again, but may not be
    listening yet when the next test begins.
    """
    return redis.RedisCluster(
        startup_nodes=[
            redis.cluster.ClusterNode("127.0.0.1", node.port)
            for node in redis_cluster.nodes
        ]
    )


def test_a_cluster_master_killed_mid_run(redis_cluster):
    cluster_client = _cluster_client(redis_cluster)
    name, port = _on_one_master(cluster_client)
    opened = f"{name}-opened"
    cluster_client.close()
    fluxus.circuit_breaker(1, 3600, name=opened, storage=redis_cluster.url).open()
    node = redis_cluster.node(port)
    node.client().wait(1, 2000)  # the writes so far reached the replica
    try:
        figures = _hammer(redis_cluster.url, name, node.kill)
    finally:
        node.start()  # it rejoins as a replica
    record(**{f"cluster_failover_{k}": v for k, v in figures.items()})
    assert 0 < figures["incr_window_ms"] < 20_000
    assert 0 <= figures["lost"] <= 200
    fresh = fluxus.circuit_breaker(1, 3600, name=opened, storage=redis_cluster.url)
    assert "open" == fresh.state.value  # written before, honoured after


def test_a_sentinel_master_killed_mid_run(redis_sentinel):
    setup = redis_sentinel
    name = unique()
    opened = f"{name}-opened"
    fluxus.circuit_breaker(1, 3600, name=opened, storage=setup.url).open()
    port = setup.master_port()
    master = setup.master if setup.master.port == port else setup.replica
    master.client().wait(1, 2000)
    try:
        figures = _hammer(setup.url, name, master.kill)
    finally:
        master.start()  # Sentinel turns it into a replica of the new master
    record(**{f"sentinel_failover_{k}": v for k, v in figures.items()})
    assert 0 < figures["incr_window_ms"] < 30_000
    assert 0 <= figures["lost"] <= 200
    assert port != setup.master_port()
    fresh = fluxus.circuit_breaker(1, 3600, name=opened, storage=setup.url)
    assert "open" == fresh.state.value


def test_an_async_limiter_follows_a_sentinel_service(redis_sentinel):
    limiter = fluxus.rate_limit(1, burst=2, storage=redis_sentinel.url, name=unique())

    async def main():
        fn = limiter(asyncio.sleep)
        await fn(0)
        await fn(0)
        with pytest.raises(fluxus.RateLimitExceeded):
            await fn(0)

    asyncio.run(main())
    assert _topologies.SERVICE in redis_sentinel.url


# -- dead letters in a stream on every topology ----------------------------------


def test_a_dead_letter_stream_on_any_topology(any_redis_url):
    stream = f"dlq:{unique()}"

    @fluxus.dead_letter(fluxus.sinks.RedisStream(any_redis_url, stream=stream))
    def submit(order):
        raise OSError(f"down: {order}")

    for order in ("a", "b"):
        with pytest.raises(OSError):
            submit(order)
    replayed = []
    with fluxus.sinks.RedisStream(any_redis_url, stream=stream) as sink:
        assert 2 == sink.count()
        assert ["a", "b"] == [letter.args[0] for letter in sink.letters()]
        assert 2 == fluxus.replay(sink, replayed.append).replayed
        assert 0 == sink.count()
    assert ["a", "b"] == replayed


def test_the_dlq_command_reads_a_cluster_stream(redis_cluster, capsys):
    from fluxus.__main__ import main

    stream = f"dlq:{unique()}"
    with fluxus.sinks.RedisStream(redis_cluster.url, stream=stream) as sink:
        sink.put(
            fluxus.DeadLetter(
                id="0" * 32,
                function="shop.orders.submit",
                args=("a",),
                kwargs={},
                error=OSError("down"),
                error_type="builtins.OSError",
                error_message="down",
                traceback="",
                failed_at=dt.datetime.now(dt.UTC),
            )
        )
    argv = ["dlq", "list", redis_cluster.url, "--stream", stream, "--json"]
    assert 0 == main(argv)
    (line,) = capsys.readouterr().out.splitlines()
    assert "shop.orders.submit" == json.loads(line)["function"]


# -- the cluster shortcut: scripts straight to the slot's node ----------------------
#
# Each script goes straight to the node that owned its slot last time; a
# reply that the slot moved (ASK, MOVED) or a dead node sends the call
# through the cluster client. Budgets show what reached Redis: a step run
# twice would spend a token or count a failure twice, a lost one would not.


def _fail():
    raise OSError("down")


async def _afail():
    raise OSError("down")


async def _anoop():
    return None


def _migrations(cluster, name: str) -> list[_topologies.Migration]:
    """Moves of the slots of the limiter and the breaker named *name*."""
    client = cluster.nodes[0].client()
    keys = [f"fluxus:ratelimit:{name}:", tagged_key("fluxus:breaker", name, "state")]
    slots = dict.fromkeys(client.cluster("keyslot", key) for key in keys)
    return [_topologies.Migration(cluster, slot) for slot in slots]


def _shortcut_policies(url: str, name: str) -> tuple[object, object]:
    """A limiter of six tokens and a breaker of five failures, failing closed."""
    limiter = fluxus.rate_limit(1e-6, burst=6, storage=url, name=name, fail_open=False)
    storage = fluxus.CircuitRedisStorage(url, fail_open=False)
    return limiter, fluxus.circuit_breaker(5, 3600, name=name, storage=storage)


def test_a_moving_slot_is_followed_and_nothing_counts_twice(redis_cluster):
    name = unique()
    limiter, breaker = _shortcut_policies(redis_cluster.url, name)
    limited, failing = limiter(lambda: None), breaker(_fail)
    moves = _migrations(redis_cluster, name)
    for step in ("", "begin", "finish"):  # as it was, then ASK, then MOVED
        for move in moves if step else []:
            getattr(move, step)()
        for _ in range(2):
            limited()
        # A script on several keys of a migrating slot gets TRYAGAIN until
        # the move ends (Redis Cluster's rule): the breaker waits for MOVED.
        for _ in range(0 if step == "begin" else 2):
            with pytest.raises(OSError):
                failing()
    assert "closed" == breaker.state.value  # four failures counted, not five
    with pytest.raises(OSError):
        failing()
    assert "open" == breaker.state.value
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        limited()
    assert info.value.retry_after > 3600  # spent, not unreachable


def test_an_async_moving_slot_is_followed_and_nothing_counts_twice(redis_cluster):
    name = unique()
    limiter, breaker = _shortcut_policies(redis_cluster.url, name)
    limited, failing = limiter(_anoop), breaker(_afail)
    moves = _migrations(redis_cluster, name)

    async def main():
        for step in ("", "begin", "finish"):
            for move in moves if step else []:
                getattr(move, step)()
            for _ in range(2):
                await limited()
            for _ in range(0 if step == "begin" else 2):
                with pytest.raises(OSError):
                    await failing()
        assert "closed" == breaker.state.value
        with pytest.raises(OSError):
            await failing()
        with pytest.raises(fluxus.RateLimitExceeded) as info:
            await limited()
        return info.value.retry_after

    assert asyncio.run(main()) > 3600
    assert "open" == breaker.state.value


def test_a_killed_master_is_followed_and_nothing_counts_twice(redis_cluster):
    cluster_client = _cluster_client(redis_cluster)
    name, port = _on_one_master(cluster_client)
    cluster_client.close()
    limiter, breaker = _shortcut_policies(redis_cluster.url, name)
    limited, failing = limiter(lambda: None), breaker(_fail)
    for _ in range(3):
        limited()
    for _ in range(4):
        with pytest.raises(OSError):
            failing()
    node = redis_cluster.node(port)
    node.client().wait(1, 2000)  # what was counted reached the replica
    node.kill()
    refused = {"limiter": 0, "breaker": 0}
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                limited()
                break
            except fluxus.RateLimitExceeded as exc:
                assert exc.retry_after <= 1  # unreachable, not spent  # noqa: PT017
                refused["limiter"] += 1
                time.sleep(0.05)
        while time.monotonic() < deadline:
            try:
                failing()
            except fluxus.CircuitOpenError:
                refused["breaker"] += 1
                time.sleep(0.05)
            except OSError:
                break
    finally:
        node.start()  # it rejoins as a replica
    assert refused["limiter"] > 0
    assert refused["breaker"] > 0
    assert "open" == breaker.state.value  # the fifth failure, none lost or doubled
    limited()
    limited()
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        limited()
    assert info.value.retry_after > 3600


def test_an_async_killed_master_is_followed_and_nothing_counts_twice(redis_cluster):
    cluster_client = _cluster_client(redis_cluster)
    name, port = _on_one_master(cluster_client)
    cluster_client.close()
    limiter, breaker = _shortcut_policies(redis_cluster.url, name)
    limited, failing = limiter(_anoop), breaker(_afail)
    node = redis_cluster.node(port)

    async def main():
        for _ in range(3):
            await limited()
        for _ in range(4):
            with pytest.raises(OSError):
                await failing()
        node.client().wait(1, 2000)
        node.kill()
        refused = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                await limited()
                break
            except fluxus.RateLimitExceeded:
                refused += 1
                await asyncio.sleep(0.05)
        while time.monotonic() < deadline:
            try:
                await failing()
            except fluxus.CircuitOpenError:
                refused += 1
                await asyncio.sleep(0.05)
            except OSError:
                break
        await limited()
        await limited()
        with pytest.raises(fluxus.RateLimitExceeded) as info:
            await limited()
        return refused, info.value.retry_after

    try:
        refused, retry_after = asyncio.run(main())
    finally:
        node.start()
    assert refused > 0
    assert retry_after > 3600
    assert "open" == breaker.state.value


def test_the_shortcut_reloads_a_lost_script_and_follows_a_new_view(redis_cluster):
    from fluxus._redis_scripts import Scripts

    client = sync_client(redis_cluster.url, 2.0)
    scripts = Scripts({"incr": "return redis.call('INCR', KEYS[1])"})
    key = tagged_key("fluxus:test", unique(), "n")
    try:
        assert [1, 2] == [scripts.run(client, "incr", [key], []) for _ in "ab"]
        owner = client.get_node_from_key(key)
        # The node loses its scripts (a restart, SCRIPT FLUSH): NOSCRIPT
        # there sends the call through the cluster client, which loads it.
        redis_cluster.node(int(owner.port)).client().script_flush()
        assert 3 == scripts.run(client, "incr", [key], [])
        # The cluster client rebuilds its view of the nodes: the node
        # remembered is not used again until the cluster client names it.
        client.nodes_manager.initialize()
        assert client.get_node_from_key(key) is not owner
        assert [4, 5] == [scripts.run(client, "incr", [key], []) for _ in "ab"]
        assert 5 == int(client.get(key))
    finally:
        client.close()
