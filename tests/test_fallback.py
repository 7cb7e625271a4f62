from __future__ import annotations

import asyncio
import inspect

import fluxus
import pytest
from fluxus.instrumentation import FallbackUsed, Stats


class Boom:
    """Raise the given exception on every call; count the calls."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise self.error


def ok(*args, **kwargs):
    return "ok"


def test_success_passes_through(mode, events):
    policy = fluxus.fallback(value="cached")
    fn = policy(mode.make(ok))

    assert "ok" == mode.run(fn, 1)
    assert [] == events
    assert Stats(calls=1) == policy.stats


def test_failure_returns_the_value(mode, events):
    policy = fluxus.fallback(value=None)
    fn = policy(mode.make(Boom(ValueError("down"))))

    assert None is mode.run(fn)
    (event,) = events
    assert type(event) is FallbackUsed
    assert ("builtins.ValueError", "down") == (event.error_type, event.error_message)
    assert Stats(calls=1, failures=1, fallbacks=1) == policy.stats


def test_handler_gets_the_error_and_the_arguments(mode):
    seen = []

    def handler(exc, *args, **kwargs):
        seen.append((exc, args, kwargs))
        return "from handler"

    error = ValueError("down")
    fn = fluxus.fallback(handler)(mode.make(Boom(error)))

    assert "from handler" == mode.run(fn, 1, "two", three=3)
    assert [(error, (1, "two"), {"three": 3})] == seen


def test_async_handler_is_awaited_for_async_functions():
    async def handler(exc, order):
        await asyncio.sleep(0)
        return f"{order} later"

    @fluxus.fallback(handler)
    async def place(order):
        raise ConnectionError(order)

    assert "A-1 later" == asyncio.run(place("A-1"))


def test_async_handler_on_a_sync_function_fails_when_applied():
    async def handler(exc):
        return None

    policy = fluxus.fallback(handler)
    with pytest.raises(
        TypeError, match=r"handler must be a sync callable .* got the async"
    ):
        policy(ok)


def test_failing_handler_raises_its_own_error_from_the_original(mode):
    def handler(exc):
        raise LookupError("no cache either")

    error = ValueError("down")
    fn = fluxus.fallback(handler)(mode.make(Boom(error)))

    with pytest.raises(LookupError, match="no cache either") as info:
        mode.run(fn)
    assert error is info.value.__cause__


def test_failing_async_handler_raises_from_the_original():
    async def handler(exc):
        raise LookupError("no cache")

    error = ValueError("down")

    @fluxus.fallback(handler)
    async def call():
        raise error

    with pytest.raises(LookupError) as info:
        asyncio.run(call())
    assert error is info.value.__cause__


def test_on_and_should_fallback_choose_the_errors(mode):
    policy = fluxus.fallback(
        value="x", on=(ValueError, KeyError), should_fallback=lambda e: "keep" in str(e)
    )
    other = policy(mode.make(Boom(TypeError("keep"))))
    refused = policy(mode.make(Boom(ValueError("no"))))
    taken = policy(mode.make(Boom(KeyError("keep"))))

    with pytest.raises(TypeError):
        mode.run(other)
    with pytest.raises(ValueError, match="no"):
        mode.run(refused)
    assert "x" == mode.run(taken)
    assert Stats(calls=3, failures=2, fallbacks=1) == policy.stats


def test_cancellation_and_interrupts_pass_through(mode):
    fn = fluxus.fallback(value="x")(mode.make(Boom(KeyboardInterrupt())))
    with pytest.raises(KeyboardInterrupt):
        mode.run(fn)


def test_rejections_get_the_fallback_too():
    breaker = fluxus.circuit_breaker(failure_threshold=1)
    breaker.open()

    @fluxus.fallback(value="degraded")
    @breaker
    def call():
        return "fresh"

    assert "degraded" == call()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({}, TypeError, "exactly one of them, got neither"),
        ({"handler": ok, "value": 1}, TypeError, "got both"),
        ({"handler": 3}, TypeError, "handler must be a callable"),
        ({"value": 1, "on": BaseException}, TypeError, "on must be an Exception"),
        ({"value": 1, "on": ()}, TypeError, "on must be an Exception"),
        ({"value": 1, "should_fallback": "x"}, TypeError, "should_fallback"),
    ],
)
def test_bad_configuration_fails_when_built(kwargs, error, match):
    with pytest.raises(error, match=match):
        fluxus.fallback(**kwargs)


def test_keeps_signature_and_coroutine_nature():
    async def fetch(url: str, *, retries: int = 2) -> str:
        return url

    wrapped = fluxus.fallback(value="")(fetch)
    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(fetch) == inspect.signature(wrapped)


def test_decorates_classes_and_shows_in_layers():
    policy = fluxus.fallback(value=0)

    @policy
    class Client:
        def get(self):
            raise ValueError

        @classmethod
        def make(cls):
            raise ValueError

        @staticmethod
        def util():
            raise ValueError

    assert 0 == Client().get() == Client.make() == Client.util()
    assert (policy,) == fluxus.layers(Client.get)
