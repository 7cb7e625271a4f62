"""Checked by ``mypy --strict``: rate limiters keep the signatures."""

from __future__ import annotations

from typing import assert_type

import fluxus

limiter = fluxus.rate_limit(10, burst=5, timeout=None, key=lambda user, q: user)


@limiter
def search(user: str, query: str) -> list[str]:
    return [user, query]


@fluxus.rate_limit("100 per minute; 10 per second", strategy="moving-window")
async def asearch(user: str) -> int:
    return len(user)


async def main() -> None:
    assert_type(await asearch("u"), int)
    await limiter.acquire_async(timeout=1.0, key="u")
    assert_type(await limiter.allow_async(), bool)


assert_type(search("u", "q"), list[str])
assert_type(limiter.allow("u"), bool)
limiter.acquire(timeout=0)
limiter.set_burst(3)
limiter.set_limit("5/second")
assert_type(fluxus.RateLimiter(1.5), fluxus.RateLimiter)
