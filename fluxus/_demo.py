"""``python -m fluxus demo``: a real flaky HTTP service and a protected client.

The service listens on a free port of 127.0.0.1 and goes through phases: it
is healthy, then slow, then down, then throttling, then healthy again. A
client calls it from two threads through one full ``fluxus.stack``, and an
``asyncio`` client through the same policies plus a hedge; the demo prints,
live, what each layer does, then a summary, and the command that replays the
calls it kept as dead letters against a healthy service
(:func:`healthy_client`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self, TextIO

import fluxus
from fluxus._redis import mask_password
from fluxus.instrumentation import Event, get_hooks, set_hooks


@dataclass(frozen=True)
class Phase:
    """What the service does from ``start`` (a fraction of the run) on."""

    start: float
    name: str
    error_rate: float = 0.0
    slow_rate: float = 0.0
    throttle_rate: float = 0.0


SCHEDULE = (
    Phase(0.00, "healthy", error_rate=0.10),
    Phase(0.20, "slow", error_rate=0.05, slow_rate=0.5),
    Phase(0.35, "down", error_rate=1.0),
    Phase(0.55, "throttling", error_rate=0.05, throttle_rate=0.30),
    Phase(0.70, "healthy", error_rate=0.05),
)
SLOW_SECONDS = 0.6
ATTEMPT_TIMEOUT = 0.3
RUSH_EVERY, RUSH_LENGTH = 50, 8
#: What the fallback answers for a failed call: the quote of the cache.
CACHED = 0
#: How each refusal or failure the fallback answered is counted.
_ANSWERED = {
    "RateLimitExceeded": "throttled",
    "CircuitOpenError": "refused by the open circuit",
    "BulkheadFull": "refused by the full bulkhead",
    "DeadlineExceeded": "out of time",
}


class FlakyService:
    """An HTTP service on loopback that follows :data:`SCHEDULE`."""

    def __init__(self, duration: float, seed: int | None) -> None:
        self.answers: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._started = time.monotonic()
        self._duration = duration
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, delay = service.decide()
                if delay:
                    time.sleep(delay)
                body = json.dumps({"status": status}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if status == 429:  # noqa: PLR2004 - Too Many Requests
                        self.send_header("Retry-After", "1")
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client walked away from a slow answer

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Keep the demo's output for what fluxus does."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/quote"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def phase(self) -> Phase:
        """Return the phase the service is in now."""
        progress = (time.monotonic() - self._started) / self._duration
        return [p for p in SCHEDULE if p.start <= progress][-1]

    def decide(self) -> tuple[int, float]:
        """Return the status of the next answer and how long to stall it."""
        phase = self.phase()
        with self._lock:
            roll = self._rng.random()
            if roll < phase.error_rate:
                status, delay, label = 503, 0.0, "503"
            elif roll < phase.error_rate + phase.throttle_rate:
                status, delay, label = 429, 0.0, "429"
            elif roll < phase.error_rate + phase.throttle_rate + phase.slow_rate:
                status, delay, label = 200, SLOW_SECONDS, "slow"
            else:
                status, delay, label = 200, 0.0, "200"
            self.answers[label] += 1
        return status, delay

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class HealthyService:
    """A quote service on loopback that always answers at once with 200."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"status": 200}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                """Keep stderr for the replay's own report."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}/quote"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()


def healthy_client() -> QuoteClient:
    """Return a client of a healthy service started for this process.

    The demo's replay command reaches the method through it:
    ``--call 'fluxus._demo:healthy_client().get_quote'``.
    """
    return QuoteClient(HealthyService().url)


#: What the demo prints for replaying its letters.
REPLAY_CALL = "fluxus._demo:healthy_client().get_quote"

_REJECTIONS = frozenset(
    f"fluxus.exceptions.{name}"
    for name in (
        "CircuitOpenError",
        "RateLimitExceeded",
        "BulkheadFull",
        "ThreadsExhausted",
    )
)


def _worth_retrying(exc: Exception) -> bool:
    """Retry 5xx and 429 answers and transport errors, never other 4xx."""
    if isinstance(exc, urllib.error.HTTPError):
        return exc.code >= 500 or exc.code == 429  # noqa: PLR2004
    return True


class Tally:
    """Count events by kind, print the ones worth a line of their own."""

    def __init__(self, out: TextIO, started: float) -> None:
        self.kinds: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._out = out
        self._started = started

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.kinds[event.kind] += 1
            if event.kind == "fallback_used":
                error = event.fields()["error_type"].rpartition(".")[2]
                self.outcomes[_ANSWERED.get(error, "failed after retries")] += 1
        if event.kind == "circuit_state_changed":
            fields = event.fields()
            self.say(
                f"circuit {fields['old_state']} -> {fields['new_state']} "
                f"({fields['reason']})"
            )

    def outcome(self, label: str) -> None:
        with self._lock:
            self.outcomes[label] += 1

    def say(self, text: str) -> None:
        elapsed = time.monotonic() - self._started
        print(f"{elapsed:5.1f}s  {text}", file=self._out, flush=True)


