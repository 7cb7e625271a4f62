"""A FastAPI app protected by fluxus.

Run it with ``python examples/fastapi_app.py`` (or ``uvicorn fastapi_app:app``
from this directory) and call ``curl -i http://127.0.0.1:8000/quotes/1`` a
few times: the flaky upstream is retried, and the sixth call within ten
seconds gets a 429 JSON answer with ``Retry-After``. ``/slow`` waits on an
upstream that takes too long and answers 504 after a quarter of a second.
``FLUXUS_STORAGE_URI=redis://localhost:6379/0`` in the environment shares
the limits among server processes (``uvicorn --workers 4``).
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Annotated

import fluxus
from fastapi import Depends, FastAPI, Request
from fluxus.contrib.starlette import client_ip, install

app = FastAPI()
install(app)  # install(app, trusted_proxies=["10.0.0.0/8"]) behind a proxy

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
@fluxus.rate_limit("5/10 seconds", key=client_ip)
@fluxus.retry(2, on=ConnectionError)
async def quote(
    number: int, request: Request, lang: Annotated[str, Depends(language)]
) -> dict[str, str]:
    return {"quote": await fetch_quote(number), "lang": lang}


@app.get("/slow")
@fluxus.timeout(0.25)
async def slow() -> dict[str, str]:
    await asyncio.sleep(30)  # an upstream that hangs: cancelled at the deadline
    return {"late": "never"}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=8000)
