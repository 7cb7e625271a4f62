"""Shared fixtures: sync/async modes, a real redis-server, captured events."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fluxus
import pytest
from fluxus.testing import capture_events

import _topologies


class Mode:
    """Run one test body as a plain function or as an ``async def``.

    ``make(body)`` turns a sync body into the function under test: the body
    itself, or an ``async def`` that yields to the loop and then runs it.
    ``run(fn, ...)`` calls it the way its mode needs.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_async = name == "async"

    def __repr__(self) -> str:
        return self.name

    def make(self, body: Callable[..., Any]) -> Callable[..., Any]:
        if not self.is_async:
            return body

        async def async_body(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(0)
            return body(*args, **kwargs)

        name = getattr(body, "__name__", type(body).__name__)
        async_body.__name__ = async_body.__qualname__ = name
        return async_body

    def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.is_async:
            return asyncio.run(fn(*args, **kwargs))
        return fn(*args, **kwargs)


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> Mode:
    return Mode(request.param)


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
