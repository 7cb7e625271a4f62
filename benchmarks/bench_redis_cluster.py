"""The breaker, the limiter and the bulkhead through Redis Cluster against one server.

Run with ``python benchmarks/bench_redis_cluster.py``. It starts, on free
loopback ports, one redis-server and a cluster of three masters and three
replicas (as the tests do), then times, in this one process with
interleaved rounds, the happy path of a breaker, a limiter and a bulkhead
whose state is on the single server and on the cluster. Each step is one
script on one node in both cases (the keys of one policy share a hash
slot, and fluxus sends the script straight to the node that owns it, see
``fluxus/_redis_scripts.py``), so the cluster should cost about what one
server costs: the goal is at most 1.3x. A bare call is the baseline of the
overhead column.

Events go to no hook during the measurements: what is measured is the
policies and their round trips, not the logging.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))

import fluxus

import _topologies
from _harness import compare, report, time_sync


def work() -> int:
    return 1


async def awork() -> int:
    return 1


async def atime(fn: Callable[[], Awaitable[object]], calls: int) -> float:
    """Return the seconds per awaited call of *fn*, on the running loop."""
    start = time.perf_counter()
    for _ in range(calls):
        await fn()
    return (time.perf_counter() - start) / calls


def contenders(
    urls: dict[str, str], calls: int, runner: asyncio.Runner
) -> dict[str, dict[str, object]]:
    """Return the timed callables of the breaker's, limiter's, bulkhead's tables.

    The async ones all run on *runner*'s one loop, so each storage keeps
    its client (and what it learnt of the cluster) from round to round.
    """
    tables: dict[str, dict[str, object]] = {
        f"{what}{mode}": {}
        for mode in ("", " (async)")
        for what in ("breaker", "limiter", "bulkhead")
    }
    for where, url in urls.items():
        name = f"bench-{uuid.uuid4().hex[:8]}"
        breaker = fluxus.circuit_breaker(5, 30, name=name, storage=url)(work)
        limiter = fluxus.rate_limit(1e9, storage=url, name=name)(work)
        bulkhead = fluxus.bulkhead(1000, name=name, storage=url)(work)
        breaker()  # connected (and the slots learnt) before the timing
        limiter()
        bulkhead()
        tables["breaker"][where] = lambda f=breaker: time_sync(f, calls)
        tables["limiter"][where] = lambda f=limiter: time_sync(f, calls)
        tables["bulkhead"][where] = lambda f=bulkhead: time_sync(f, calls)
        name = f"bench-{uuid.uuid4().hex[:8]}"
        for what, policy in (
            ("breaker", fluxus.circuit_breaker(5, 30, name=name, storage=url)),
            ("limiter", fluxus.rate_limit(1e9, storage=url, name=name)),
            ("bulkhead", fluxus.bulkhead(1000, name=name, storage=url)),
        ):
            afn = policy(awork)
            runner.run(afn())
            tables[f"{what} (async)"][where] = lambda f=afn: runner.run(atime(f, calls))
    for what, table in tables.items():
        if what.endswith("(async)"):
            table["bare call"] = lambda: runner.run(atime(awork, calls))
        else:
            table["bare call"] = lambda: time_sync(work, calls)
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    found = _topologies.binaries()
    if found is None:
        sys.exit("needs redis-server and redis-cli on PATH")
    server, cli = found
    fluxus.instrumentation.set_hooks([])
    with tempfile.TemporaryDirectory() as root:
        port = _topologies.free_ports(1)[0]
        command = _topologies._server_args(server, port, Path(root))  # noqa: SLF001
        single = _topologies.Node(command, port)
        single.start()
        (Path(root) / "cluster").mkdir()
        cluster = _topologies.start_cluster(server, cli, Path(root) / "cluster")
        try:
            _topologies._wait(single.client().ping, "the single server")  # noqa: SLF001
            urls = {
                "one server": f"redis://127.0.0.1:{single.port}/0",
                "cluster": cluster.url,
            }
            runner = asyncio.Runner()
            tables = contenders(urls, args.calls, runner)
            for what, table in tables.items():
                medians = compare(table, args.rounds)  # type: ignore[arg-type]
                ordered = {
                    k: medians[k] for k in ("bare call", "one server", "cluster")
                }
                for line in report(
                    f"{what}: per call, {args.rounds} rounds of {args.calls} calls",
                    ordered,
                    baseline="bare call",
                    reference="one server",
                ):
                    print(line)
                ratio = medians["cluster"] / medians["one server"]
                print(f"  cluster / one server: {ratio:.2f}x (goal <= 1.3x)")
            runner.close()
        finally:
            cluster.stop()
            single.stop()


if __name__ == "__main__":
    main()
