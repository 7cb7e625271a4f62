"""``python -m fluxus demo``: a real flaky HTTP service and a protected client.

The service listens on a free port of 127.0.0.1 and fails a share of its
requests with HTTP 503. The client calls it through fluxus for a while,
prints what each policy decides as it happens, and ends with a summary.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self, TextIO

import fluxus
from fluxus.instrumentation import Event, get_hooks, set_hooks


@dataclass
class ServiceStats:
    """What the flaky service saw."""

    served: int = 0
    failed: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class FlakyService:
    """An HTTP service on loopback that answers 503 to a share of requests."""

    def __init__(self, failure_rate: float, seed: int | None) -> None:
        self.stats = ServiceStats()
        rng = random.Random(seed)
        stats = self.stats

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with stats.lock:
                    fail = rng.random() < failure_rate
                    stats.served += 1
                    stats.failed += fail
                    number = stats.served
                status, body = (
                    (503, {"error": "overloaded"}) if fail else (200, {"quote": number})
                )
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Keep the demo's output for what fluxus does."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/quote"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _server_error(exc: Exception) -> bool:
    """Retry 5xx answers and transport errors, never 4xx."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500  # noqa: PLR2004 - the 5xx class
    return True


def _printer(out: TextIO) -> fluxus.instrumentation.Hook:
    def hook(event: Event) -> None:
        fields = event.fields()
        if event.kind == "retry_scheduled":
            line = (
                f"  retry      attempt {fields['attempt']} failed "
                f"({fields['error_message']}); next try in {fields['delay']:.2f}s"
            )
        elif event.kind == "retries_exhausted":
            line = (
                f"  retry      gave up after {fields['attempts']} attempts: "
                f"{fields['reason']}"
            )
        else:
            line = f"  {event.kind:<10} {fields}"
        print(line, file=out, flush=True)

    return hook


def run(
    *,
    duration: float,
    failure_rate: float,
    seed: int | None,
    out: TextIO,
) -> int:
    """Run the demo; return the process exit code."""
    with FlakyService(failure_rate, seed) as service:
        policy = fluxus.retry(
            4,
            on=(urllib.error.URLError, TimeoutError),
            should_retry=_server_error,
            backoff=fluxus.backoff.exponential(0.05, max=0.4, jitter=True),
            name="quotes",
        )

        @policy
        def get_quote() -> int:
            try:
                response = urllib.request.urlopen(service.url, timeout=2)  # noqa: S310 - our own loopback URL
            except urllib.error.HTTPError as exc:
                exc.close()  # the error carries the open response
                raise
            with response:
                return int(json.load(response)["quote"])

        print(
            f"fluxus demo: a service on {service.url} fails "
            f"{failure_rate:.0%} of its requests with HTTP 503.\n"
            f"The client retries up to 4 times with exponential backoff "
            f"for {duration:g}s.\n",
            file=out,
            flush=True,
        )
        calls = succeeded = 0
        previous_hooks = get_hooks()
        set_hooks([_printer(out)])
        try:
            end = time.monotonic() + duration
            while time.monotonic() < end:
                calls += 1
                try:
                    quote = get_quote()
                except urllib.error.URLError as exc:
                    print(f"call {calls:>3}: failed for good: {exc}", file=out)
                else:
                    succeeded += 1
                    print(f"call {calls:>3}: ok, quote #{quote}", file=out)
                time.sleep(0.05)
        finally:
            set_hooks(previous_hooks)

        stats = service.stats
        raw = 1 - stats.failed / stats.served if stats.served else 1.0
        print(
            "\nSummary\n"
            f"  service:  {stats.served} requests, {stats.failed} answered 503 "
            f"({raw:.0%} succeeded on their own)\n"
            f"  client:   {calls} calls, {succeeded} succeeded "
            f"({succeeded / calls:.0%} with fluxus.retry), "
            f"{stats.served - calls} retries",
            file=out,
            flush=True,
        )
    return 0
