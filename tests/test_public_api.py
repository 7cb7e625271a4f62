from __future__ import annotations

import subprocess
import sys

import fluxus
from fluxus import exceptions, instrumentation, testing


def test_all_is_sorted_and_complete():
    for module in (fluxus, exceptions, instrumentation, testing, fluxus.backoff):
        assert sorted(module.__all__) == module.__all__
        for name in module.__all__:
            assert getattr(module, name) is not None


def test_import_fluxus_alone_makes_the_namespaces_usable():
    code = (
        "import fluxus; fluxus.backoff.constant(1); fluxus.testing.set_testing; "
        "fluxus.instrumentation.get_hooks()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_error_tree():
    assert issubclass(fluxus.CircuitOpenError, fluxus.FluxusError)
    assert issubclass(fluxus.RateLimitExceeded, fluxus.FluxusError)
    assert issubclass(fluxus.DeadlineExceeded, fluxus.FluxusError)
    assert issubclass(fluxus.DeadlineExceeded, TimeoutError)
    assert issubclass(fluxus.LayeringWarning, Warning)


def test_errors_carry_their_numbers_and_pickle():
    import pickle

    for error in (
        fluxus.CircuitOpenError("db", 2.5),
        fluxus.RateLimitExceeded("api", 0.25),
        fluxus.DeadlineExceeded("slow", 1.0),
    ):
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
        assert (type(error), str(error)) == (type(clone), str(clone))
    assert (2.5, "db") == (
        fluxus.CircuitOpenError("db", 2.5).retry_after,
        fluxus.CircuitOpenError("db", 2.5).name,
    )


def test_remaining_is_none_without_a_deadline():
    assert fluxus.remaining() is None


def test_rejections_are_fluxus_refusals_and_nothing_else():
    rejections = (
        fluxus.CircuitOpenError("db", 2.5),
        fluxus.RateLimitExceeded("api", 0.25),
        fluxus.BulkheadFull("pool", 4),
        fluxus.ThreadsExhausted("slow", 1.0, 32),
    )
    others = (
        fluxus.DeadlineExceeded("slow", 1.0),
        fluxus.FluxusError("x"),
        TimeoutError(),
        ValueError(),
        KeyboardInterrupt(),
    )

    assert [True] * 4 == [fluxus.is_rejection(e) for e in rejections]
    assert [False] * 5 == [fluxus.is_rejection(e) for e in others]
    assert not isinstance(rejections[3], fluxus.DeadlineExceeded)
    assert [None, None] == [e.retry_after for e in rejections[2:]]
    assert issubclass(fluxus.TransactionWarning, UserWarning)


def test_new_rejections_pickle():
    import pickle

    for error in (fluxus.BulkheadFull("pool", 4), fluxus.ThreadsExhausted("s", 1, 2)):
        clone = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
        assert (type(error), str(error)) == (type(clone), str(clone))


def test_each_factory_takes_exactly_its_class_parameters():
    import inspect

    pairs = {
        fluxus.retry: fluxus.Retry,
        fluxus.timeout: fluxus.Timeout,
        fluxus.circuit_breaker: fluxus.CircuitBreaker,
        fluxus.rate_limit: fluxus.RateLimiter,
        fluxus.bulkhead: fluxus.Bulkhead,
        fluxus.fallback: fluxus.Fallback,
        fluxus.hedge: fluxus.Hedge,
        fluxus.dead_letter: fluxus.DeadLetterQueue,
        fluxus.stack: fluxus.Stack,
    }
    for factory, cls in pairs.items():
        shown = inspect.signature(factory)
        assert list(inspect.signature(cls).parameters.values()) == list(
            shown.parameters.values()
        ), factory.__name__
        assert cls.__name__ == shown.return_annotation
        assert factory.__module__ == cls.__module__
        assert factory.__doc__.startswith("Return a ")
    policy = fluxus.circuit_breaker(3, 1.5, name="api", success_threshold=2)
    assert (fluxus.CircuitBreaker, 3, 1.5, 2, "api") == (
        type(policy),
        policy.failure_threshold,
        policy.reset_timeout,
        policy.success_threshold,
        policy.name,
    )