@dataclass(frozen=True)
class Protection:
    """The demo client's stack, and the parts the demo reports on."""

    stack: fluxus.Stack
    breaker: fluxus.CircuitBreaker
    sink: fluxus.sinks.JsonlFile
    bulkhead: fluxus.Bulkhead
    hedged: fluxus.Stack


def protection(
    duration: float, redis_url: str | None, letters_path: Path
) -> Protection:
    """Return the demo client's stack: every policy, state shared if asked."""
    breaker = fluxus.circuit_breaker(
        failure_threshold=3,
        reset_timeout=max(0.5, duration * 0.06),
        name="demo.quotes",
        storage=redis_url,
    )
    sink = fluxus.sinks.JsonlFile(letters_path)
    bulkhead = fluxus.bulkhead(2, name="demo.quotes", storage=redis_url)
    answered = fluxus.fallback(value=CACHED)
    policies = (
        answered,
        bulkhead,
        fluxus.retry(
            3,
            on=(urllib.error.URLError, TimeoutError),
            should_retry=_worth_retrying,
            backoff=fluxus.backoff.exponential(0.05, max=0.3, jitter=True),
        ),
        fluxus.timeout(0.5),
        breaker,
        fluxus.rate_limit(
            30,
            burst=5,
            timeout=0.02,
            name="demo.quotes",
            storage=redis_url or "memory://",
        ),
        fluxus.dead_letter(sink),
    )
    # The asyncio client shares every policy, and races stragglers.
    hedged = fluxus.stack(*policies, fluxus.hedge(0.1))
    return Protection(fluxus.stack(*policies), breaker, sink, bulkhead, hedged)


