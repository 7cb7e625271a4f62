from __future__ import annotations

import asyncio
import inspect
import time
from datetime import timedelta

import fluxus
import pytest
from fluxus.testing import flaky


def outcomes(mode, fn, calls=200):
    seen = []
    for _ in range(calls):
        try:
            mode.run(fn)
            seen.append("ok")
        except ConnectionError:
            seen.append("fail")
    return seen


def test_the_same_seed_gives_the_same_run(mode):
    make = lambda: flaky(0.3, slow_rate=0, seed=7)(mode.make(lambda: "ok"))  # noqa: E731

    first = outcomes(mode, make())
    second = outcomes(mode, make())

    assert first == second
    assert 30 <= first.count("fail") <= 90  # about 0.3 x 200
    other = outcomes(mode, flaky(0.3, slow_rate=0, seed=8)(mode.make(lambda: "ok")))
    assert first != other


def test_rates_zero_and_one(mode):
    never = flaky(0.0, slow_rate=0.0)(mode.make(lambda: "ok"))
    always = flaky(1.0, slow_rate=0.0)(mode.make(lambda: "ok"))

    assert ["ok"] * 20 == outcomes(mode, never, 20)
    assert ["fail"] * 20 == outcomes(mode, always, 20)


def test_slow_calls_sleep_for_real_so_timeouts_fire(mode):
    fn = fluxus.timeout(0.05)(
        flaky(0.0, slow_rate=1.0, delay=timedelta(seconds=0.5))(mode.make(lambda: "ok"))
    )

    start = time.monotonic()
    with fluxus.testing.testing(), pytest.raises(fluxus.DeadlineExceeded):
        mode.run(fn)
    assert time.monotonic() - start < 0.45


def test_a_slow_call_still_returns(mode):
    fn = flaky(0.0, slow_rate=1.0, delay=0.01)(mode.make(lambda: "ok"))

    start = time.monotonic()
    assert "ok" == mode.run(fn)
    assert time.monotonic() - start >= 0.01


def test_errors_as_types_instances_and_factories(mode):
    class Boom(Exception):
        pass

    instance = Boom("given")
    for error, message in [
        (Boom, "fluxus.testing.flaky injected this failure"),
        (instance, "given"),
        (lambda: Boom("built"), "built"),
    ]:
        fn = flaky(1.0, slow_rate=0.0, error=error)(mode.make(lambda: "ok"))
        with pytest.raises(Boom, match=message):
            mode.run(fn)


def test_the_failing_call_does_not_run_the_function(mode):
    ran = []
    fn = flaky(1.0, slow_rate=0.0)(mode.make(lambda: ran.append(1)))

    with pytest.raises(ConnectionError):
        mode.run(fn)
    assert [] == ran


def test_retry_recovers_a_flaky_function(mode, instant):
    fn = fluxus.retry(20)(flaky(0.5, slow_rate=0.0, seed=1)(mode.make(lambda: "ok")))

    assert ["ok"] * 20 == [mode.run(fn) for _ in range(20)]


def test_keeps_the_function_kind_and_signature():
    async def fetch(url: str) -> str:
        await asyncio.sleep(0)
        return url

    wrapped = flaky(seed=1)(fetch)

    assert inspect.iscoroutinefunction(wrapped)
    assert inspect.signature(fetch) == inspect.signature(wrapped)
    assert "fetch" == wrapped.__name__


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"failure_rate": 1.5}, ValueError, "failure_rate"),
        ({"slow_rate": -0.1}, ValueError, "slow_rate"),
        ({"failure_rate": "x"}, TypeError, "failure_rate"),
        ({"failure_rate": True}, TypeError, "failure_rate"),
        ({"delay": -1}, ValueError, "delay"),
        ({"seed": 1.5}, TypeError, "seed"),
        ({"error": 3}, TypeError, "error"),
    ],
)
def test_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        flaky(**kwargs)


def test_a_bare_decorator_says_to_add_parentheses():
    def fetch():
        return 1

    with pytest.raises(TypeError) as caught:
        flaky(fetch)

    assert str(caught.value).startswith(
        "failure_rate must be a number between 0 and 1, got <function"
    )
    assert str(caught.value).endswith(": use @fluxus.testing.flaky() with parentheses")
