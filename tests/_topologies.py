"""Real Redis Cluster and Sentinel deployments on loopback, for the tests.

Each is started once per test session on free ports in a temporary
directory and torn down after: a cluster of three masters with one replica
each, and one master with one replica watched by three sentinels. Failover
is tuned to be quick (a node or master counts as down after one second).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

#: The Sentinel service name the tests use.
SERVICE = "fluxus"
#: Milliseconds without an answer before a node or master counts as down.
DOWN_AFTER_MS = 1000


def free_ports(n: int) -> list[int]:
    """Return *n* distinct free ports on loopback (and their +10000 buses)."""
    ports: list[int] = []
    sockets = []
    while len(ports) < n:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
        sockets.append(sock)
        if port + 10000 < 65536 and port not in ports:
            ports.append(port)
    for sock in sockets:
        sock.close()
    return ports


def binaries() -> tuple[str, str] | None:
    """Return the paths of redis-server and redis-cli, or ``None``."""
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        return None
    return server, cli


@dataclass
class Node:
    """One redis-server process, restartable with the same arguments."""

    args: list[str]
    port: int
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no last write to replicas."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


def _wait(check: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            msg = f"{what} did not happen within {timeout} s"
            raise RuntimeError(msg)
        time.sleep(0.05)


def _server_args(server: str, port: int, workdir: Path) -> list[str]:
    return [
        server,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]


@dataclass
class Cluster:
    """Three masters and three replicas: ``redis+cluster://`` on loopback."""

    nodes: list[Node] = field(default_factory=list)

    @property
    def url(self) -> str:
        first = self.nodes[:3]
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in first)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_cluster(server: str, cli: str, root: Path) -> Cluster:
    """Start six nodes, join them into a cluster, wait until it serves."""
    cluster = Cluster()
    for port in free_ports(6):
        workdir = root / f"node-{port}"
        workdir.mkdir()
        args = [
            *_server_args(server, port, workdir),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(DOWN_AFTER_MS),
        ]
        node = Node(args, port)
        node.start()
        cluster.nodes.append(node)
    try:
        for node in cluster.nodes:
            _wait(node.client().ping, f"node {node.port} answering")
        subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{n.port}" for n in cluster.nodes),
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )
        for node in cluster.nodes:
            _wait(
                lambda n=node: n.client().cluster("info")["cluster_state"] == "ok",
                f"node {node.port} seeing the cluster ok",
            )
        _wait(lambda: _replicas_synced(cluster), "the replicas syncing")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _replicas_synced(cluster: Cluster) -> bool:
    synced = 0
    for node in cluster.nodes:
        info = node.client().info("replication")
        if info["role"] == "slave" and info.get("master_link_status") == "up":
            synced += 1
    return synced == 3


@dataclass
class SentinelSetup:
    """One master, one replica, three sentinels: ``redis+sentinel://``."""

    master: Node
    replica: Node
    sentinels: list[Node]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}"

    def master_port(self) -> int:
        sentinel = redis.Redis(port=self.sentinels[0].port, socket_timeout=2)
        return int(sentinel.sentinel_get_master_addr_by_name(SERVICE)[1])

    def stop(self) -> None:
        for node in [*self.sentinels, self.replica, self.master]:
            node.stop()


def start_sentinel(server: str, root: Path) -> SentinelSetup:
    """Start a master, its replica and three sentinels; wait until all see all."""
    ports = free_ports(5)
    nodes = []
    for port in ports[:2]:
        workdir = root / f"server-{port}"
        workdir.mkdir()
        args = _server_args(server, port, workdir)
        if nodes:
            args += ["--replicaof", "127.0.0.1", str(ports[0])]
        nodes.append(Node(args, port))
    for port in ports[2:]:
        config = root / f"sentinel-{port}.conf"
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {root}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {ports[0]} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        nodes.append(Node([server, str(config), "--sentinel"], port))
    setup = SentinelSetup(nodes[0], nodes[1], nodes[2:])
    for node in nodes:
        node.start()
    try:
        _wait(
            lambda: (
                setup.replica.client().info("replication")["master_link_status"] == "up"
            ),
            "the replica syncing",
        )
        for sentinel in setup.sentinels:
            _wait(
                lambda s=sentinel: (
                    len(s.client().sentinel_sentinels(SERVICE)) == 2
                    and len(s.client().sentinel_slaves(SERVICE)) == 1
                ),
                f"sentinel {sentinel.port} seeing the others and the replica",
            )
    except BaseException:
        setup.stop()
        raise
    return setup


def required() -> bool:
    """Return whether missing binaries fail the run instead of skipping."""
    return os.environ.get("FLUXUS_REQUIRE_REDIS") == "1"


def masters(cluster: Cluster) -> list[Node]:
    """Return the nodes serving slots now (failovers move the role around)."""
    client = next(n for n in cluster.nodes if n.proc and n.proc.poll() is None).client()
    ports = {int(part[2][1]) for part in client.execute_command("CLUSTER", "SLOTS")}
    return [cluster.node(port) for port in sorted(ports)]


def node_id(node: Node) -> str:
    value = node.client().execute_command("CLUSTER", "MYID")
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Migration:
    """One hash slot moved from its master to another, in two steps.

    After :meth:`begin` the slot is migrating and its keys are on the new
    node (the old one answers ``ASK``); after :meth:`finish` the new node
    owns it (the old one answers ``MOVED``).
    """

    cluster: Cluster
    slot: int
    source: Node = field(init=False)
    target: Node = field(init=False)

    def __post_init__(self) -> None:
        client = self.cluster.nodes[0].client()
        for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= self.slot <= end:
                self.source = self.cluster.node(int(master[1]))
        self.target = next(n for n in masters(self.cluster) if n is not self.source)

    def begin(self) -> None:
        source, target = self.source.client(), self.target.client()
        slot = self.slot
        target.execute_command(
            "CLUSTER", "SETSLOT", slot, "IMPORTING", node_id(self.source)
        )
        source.execute_command(
            "CLUSTER", "SETSLOT", slot, "MIGRATING", node_id(self.target)
        )
        keys = source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
        if keys:
            source.execute_command(
                "MIGRATE", "127.0.0.1", self.target.port, "", 0, 5000, "KEYS", *keys
            )

    def finish(self) -> None:
        owner = node_id(self.target)
        for node in [self.target, self.source, *masters(self.cluster)]:
            node.client().execute_command(
                "CLUSTER", "SETSLOT", self.slot, "NODE", owner
            )
