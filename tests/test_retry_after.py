"""``fluxus.backoff.retry_after``: waits that listen to the failure.

Real HTTP over 127.0.0.1: a small server answers 429/503 with a
``Retry-After`` header, and httpx (sync and async) and requests raise their
own errors carrying the response.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fluxus
import httpx
import pytest
from fluxus import backoff
from fluxus.backoff import _requested_wait
from fluxus.instrumentation import RetryScheduled
from hypothesis import given
from hypothesis import strategies as st


class _Handler(BaseHTTPRequestHandler):
    """Answer each request with the next (status, Retry-After) the server holds."""

    def do_GET(self) -> None:
        status, header = (
            self.server.answers.pop(0) if self.server.answers else (200, None)
        )  # type: ignore[attr-defined]
        self.server.hits += 1  # type: ignore[attr-defined]
        body = b"ok" if status == 200 else b"busy"
        self.send_response(status)
        if header is not None:
            self.send_header("Retry-After", header)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Server:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.answers = []
        self.httpd.hits = 0
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def answer(self, *answers: tuple[int, str | None]) -> None:
        self.httpd.answers[:] = list(answers)

    @property
    def hits(self) -> int:
        return self.httpd.hits


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    srv = Server()
    thread = threading.Thread(target=srv.httpd.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()
    thread.join(10)


def _httpx_error(server: Server, status: int, header: str | None) -> Exception:
    server.answer((status, header))
    with httpx.Client(timeout=10) as client:
        try:
            client.get(server.url).raise_for_status()
        except httpx.HTTPStatusError as exc:
            return exc
    raise AssertionError


def _requests_error(server: Server, status: int, header: str | None) -> Exception:
    requests = pytest.importorskip("requests")
    server.answer((status, header))
    try:
        requests.get(server.url, timeout=10).raise_for_status()
    except requests.HTTPError as exc:
        return exc
    raise AssertionError


@pytest.fixture(params=["httpx", "requests"])
def http_error(request, server):
    make = _httpx_error if request.param == "httpx" else _requests_error
    return lambda status, header: make(server, status, header)


def test_retry_after_seconds_from_the_response(http_error):
    strategy = backoff.retry_after()
    assert 7.0 == strategy(0, http_error(503, "7"))
    assert 0.0 == strategy(0, http_error(429, "0"))


def test_retry_after_http_date_from_the_response(http_error):
    error = http_error(503, formatdate(time.time() + 30, usegmt=True))
    # HTTP dates have whole seconds: 29 to 30 seconds from now, minus the
    # time the request took.
    assert 25 < backoff.retry_after()(0, error) <= 30


def test_a_date_in_the_past_asks_for_no_wait(http_error):
    error = http_error(503, formatdate(time.time() - 3600, usegmt=True))
    assert 0.0 == backoff.retry_after(backoff.constant(5))(0, error)


def test_no_header_or_a_bad_one_falls_back(http_error):
    strategy = backoff.retry_after(backoff.linear(2))
    assert 4.0 == strategy(1, http_error(503, None))
    assert 2.0 == strategy(0, http_error(503, "soon"))
    assert 2.0 == strategy(0, http_error(503, "-5"))


def test_the_wait_never_passes_max(http_error):
    assert 60.0 == backoff.retry_after()(0, http_error(503, "86400"))
    strategy = backoff.retry_after(backoff.constant(9), max=timedelta(seconds=3))
    assert (3.0, 3.0) == (strategy(0, http_error(503, "5")), strategy(0, None))


def test_the_errors_own_retry_after_comes_first():
    class Throttled(Exception):
        retry_after = 2.5
        response = None

    assert 2.5 == backoff.retry_after()(0, Throttled())
    assert 1.0 == backoff.retry_after()(3, fluxus.RateLimitExceeded("api", 1.0))


def test_without_a_fallback_a_silent_failure_waits_nothing():
    assert 0.0 == backoff.retry_after()(4, OSError("no response"))
    assert 0.0 == backoff.retry_after()(4, None)


def test_a_fallback_may_see_the_error_too():
    seen = []

    def fallback(retry_index, error):
        seen.append((retry_index, error))
        return 0.5

    error = OSError()
    assert 0.5 == backoff.retry_after(fallback)(2, error)
    assert [(2, error)] == seen


@pytest.mark.parametrize("mode_name", ["sync", "async"])
def test_retry_waits_what_the_server_asks(server, events, instant, mode_name):
    policy = fluxus.retry(
        4,
        on=httpx.HTTPStatusError,
        backoff=backoff.retry_after(backoff.constant(0.25)),
    )
    server.answer((503, "3"), (429, None), (503, formatdate(time.time() + 3600)))
    hits = server.hits

    if mode_name == "sync":

        @policy
        def fetch() -> str:
            with httpx.Client(timeout=10) as client:
                response = client.get(server.url)
                return response.raise_for_status().text

        assert "ok" == fetch()
    else:

        @policy
        async def afetch() -> str:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(server.url)
                return response.raise_for_status().text

        assert "ok" == asyncio.run(afetch())

    assert 4 == server.hits - hits
    delays = [e.delay for e in events if isinstance(e, RetryScheduled)]
    assert [3.0, 0.25, 60.0] == delays


def test_retry_after_on_rejected_results_uses_the_fallback(server, events, instant):
    server.answer((503, "1"), (503, "1"))

    @fluxus.retry(
        3,
        on_result=lambda response: response.status_code == 503,
        backoff=backoff.retry_after(backoff.constant(0.5)),
    )
    def fetch() -> httpx.Response:
        return httpx.get(server.url, timeout=10)

    assert 200 == fetch().status_code
    assert [0.5, 0.5] == [e.delay for e in events if isinstance(e, RetryScheduled)]


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (lambda: backoff.retry_after(3), TypeError, "fallback must be None or"),
        (lambda: backoff.retry_after(lambda: 1), TypeError, "fallback must take"),
        (lambda: backoff.retry_after(max=-1), ValueError, "max must be"),
        (lambda: backoff.retry_after(max="1m"), TypeError, "max must be"),
    ],
)
def test_bad_configuration_names_the_parameter(build, error, message):
    with pytest.raises(error, match=message):
        build()


class _Headers:
    def __init__(self, value):
        self.value = value

    def get(self, name):
        assert "Retry-After" == name
        return self.value


class _Response:
    def __init__(self, value):
        self.headers = _Headers(value)


class _HTTPError(Exception):
    def __init__(self, value):
        super().__init__("http")
        self.response = _Response(value)


@given(
    st.one_of(
        st.none(),
        st.text(max_size=40),
        st.binary(max_size=40),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.datetimes().map(lambda d: formatdate(d.timestamp() if d.year > 1970 else 0)),
    )
)
def test_any_header_gives_a_wait_between_zero_and_max_or_the_fallback(value):
    strategy = backoff.retry_after(backoff.constant(1.5), max=10)
    wait = strategy(0, _HTTPError(value))
    assert 0 <= wait <= 10
    asked = _requested_wait(_HTTPError(value), now=0.0)
    assert asked is None or (math.isfinite(asked) and asked >= 0)


@given(st.floats(min_value=0, max_value=1e9), st.floats(min_value=0, max_value=1e3))
def test_seconds_are_read_as_given_and_capped(seconds, cap):
    strategy = backoff.retry_after(max=cap)
    assert min(seconds, cap) == strategy(0, _HTTPError(repr(seconds)))


def test_a_broken_headers_object_counts_as_no_header():
    class Broken:
        def get(self, name):
            raise RuntimeError

    error = _HTTPError("1")
    error.response.headers = Broken()
    assert 0.75 == backoff.retry_after(backoff.constant(0.75))(0, error)
