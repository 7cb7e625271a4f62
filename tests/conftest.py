"""Shared fixtures: sync/async/trio modes, a real redis-server, captured events."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fluxus
import pytest
import trio
import trio.lowlevel
from fluxus.testing import capture_events

import _topologies


class Mode:
    """Run one test body as a plain function or as an ``async def``.

    ``make(body)`` turns a sync body into the function under test: the body
    itself, or an ``async def`` that yields to the loop and then runs it.
    ``run(fn, ...)`` calls it the way its mode needs: ``"async"`` under
    asyncio, ``"trio"`` under trio (the same async bodies).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name in {"async", "trio"}
        self.is_trio = name == "trio"

    def __repr__(self) -> str:
        return self.name

    def make(self, body: Callable[..., Any]) -> Callable[..., Any]:
        if not self.is_async:
            return body

        async def async_body(*args: Any, **kwargs: Any) -> Any:
            await self.checkpoint()
            return body(*args, **kwargs)

        name = getattr(body, "__name__", type(body).__name__)
        async_body.__name__ = async_body.__qualname__ = name
        if self.is_trio:
            # A name of its own: policies without name= share budgets by it.
            async_body.__qualname__ = f"trio_{name}"
        return async_body

    async def checkpoint(self) -> None:
        """Yield to the running library's scheduler once."""
        if self.is_trio:
            await trio.lowlevel.checkpoint()
        else:
            await asyncio.sleep(0)

    async def sleep(self, seconds: float) -> None:
        """Sleep with the running library."""
        if self.is_trio:
            await trio.sleep(seconds)
        else:
            await asyncio.sleep(seconds)

    @property
    def cancelled(self) -> type[BaseException]:
        """The running library's cancellation exception."""
        return trio.Cancelled if self.is_trio else asyncio.CancelledError

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.is_trio:
            return trio.run(functools.partial(fn, *args, **kwargs))
        if self.is_async:
            return asyncio.run(fn(*args, **kwargs))
        return fn(*args, **kwargs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give ``mode`` its values: a module's ``MODES``, else sync and async.

    A module opts in to running its async bodies under trio as well with
    ``MODES = ("sync", "async", "trio")``.
    """
    given = {
        name.strip()
        for marker in metafunc.definition.iter_markers("parametrize")
        for name in (
            marker.args[0].split(",")
            if isinstance(marker.args[0], str)
            else marker.args[0]
        )
    }
    if "mode" in metafunc.fixturenames and "mode" not in given:
        names = getattr(metafunc.module, "MODES", ("sync", "async"))
        metafunc.parametrize("mode", [Mode(name) for name in names], ids=list(names))


@pytest.fixture
def events() -> Iterator[list[fluxus.instrumentation.Event]]:
    with capture_events() as captured:
        yield captured


@pytest.fixture
def instant() -> Iterator[None]:
    with fluxus.testing.testing():
        yield


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Yield the URL of a real redis-server on loopback.

    ``FLUXUS_REDIS_URL`` names one; otherwise one is started on a free port
    when ``redis-server`` is installed. Without it the test is skipped, or
    fails when ``FLUXUS_REQUIRE_REDIS=1``.
    """
    if url := os.environ.get("FLUXUS_REDIS_URL"):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("FLUXUS_REQUIRE_REDIS") == "1":
            pytest.fail("FLUXUS_REQUIRE_REDIS=1 but redis-server is not installed")
        pytest.skip("redis-server is not installed")
    port = _free_port()
    workdir: Path = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [
            binary,
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _postgres_binaries() -> tuple[str, str] | None:
    """Return the paths of ``initdb`` and ``postgres``, or None if not installed."""
    initdb, server = shutil.which("initdb"), shutil.which("postgres")
    if initdb and server:
        return initdb, server
    # Debian keeps them out of PATH.
    for bindir in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return str(bindir / "initdb"), str(bindir / "postgres")
    return None


def _as_postgres_user() -> dict[str, Any]:
    """PostgreSQL refuses to run as root: as root, run it as ``postgres``."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


@pytest.fixture(scope="session")
def postgres() -> Iterator[dict[str, Any]]:
    """Yield the connection settings of a throwaway PostgreSQL on loopback.

    A cluster is made in a temporary directory and started on a free port
    (``fsync`` off: nothing in it needs to survive). Without the binaries
    the test is skipped, or fails when ``FLUXUS_REQUIRE_POSTGRES=1``.
    The settings are ``HOST``, ``PORT``, ``USER`` and ``NAME`` (database
    ``postgres``, user ``fluxus``, trusted on loopback).
    """
    binaries = _postgres_binaries()
    if binaries is None:
        if os.environ.get("FLUXUS_REQUIRE_POSTGRES") == "1":
            pytest.fail("FLUXUS_REQUIRE_POSTGRES=1 but PostgreSQL is not installed")
        pytest.skip("PostgreSQL (initdb, postgres) is not installed")
    initdb, server = binaries
    workdir = Path(tempfile.mkdtemp(prefix="fluxus-pg-"))
    data = workdir / "data"
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres")
    init = subprocess.run(
        [initdb, "-D", str(data), "-U", "fluxus", "--auth=trust", "-E", "UTF8"],
        capture_output=True,
        text=True,
        check=False,
        cwd=workdir,
        **_as_postgres_user(),
    )
    if init.returncode != 0:
        pytest.fail(f"initdb failed: {init.stderr[-2000:]}")
    port = _free_port()
    options = {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(workdir),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "max_connections": "60",
    }
    proc = subprocess.Popen(
        [server, "-D", str(data), "-p", str(port)]
        + [arg for name, value in options.items() for arg in ("-c", f"{name}={value}")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        **_as_postgres_user(),
    )
    ready = [
        str(Path(initdb).resolve().with_name("pg_isready")),
        "-q",
        "-h",
        "127.0.0.1",
    ]
    deadline = time.monotonic() + 30
    # Accepting connections, not merely listening ("the database system is
    # starting up" until then).
    while subprocess.run([*ready, "-p", str(port)], check=False).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail("PostgreSQL did not start")
        time.sleep(0.05)
    try:
        yield {"HOST": "127.0.0.1", "PORT": str(port), "USER": "fluxus"}
    finally:
        proc.send_signal(signal.SIGINT)  # a "fast" shutdown: clients cut off
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:  # pragma: no cover - a stuck server
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


def _topology_binaries() -> tuple[str, str]:
    found = _topologies.binaries()
    if found is None:
        if _topologies.required():
            pytest.fail("FLUXUS_REQUIRE_REDIS=1 but redis-server/redis-cli are missing")
        pytest.skip("redis-server and redis-cli are not installed")
    return found


@pytest.fixture(scope="session")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_topologies.Cluster]:
    """Yield a real 3-master/3-replica Redis Cluster on loopback."""
    server, cli = _topology_binaries()
    cluster = _topologies.start_cluster(server, cli, tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[_topologies.SentinelSetup]:
    """Yield a real master, replica and three sentinels on loopback."""
    server, _ = _topology_binaries()
    setup = _topologies.start_sentinel(server, tmp_path_factory.mktemp("sentinel"))
    try:
        yield setup
    finally:
        setup.stop()


@pytest.fixture(params=["single", "cluster", "sentinel"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """The URL of a single server, a cluster or a Sentinel service."""
    if request.param == "single":
        return str(request.getfixturevalue("redis_url"))
    fixture = "redis_cluster" if request.param == "cluster" else "redis_sentinel"
    return str(request.getfixturevalue(fixture).url)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the reliability figures the tests of this run collected."""
    from _figures import summary

    if lines := summary():
        terminalreporter.section("fluxus reliability figures")
        for line in lines:
            terminalreporter.write_line(line)
