"""A loopback HTTP server whose chosen requests straggle, and that sees hang-ups."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator


class StragglerServer:
    """HTTP/1.1 on 127.0.0.1 in a thread of its own.

    ``delay_for(n)`` gives the seconds request number *n* (0-based) waits
    before it answers. A client that hangs up while its request waits is
    counted in ``hung_up``; ``answered`` counts the answers sent.
    """

    def __init__(self, delay_for: Callable[[int], float]) -> None:
        self.delay_for = delay_for
        self.received = 0
        self.answered = 0
        self.hung_up = 0
        self.lock = threading.Lock()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=512)
        self.port = server.sockets[0].getsockname()[1]
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        async with server:
            await self._stop.wait()

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head:
            return False
        with self.lock:
            number = self.received
            self.received += 1
        delay = self.delay_for(number)
        if delay > 0:
            # Wait, unless the client hangs up first.
            hang_up = asyncio.ensure_future(reader.read(1))
            done, _ = await asyncio.wait({hang_up}, timeout=delay)
            if done:
                with self.lock:
                    self.hung_up += 1
                return False
            hang_up.cancel()
        body = str(number).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()
        with self.lock:
            self.answered += 1
        return True

    def __enter__(self) -> StragglerServer:  # noqa: PYI034 - a plain class
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextlib.contextmanager
def straggler_server(delay_for: Callable[[int], float]) -> Iterator[StragglerServer]:
    with StragglerServer(delay_for) as server:
        yield server
