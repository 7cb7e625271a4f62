"""A service client protected by one fluxus stack.

Every public method of ``InventoryClient`` goes through the same policy
objects: one retry policy, one deadline per call, one breaker and one rate
limit for the inventory service, and one dead letter file for the calls that
fail for good. Run it with ``python examples/service_client.py``: it starts a
small inventory service on loopback that fails every third request, and calls it.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fluxus

inventory = fluxus.stack(
    fluxus.retry(
        3,
        on=(urllib.error.URLError, TimeoutError),
        backoff=fluxus.backoff.exponential(0.05, max=0.5, jitter=True),
    ),
    fluxus.timeout(2.0),
    fluxus.circuit_breaker(failure_threshold=5, reset_timeout=10, name="inventory"),
    fluxus.rate_limit(100, name="inventory"),
    fluxus.dead_letter(fluxus.sinks.JsonlFile(Path("inventory-dead-letters.jsonl"))),
)


@inventory
class InventoryClient:
    """Talks to the inventory service; each public method is protected."""

    def __init__(self, base_url: str) -> None:
        self._base_url = base_url

    def stock(self, sku: str) -> int:
        """Return how many items of *sku* are in stock."""
        return int(self._get(f"/stock/{sku}")["count"])

    def reserve(self, sku: str, count: int) -> bool:
        """Reserve *count* items of *sku*."""
        return bool(self._get(f"/reserve/{sku}?count={count}")["ok"])

    def _get(self, path: str) -> dict[str, Any]:
        # Private: called inside the protected methods, not protected twice.
        left = fluxus.remaining() or 2.0
        url = self._base_url + path
        try:
            response = urllib.request.urlopen(url, timeout=min(left, 1.0))  # noqa: S310
        except urllib.error.HTTPError as exc:
            exc.close()  # the error holds the response open
            raise
        with response:
            return dict(json.load(response))


class _Inventory(BaseHTTPRequestHandler):
    requests = itertools.count(1)

    def do_GET(self) -> None:
        if next(self.requests) % 3 == 0:  # every third request fails
            self.send_error(503)
            return
        body = json.dumps({"count": 7, "ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Keep the output for the client."""


def serve() -> ThreadingHTTPServer:
    """Start the flaky inventory service on a free port of 127.0.0.1."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Inventory)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    server = serve()
    client = InventoryClient(f"http://127.0.0.1:{server.server_port}")
    for sku in ("apple", "pear", "plum"):
        print(sku, client.stock(sku), client.reserve(sku, 2))
    print(
        "policies around InventoryClient.stock:", fluxus.layers(InventoryClient.stock)
    )
    server.shutdown()