class QuoteClient:
    """A client of the flaky service; the demo protects its method."""

    def __init__(self, url: str) -> None:
        self._url = url

    def get_quote(self, request_id: int) -> int:
        """Fetch one quote; give each attempt what is left of the deadline."""
        left = fluxus.remaining()
        attempt_timeout = (
            ATTEMPT_TIMEOUT if left is None else min(ATTEMPT_TIMEOUT, left)
        )
        url = f"{self._url}?id={request_id}"
        try:
            response = urllib.request.urlopen(url, timeout=attempt_timeout)  # noqa: S310 - our own loopback URL
        except urllib.error.HTTPError as exc:
            exc.close()  # the error carries the open response
            raise
        with response:
            return int(json.load(response)["status"])

    async def get_quote_async(self, request_id: int) -> int:
        """Fetch one quote over a plain asyncio connection."""
        parts = urllib.parse.urlsplit(self._url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {parts.path}?id={request_id} HTTP/1.1\r\nHost: {host}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = int((await reader.readline()).split()[1])
            await reader.read()
        finally:
            writer.close()
        if status >= 400:  # noqa: PLR2004 - an HTTP error
            raise urllib.error.HTTPError(self._url, status, "error", None, None)  # type: ignore[arg-type] # no headers to give
        return status


def _drive(
    get_quote: Callable[[int], int], tally: Tally, end: float, ids: Iterator[int]
) -> None:
    """Call the service until *end*, counting how each call ended.

    Every 50th call starts a rush of 8 calls without a pause, more than the
    rate limit's burst allows, so that the limiter has something to do.
    """
    while time.monotonic() < end:
        request_id = next(ids)
        if get_quote(request_id) != CACHED:  # the fallback counts the others
            tally.outcome("ok")
        if request_id % RUSH_EVERY >= RUSH_LENGTH:
            time.sleep(0.05)


def _drive_async(
    get_quote: Callable[[int], Awaitable[int]],
    tally: Tally,
    end: float,
    ids: Iterator[int],
) -> None:
    """Call the service from an asyncio task until *end*."""

    async def main() -> None:
        while time.monotonic() < end:
            if await get_quote(next(ids)) != CACHED:
                tally.outcome("ok")
            await asyncio.sleep(0.05)

    asyncio.run(main())


def run(
    *,
    duration: float,
    seed: int | None,
    out: TextIO,
    redis_url: str | None = None,
    directory: Path | None = None,
) -> int:
    """Run the demo; return the process exit code."""
    folder = directory or Path(tempfile.mkdtemp(prefix="fluxus-demo-"))
    letters_path = folder / "dead-letters.jsonl"
    protect = protection(duration, redis_url, letters_path)
    where = f"Redis at {mask_password(redis_url)}" if redis_url else "memory"

    with FlakyService(duration, seed) as service:
        client = QuoteClient(service.url)
        get_quote = protect.stack(client.get_quote)
        get_quote_async = protect.hedged(client.get_quote_async)
        tally = Tally(out, time.monotonic())
        print(
            f"fluxus demo: a flaky service on {service.url}, {duration:g}s, "
            f"state in {where}.\n"
            "Client stack, outermost first: fallback(cached quote) -> "
            "dead_letter -> rate_limit(30/s, burst 5) -> bulkhead(2 at once) -> "
            "circuit_breaker(3 failures) -> timeout(0.5s) -> "
            "retry(3 attempts, exponential backoff); the asyncio client adds "
            "hedge(0.1s) innermost\n",
            file=out,
            flush=True,
        )
        previous_hooks = get_hooks()
        set_hooks([tally])
        ids = itertools.count(1)  # next() on it is atomic under the GIL
        end = time.monotonic() + duration
        threads = [
            threading.Thread(
                target=_drive, args=(get_quote, tally, end, ids), daemon=True
            )
            for _ in range(2)
        ]
        threads.append(
            threading.Thread(
                target=_drive_async,
                args=(get_quote_async, tally, end, ids),
                daemon=True,
            )
        )
        try:
            for thread in threads:
                thread.start()
            _watch(threads, service, tally, protect.breaker, duration)
        finally:
            set_hooks(previous_hooks)
        _summary(out, tally, service, protect, letters_path)
    return 0


def _watch(
    threads: list[threading.Thread],
    service: FlakyService,
    tally: Tally,
    breaker: fluxus.CircuitBreaker,
    duration: float,
) -> None:
    """Print the service's phases and a status line until the clients end."""
    shown = service.phase()
    tally.say(f"service is {shown.name}")
    tick = time.monotonic()
    while any(t.is_alive() for t in threads):
        time.sleep(0.05)
        if service.phase() != shown:
            shown = service.phase()
            tally.say(f"service is {shown.name}")
        if time.monotonic() - tick >= max(1.0, duration / 20):
            tick = time.monotonic()
            tally.say(_status(tally, breaker))


def _status(tally: Tally, breaker: fluxus.CircuitBreaker) -> str:
    kinds, outcomes = tally.kinds, tally.outcomes
    return (
        f"calls {sum(outcomes.values()):>4}  ok {outcomes['ok']:>4}  "
        f"retries {kinds['retry_scheduled']:>3}  "
        f"timeouts {kinds['timed_out']:>3}  "
        f"circuit {breaker.state.value:<9}  "
        f"throttled {kinds['rate_limited']:>3}  "
        f"dead letters {kinds['dead_lettered']:>3}"
    )


def _summary(
    out: TextIO,
    tally: Tally,
    service: FlakyService,
    protect: Protection,
    letters_path: Path,
) -> None:
    kinds, outcomes = tally.kinds, tally.outcomes
    breaker = protect.breaker
    stored = rejected = 0
    for letter in protect.sink.letters():
        stored += 1
        rejected += letter.error_type in _REJECTIONS
    answers = service.answers
    rows = [
        (
            "service",
            (
                f"{sum(answers.values())} requests: {answers['200']} fast, "
                f"{answers['slow']} slow, {answers['503']} x 503, "
                f"{answers['429']} x 429"
            ),
        ),
        ("calls", ", ".join(f"{n} {label}" for label, n in outcomes.most_common())),
        (
            "retry",
            (
                f"{kinds['retry_scheduled']} retries, "
                f"{kinds['retries_exhausted']} calls gave up"
            ),
        ),
        ("timeout", f"{kinds['timed_out']} calls ran out of time"),
        (
            "circuit breaker",
            (
                f"{kinds['circuit_state_changed']} state changes, "
                f"{kinds['circuit_rejected']} calls refused, "
                f"now {breaker.state.value}"
            ),
        ),
        ("rate limit", f"{kinds['rate_limited']} calls throttled"),
        (
            "bulkhead",
            (
                f"{kinds['bulkhead_rejected']} calls refused, at most "
                f"{protect.bulkhead.max_concurrent} ran at once"
            ),
        ),
        (
            "hedge",
            (
                f"{kinds['hedge_started']} backup calls raced stragglers, "
                f"{kinds['hedge_won']} won"
            ),
        ),
        (
            "fallback",
            f"{kinds['fallback_used']} failed calls answered with a cached quote",
        ),
        ("dead letter", f"{stored} failed calls kept in {letters_path}"),
    ]
    print("\nSummary", file=out)
    for layer, text in rows:
        print(f"  {layer:<16} {text}", file=out)
    print(
        f"\n{rejected} of the {stored} letters are fluxus's own rejections (the "
        "rate limit or the open circuit refused the call): dead_letter keeps "
        "every failure by default, so that a batch job loses nothing and can "
        "replay them. A web view would rather pass should_dlq=lambda e: not "
        "fluxus.is_rejection(e): its client is told to come back (429/503), "
        "and a replay would run the work twice.",
        file=out,
    )
    print(
        f"\nInspect them with:  python -m fluxus dlq list {letters_path}\n"
        "Replay them against a healthy service with:\n"
        f"  python -m fluxus dlq replay {letters_path} --call '{REPLAY_CALL}'",
        file=out,
        flush=True,
    )
