"""Checked by ``mypy --strict``: fluxus.timeout keeps the signatures."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

import fluxus


@fluxus.timeout(1.5)
def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode()


@fluxus.timeout(timedelta(seconds=2), strategy="cooperative", on_timeout=lambda e: None)
async def afetch(url: str) -> int:
    return len(url)


def remap(exc: fluxus.DeadlineExceeded) -> BaseException | None:
    return RuntimeError(f"{exc.name} took longer than {exc.seconds}s")


policy: fluxus.Timeout = fluxus.timeout(0.5, strategy="signal", on_timeout=remap)


@policy
def ping() -> bool:
    return True


assert_type(fetch("x"), bytes)
assert_type(fetch("x", retries=2), bytes)


async def use() -> None:
    assert_type(await afetch("x"), int)


assert_type(ping(), bool)
assert_type(fluxus.remaining(), float | None)
