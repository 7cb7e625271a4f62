"""Helpers shared by the fluxus.contrib tests: a client, a flaky callee."""

from __future__ import annotations

import itertools
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.lowlevel
import fluxus
import pytest
from fluxus._config import set_default_storage

_addresses = itertools.count(1)


@pytest.fixture(autouse=True)
def default_storage_restored() -> Iterator[None]:
    """Give the process its default storage back after a test set another.

    Import it into a test module (autouse then applies there): apps under
    test set ``FLUXUS_STORAGE_URI``, which is process-wide.
    """
    yield
    set_default_storage(None)


@pytest.fixture(name="release")
def release_fixture() -> Iterator[threading.Event]:
    """An event set at the end of the test: abandoned calls then return."""
    event = threading.Event()
    yield event
    event.set()


def add_guarded_views(
    app: Any, now: list[float], release: threading.Event
) -> fluxus.CircuitBreaker:
    """Add views guarded by a real breaker and real timeouts to *app*.

    *app* is a Flask or a FastAPI app (both route with ``app.get``):

    - ``/upstream``: a breaker (2 failures, 30 s on the clock *now*) over an
      upstream that fails twice, then answers ``"down"``;
    - ``/slow``: a sync view waiting for *release*, abandoned after 50 ms;
    - ``/aslow``: an async view cancelled after 50 ms.

    Returns:
        The breaker.
    """
    breaker = fluxus.circuit_breaker(2, 30.0, clock=lambda: now[0])
    upstream = Flaky(down=2)

    @app.get("/upstream")
    @breaker
    async def call_upstream() -> str:
        await anyio.lowlevel.checkpoint()  # anyio: the app may run under trio
        return upstream("down")

    @app.get("/slow")
    @fluxus.timeout(0.05)
    def slow() -> str:
        release.wait(5)
        return "late"

    @app.get("/aslow")
    @fluxus.timeout(0.05)
    async def aslow() -> str:
        await anyio.sleep(5)
        return "late"

    return breaker


#: What the views of :func:`add_guarded_views` answer to :func:`walk_guarded_views`.
GUARDED_ANSWERS = [
    *[(500, None), (500, None), (503, "30")],  # the upstream fails twice: open
    *[(503, "18"), (200, None)],  # 12.4 s later; 30 s later, a trial succeeds
    *[(504, None), (504, None)],  # /slow and /aslow
]


def walk_guarded_views(
    answer: Callable[[str], tuple[int, str | None]], now: list[float]
) -> list[tuple[int, str | None]]:
    """Request the views of :func:`add_guarded_views`, moving the clock *now*.

    Args:
        answer: GETs a path; returns the status and the Retry-After header.
        now: The breaker's clock.

    Returns:
        The answers, in order; :data:`GUARDED_ANSWERS` when all is well.
    """
    answers = [answer("/upstream") for _ in range(3)]
    now[0] += 12.4
    answers.append(answer("/upstream"))
    now[0] += 17.6
    answers.append(answer("/upstream"))
    return [*answers, answer("/slow"), answer("/aslow")]


def new_address() -> str:
    """Return a client address no other test of this session used."""
    n = next(_addresses)
    return f"198.18.{n // 250}.{n % 250 + 1}"


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """GET *url*; return the status, the Retry-After header ('' if none), the body."""
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - loopback
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return (
                response.status,
                response.headers.get("Retry-After", ""),
                response.read(),
            )
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Retry-After", ""), error.read()


def hammer(
    url: str, requests: int, headers: list[dict[str, str]] | None = None
) -> list[tuple[int, str, bytes]]:
    """Send *requests* GETs to *url* at once, one thread each.

    Request ``i`` carries ``headers[i % len(headers)]`` when given.
    """
    go = threading.Event()

    def one(i: int) -> tuple[int, str, bytes]:
        go.wait(timeout=5)
        return fetch(url, headers[i % len(headers)] if headers else None)

    with ThreadPoolExecutor(requests) as pool:
        results = pool.map(one, range(requests))
        go.set()
        return list(results)


class Flaky(dict[str, int]):
    """Failures left per kind: ``flaky(kind)`` raises while some are left.

    Each call of a kind with failures left uses one up and raises
    ``ConnectionError``; otherwise it returns the kind.
    """

    def __call__(self, kind: str) -> str:
        if self.get(kind, 0):
            self[kind] -= 1
            raise ConnectionError(kind)
        return kind
