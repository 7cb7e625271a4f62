"""A FastAPI app protected by fluxus.

Run it with ``python examples/fastapi_app.py`` (or ``uvicorn fastapi_app:app``
from this directory) and call ``curl -i http://127.0.0.1:8000/quotes/1`` a
few times: the flaky upstream is retried, and the sixth call within ten
seconds gets a 429 JSON answer with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Annotated

import fluxus
from _shared import Window
from fastapi import Depends, FastAPI, Request
from fluxus.contrib.starlette import client_ip, install

app = FastAPI()
install(app)  # install(app, trusted_proxies=["10.0.0.0/8"]) behind a proxy

per_client = Window(limit=5, per=10.0)
_calls = itertools.count()


def language() -> str:
    """A dependency: FastAPI still sees it through the fluxus decorator."""
    return "en"


@fluxus.retry(3, on=ConnectionError, backoff=fluxus.backoff.exponential(0.05))
async def fetch_quote(number: int) -> str:
    """Ask a flaky upstream service: every other call fails."""
    await asyncio.sleep(0.01)
    if next(_calls) % 2 == 0:
        msg = "upstream reset the connection"
        raise ConnectionError(msg)
    return f"Quote #{number}: now is better than never."


@app.get("/quotes/{number}")
@fluxus.retry(2, on=ConnectionError)
async def quote(
    number: int, request: Request, lang: Annotated[str, Depends(language)]
) -> dict[str, str]:
    per_client.check(client_ip(request))
    return {"quote": await fetch_quote(number), "lang": lang}


@app.get("/slow")
async def slow() -> None:
    raise fluxus.DeadlineExceeded("upstream", 2.0)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
