"""Checked by ``mypy --strict``: the decorators keep the signatures."""

from __future__ import annotations

from typing import assert_type

import fluxus
from fluxus._core import Policy


@fluxus.retry(3, backoff=fluxus.backoff.exponential(0.1, max=1.0))
def fetch(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


@fluxus.retry(on=(OSError, KeyError), should_retry=lambda exc: True)
async def afetch(url: str) -> int:
    return len(url)


policy = fluxus.retry(2, budget=fluxus.RetryBudget(), on_exhausted=lambda e: None)


class Client:
    @policy
    def get(self, key: str) -> int:
        return len(key)

    @policy
    @classmethod
    def build(cls, name: str) -> Client:
        return cls()

    @policy
    @staticmethod
    def version() -> str:
        return "1"


@policy
class Service:
    def ping(self) -> bool:
        return True


assert_type(fetch("x"), bytes)
assert_type(fetch("x", timeout=2.0), bytes)
assert_type(Client().get("k"), int)
assert_type(Client.build("c"), Client)
assert_type(Client.version(), str)
assert_type(Service().ping(), bool)
assert_type(fluxus.layers(fetch), tuple[Policy, ...])
assert_type(fluxus.remaining(), float | None)


async def awaited() -> None:
    assert_type(await afetch("x"), int)


protect = fluxus.stack(fluxus.retry(), fluxus.timeout(1.0))


@protect
def stacked(x: int) -> str:
    return str(x)


@protect
class StackedService:
    async def ping(self, n: int) -> int:
        return n


assert_type(stacked(1), str)


async def awaited_stack() -> None:
    assert_type(await StackedService().ping(1), int)


@fluxus.retry(
    3,
    on_result=lambda status: status >= 500,
    backoff=fluxus.backoff.retry_after(fluxus.backoff.constant(1.0), max=30.0),
)
def status_of(url: str) -> int:
    return len(url)


def with_error(retry_index: int, error: Exception | None) -> float:
    return 0.0 if error is None else float(retry_index)


assert_type(fluxus.retry(backoff=with_error).max_attempts, int)


def block() -> int:
    for attempt in fluxus.retry(2).attempts():
        with attempt:
            return attempt.number
    return 0


async def ablock() -> int:
    async for attempt in fluxus.retry(2).attempts():
        with attempt:
            return attempt.number
    return 0


assert_type(status_of("x"), int)


@fluxus.fallback(value=b"")
def cached(url: str, *, timeout: float = 1.0) -> bytes:
    return url.encode()


pool = fluxus.bulkhead(4, max_waiting=2, timeout=1.0)


@pool
def pooled(n: int) -> str:
    return str(n)


@fluxus.hedge(0.05, max_hedges=2, on=OSError)
async def hedged(key: str) -> int:
    return len(key)


assert_type(cached("x", timeout=2.0), bytes)
assert_type(pooled(1), str)
assert_type(pool.in_use, int)
assert_type(pool.waiting, int)
with pool:
    pass


async def awaited_new_kinds() -> None:
    assert_type(await hedged("k"), int)
    async with pool:
        pass
