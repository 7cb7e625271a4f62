"""fluxus.stack: the recommended order, decided once."""

from __future__ import annotations

import asyncio
import inspect
import itertools
import time
import warnings

import fluxus
import pytest
from fluxus.sinks import Memory

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")

KINDS = ["dead_letter", "rate_limit", "circuit_breaker", "timeout", "retry"]


def five(sink=None):
    """One policy of each kind, in the recommended order, outermost first."""
    return [
        fluxus.dead_letter(sink if sink is not None else Memory()),
        fluxus.rate_limit(1000, burst=1000),
        fluxus.circuit_breaker(failure_threshold=3, reset_timeout=60),
        fluxus.timeout(5),
        fluxus.retry(2),
    ]


@pytest.mark.parametrize("order", list(itertools.permutations(range(5))))
def test_every_permutation_gives_the_recommended_order(order):
    policies = five()
    shuffled = [policies[i] for i in order]

    protected = fluxus.stack(*shuffled)(lambda: "ok")

    assert policies == list(fluxus.layers(protected))
    assert "ok" == protected()


def test_two_of_one_kind_are_refused():
    with pytest.raises(ValueError, match="two retry policies"):
        fluxus.stack(fluxus.retry(), fluxus.timeout(1), fluxus.retry(5))


def test_non_policies_are_refused():
    with pytest.raises(TypeError, match="argument 1"):
        fluxus.stack(fluxus.retry(), lambda f: f)


def test_an_empty_stack_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        fluxus.stack()


def test_stack_shares_its_policies_between_functions():
    policies = five()
    protect = fluxus.stack(*policies)
    a = protect(lambda: 1)
    b = protect(lambda: 2)

    assert fluxus.layers(a) == fluxus.layers(b) == tuple(policies)


def test_a_stack_applied_in_order_by_hand_is_silent():
    dead_letter, rate_limit, breaker, timeout, retry = five()
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @dead_letter
        @rate_limit
        @breaker
        @timeout
        @retry
        def fn():
            return 1

        fluxus.stack(*five())(lambda: 1)


@pytest.mark.parametrize(("outer", "inner"), list(itertools.combinations(range(5), 2)))
def test_every_wrong_pair_by_hand_warns(outer, inner):
    policies = five()
    # Apply the inner-ranked policy outside the outer-ranked one: wrong order.
    with pytest.warns(fluxus.LayeringWarning) as record:
        policies[inner](policies[outer](lambda: 1))
    assert __file__ == record[0].filename


def test_breaker_counts_an_exhausted_retry_sequence_once(mode, instant):
    calls = []

    def body():
        calls.append(1)
        raise OSError("down")

    breaker = fluxus.circuit_breaker(failure_threshold=2, reset_timeout=60)
    fn = fluxus.stack(fluxus.retry(3), breaker)(mode.make(body))

    with pytest.raises(OSError):
        mode.run(fn)
    assert fluxus.CircuitState.CLOSED == breaker.state
    with pytest.raises(OSError):
        mode.run(fn)
    assert fluxus.CircuitState.OPEN == breaker.state
    assert 6 == len(calls)
    with pytest.raises(fluxus.CircuitOpenError):
        mode.run(fn)
    assert 6 == len(calls)  # rejected, and the rejection was not retried


def test_rate_limited_calls_never_trip_the_breaker(mode):
    breaker = fluxus.circuit_breaker(failure_threshold=1, reset_timeout=60)
    fn = fluxus.stack(breaker, fluxus.rate_limit(1, burst=1))(mode.make(lambda: "ok"))

    assert "ok" == mode.run(fn)
    for _ in range(5):
        with pytest.raises(fluxus.RateLimitExceeded):
            mode.run(fn)
    assert fluxus.CircuitState.CLOSED == breaker.state


def test_rejected_calls_reach_the_dead_letter_sink(mode):
    sink = Memory()
    breaker = fluxus.circuit_breaker(failure_threshold=1, reset_timeout=60)
    breaker.open()
    fn = fluxus.stack(fluxus.dead_letter(sink), breaker, fluxus.retry(3))(
        mode.make(lambda order_id: "never")
    )

    with pytest.raises(fluxus.CircuitOpenError):
        mode.run(fn, "order-7")

    (letter,) = list(sink.letters())
    assert (("order-7",), "fluxus.exceptions.CircuitOpenError") == (
        letter.args,
        letter.error_type,
    )


def test_a_timeout_bounds_all_retries(mode):
    calls = []

    def body():
        calls.append(1)
        time.sleep(0.02)
        raise OSError("slow and failing")

    fn = fluxus.stack(
        fluxus.timeout(0.2),
        fluxus.retry(1000, backoff=fluxus.backoff.constant(0.03)),
    )(mode.make(body))

    start = time.monotonic()
    with pytest.raises((fluxus.DeadlineExceeded, OSError)):
        mode.run(fn)
    assert time.monotonic() - start < 1.0
    assert 2 <= len(calls) < 20


def test_stack_on_a_class_wraps_public_methods(instant):
    sink = Memory()
    protect = fluxus.stack(fluxus.retry(2), fluxus.dead_letter(sink))

    @protect
    class Client:
        def get(self, key):
            raise KeyError(key)

        async def aget(self, key):
            return key

        @classmethod
        def build(cls):
            return cls()

        @staticmethod
        def version():
            return "1"

        def _private(self):
            raise KeyError("private")

        @property
        def prop(self):
            return "prop"

        def __len__(self):
            return 3

    client = Client.build()
    with pytest.raises(KeyError):
        client.get("k")
    assert inspect.iscoroutinefunction(Client.aget)
    assert "k" == asyncio.run(client.aget("k"))
    assert "1" == Client.version()
    with pytest.raises(KeyError):
        client._private()
    assert ("prop", 3) == (client.prop, len(client))
    assert 1 == len(list(sink.letters()))
    assert tuple(reversed(protect.policies))[::-1] == fluxus.layers(Client.get)
    assert () == fluxus.layers(Client._private)


def test_repr_lists_the_policies_outermost_first():
    retry = fluxus.retry(name="r")
    sink = Memory()
    dead_letter = (
        fluxus.dead_letter(sink, name="d")
        if "name" in inspect.signature(fluxus.dead_letter).parameters
        else fluxus.dead_letter(sink)
    )
    text = repr(fluxus.stack(retry, dead_letter))
    assert text.index("DeadLetter") < text.index("Retry")
