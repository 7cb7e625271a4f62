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
    with pytest.raises(TypeError, match=r"policies\[1\] must be a fluxus policy"):
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


# -- the eight kinds ------------------------------------------------------------

EIGHT = [
    "fallback",
    "dead_letter",
    "rate_limit",
    "bulkhead",
    "circuit_breaker",
    "timeout",
    "retry",
    "hedge",
]


def eight(sink=None, **overrides):
    """One policy of each of the eight kinds, recommended order, outermost first."""
    made = {
        "fallback": fluxus.fallback(value="fallback"),
        "dead_letter": fluxus.dead_letter(sink if sink is not None else Memory()),
        "rate_limit": fluxus.rate_limit(1000, burst=1000),
        "bulkhead": fluxus.bulkhead(4),
        "circuit_breaker": fluxus.circuit_breaker(
            failure_threshold=3, reset_timeout=60
        ),
        "timeout": fluxus.timeout(5),
        "retry": fluxus.retry(2),
        "hedge": fluxus.hedge(0.05),
    }
    made.update(overrides)
    return [made[kind] for kind in EIGHT]


async def answer():
    return "ok"


@pytest.mark.parametrize("seed", range(20))
def test_eight_kinds_in_any_order_give_the_recommended_order(seed):
    import random

    policies = eight()
    shuffled = random.Random(seed).sample(policies, len(policies))  # noqa: S311 - reproducible, not secret

    protected = fluxus.stack(*shuffled)(answer)

    assert policies == list(fluxus.layers(protected))
    assert EIGHT == [p._kind for p in fluxus.layers(protected)]
    assert "ok" == asyncio.run(protected())


@pytest.mark.parametrize(("outer", "inner"), list(itertools.combinations(range(8), 2)))
def test_every_wrong_pair_of_the_eight_by_hand_warns(outer, inner):
    policies = eight()
    with pytest.warns(fluxus.LayeringWarning, match="fallback, dead_letter") as record:
        policies[inner](policies[outer](answer))
    assert __file__ == record[0].filename


def test_the_eight_applied_in_order_by_hand_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        protected = answer
        for policy in reversed(eight()):
            protected = policy(protected)
    assert "ok" == asyncio.run(protected())


def test_a_stack_with_a_hedge_refuses_plain_functions():
    with pytest.raises(TypeError, match="async def functions only"):
        fluxus.stack(*eight())(lambda: 1)


@pytest.mark.parametrize("observed", [False, True])
def test_the_eight_kind_stack_end_to_end(observed, instant):
    """Each layer does its work in one async call path through all eight."""
    from fluxus.instrumentation import Stats, add_observer, remove_observer

    sink = Memory()
    bulkhead = fluxus.bulkhead(1)
    # The hedge races stragglers only; failures go to the retry.
    policies = eight(sink, bulkhead=bulkhead, hedge=fluxus.hedge(0.05, on=TimeoutError))
    fallback, dead_letter, limiter, _, breaker, _, retry, hedge = policies
    plan = []  # what each call of the function does: ("sleep", s) or error

    @fluxus.stack(*policies)
    async def fetch(item):
        delay, outcome = plan.pop(0)
        await asyncio.sleep(delay)
        if isinstance(outcome, Exception):
            raise outcome
        return f"{item}:{outcome}"

    class Watch:
        attempts = False

        def start(self, policy, function, attempt):
            return policy

        def end(self, state, error):
            seen.append(state._kind)

    seen = []
    watch = Watch()
    if observed:
        add_observer(watch)
    try:

        async def main():
            # A straggler: the hedge wins.
            plan[:] = [(10, "slow"), (0, "fast")]
            first = await fetch(1)
            # A failure, retried: the retry's second attempt succeeds.
            plan[:] = [(0, OSError("flaky")), (0, "again")]
            second = await fetch(2)
            # Failing for good: a dead letter AND the fallback's answer.
            plan[:] = [(0, OSError("down"))] * 4
            third = await fetch(3)
            # The bulkhead is full: refused, kept as a letter, answered.
            async with bulkhead:
                fourth = await fetch(4)
            return first, second, third, fourth

        results = asyncio.run(main())
    finally:
        remove_observer(watch)

    assert ("1:fast", "2:again", "fallback", "fallback") == results
    assert ["OSError", "BulkheadFull"] == [
        letter.error_type.rpartition(".")[2] for letter in sink.letters()
    ]
    assert Stats(calls=4, failures=2, fallbacks=2) == fallback.stats
    assert Stats(calls=4, failures=2, dead_letters=2) == dead_letter.stats
    assert 4 == limiter.stats.calls
    assert Stats(calls=5, rejections=1) == bulkhead.stats  # the block too
    assert (0, 0) == (bulkhead.in_use, bulkhead.waiting)
    assert 1 == breaker.stats.failures
    assert 2 == retry.stats.retries
    assert (1, 1) == (hedge.stats.hedges, hedge.stats.hedges_won)
    if observed:
        # The block around the fourth call ends last, after the stack's call.
        assert ["fallback", "bulkhead"] == seen[-2:]
        assert {"fallback", "bulkhead", "hedge", "retry"} <= set(seen)


def test_a_sync_stack_keeps_the_slot_of_abandoned_work():
    import threading

    release = threading.Event()
    bulkhead = fluxus.bulkhead(1)
    sink = Memory()

    @fluxus.stack(
        fluxus.fallback(value="busy"),
        fluxus.dead_letter(sink),
        bulkhead,
        fluxus.timeout(0.05),
    )
    def hang():
        release.wait(10)
        return "done"

    try:
        assert "busy" == hang()  # timed out: DeadlineExceeded, answered
        assert 1 == bulkhead.in_use  # the abandoned work still runs
        assert "busy" == hang()  # BulkheadFull, answered
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while bulkhead.in_use and time.monotonic() < deadline:
        time.sleep(0.005)
    assert 0 == bulkhead.in_use
    assert ["DeadlineExceeded", "BulkheadFull"] == [
        letter.error_type.rpartition(".")[2] for letter in sink.letters()
    ]
