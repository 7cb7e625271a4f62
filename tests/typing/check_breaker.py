"""Checked by ``mypy --strict``: the circuit breaker keeps the signatures."""

from __future__ import annotations

from datetime import timedelta
from typing import assert_type

import fluxus

breaker = fluxus.circuit_breaker(
    3,
    timedelta(seconds=10),
    success_threshold=2,
    half_open_max_requests=2,
    exclude=[KeyError, lambda exc: isinstance(exc, ValueError)],
    name="inventory",
)


@breaker
def stock(sku: str, *, warehouse: int = 1) -> int:
    return len(sku) + warehouse


@breaker
async def astock(sku: str) -> int:
    return len(sku)


class Inventory:
    @fluxus.circuit_breaker(exclude=KeyError)
    def count(self, sku: str) -> int:
        return len(sku)


assert_type(stock("x"), int)
assert_type(stock("x", warehouse=2), int)
assert_type(Inventory().count("x"), int)
assert_type(breaker.state, fluxus.CircuitState)
assert_type(breaker.last_error, BaseException | None)
assert_type(
    fluxus.CircuitBreaker(storage="redis://localhost:6379/0"), fluxus.CircuitBreaker
)
assert_type(
    fluxus.CircuitRedisStorage("redis://localhost", fail_open=False),
    fluxus.CircuitRedisStorage,
)


async def awaited() -> None:
    assert_type(await astock("x"), int)
