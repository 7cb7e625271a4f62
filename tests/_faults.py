"""A seeded fault injector for the reliability tests.

``flaky`` has the signature of ``fluxus.testing.flaky`` (failure rate, slow
rate, delay, seed, error) so the load tests can switch to it once it ships;
it also counts what it injected, which the tests compare with what the
policies report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import random
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from fluxus.instrumentation import Event, get_hooks, set_hooks


class InjectedError(Exception):
    """The failure ``flaky`` raises by default."""


class Flaky:
    """Fail or slow down calls at random, reproducibly, and count them."""

    def __init__(
        self,
        failure_rate: float,
        slow_rate: float,
        delay: float,
        seed: int | None,
        error: type[Exception] | Callable[[], Exception],
    ) -> None:
        self.failure_rate = failure_rate
        self.slow_rate = slow_rate
        self.delay = delay
        self.error = error
        self._random = random.Random(seed)  # noqa: S311 - faults, not secrets
        self._lock = threading.Lock()
        self.calls = 0
        self.failures = 0
        self.slow = 0

    def _draw(self) -> tuple[bool, bool]:
        with self._lock:
            self.calls += 1
            slow = self._random.random() < self.slow_rate
            fail = self._random.random() < self.failure_rate
            self.slow += slow
            self.failures += fail
        return slow, fail

    def __call__(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_flaky(*args: Any, **kwargs: Any) -> Any:
                slow, fail = self._draw()
                await asyncio.sleep(self.delay if slow else 0)
                if fail:
                    raise self.error()
                return await func(*args, **kwargs)

            return async_flaky

        @functools.wraps(func)
        def sync_flaky(*args: Any, **kwargs: Any) -> Any:
            slow, fail = self._draw()
            if slow:
                time.sleep(self.delay)
            if fail:
                raise self.error()
            return func(*args, **kwargs)

        return sync_flaky


def flaky(
    failure_rate: float = 0.3,
    slow_rate: float = 0.2,
    delay: float = 2.0,
    seed: int | None = None,
    error: type[Exception] | Callable[[], Exception] = InjectedError,
) -> Flaky:
    """Return a decorator failing *failure_rate* and delaying *slow_rate* of calls."""
    return Flaky(failure_rate, slow_rate, delay, seed, error)


@contextlib.contextmanager
def only_captured_events() -> Iterator[list[Event]]:
    """Collect the events emitted inside, instead of logging them.

    Under load the default structlog hook would print thousands of lines.
    """
    captured: list[Event] = []
    previous = get_hooks()
    set_hooks([captured.append])
    try:
        yield captured
    finally:
        set_hooks(previous)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A redis-server of the test's own, which the test may kill and restart."""

    def __init__(self, workdir: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("FLUXUS_REQUIRE_REDIS") == "1":
                pytest.fail("FLUXUS_REQUIRE_REDIS=1 but redis-server is not installed")
            pytest.skip("redis-server is not installed")
        self.binary = binary
        self.workdir = workdir
        self.password = password
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.kill()
                    pytest.fail("redis-server did not start")
                time.sleep(0.02)
            else:
                return

    def kill(self) -> None:
        """SIGKILL the server: connections drop, nothing is saved."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
