"""Bad configuration fails when the decorator is built, naming the parameter."""

from __future__ import annotations

import fluxus
import pytest
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"attempts": 0}, ValueError, "attempts"),
        ({"attempts": -3}, ValueError, "attempts"),
        ({"attempts": 2.5}, TypeError, "attempts"),
        ({"attempts": True}, TypeError, "attempts"),
        ({"backoff": -1}, TypeError, "backoff"),
        ({"backoff": lambda: 1.0}, TypeError, "backoff"),
        ({"backoff": lambda *, index: 1.0}, TypeError, "backoff"),
        ({"on": ValueError()}, TypeError, "on"),
        ({"on": (OSError, "KeyError")}, TypeError, "on"),
        ({"on": KeyboardInterrupt}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"should_retry": True}, TypeError, "should_retry"),
        ({"on_result": "None"}, TypeError, "on_result"),
        ({"on": fluxus.CircuitOpenError}, ValueError, "on"),
        ({"on": (fluxus.RateLimitExceeded, fluxus.BulkheadFull)}, ValueError, "on"),
        ({"on_exhausted": "raise"}, TypeError, "on_exhausted"),
        ({"budget": 0.2}, TypeError, "budget"),
    ],
)
def test_bad_configuration(kwargs, error, param):
    with pytest.raises(error, match=param):
        fluxus.retry(**kwargs)


@given(st.integers(min_value=1, max_value=10_000))
def test_every_positive_attempt_count_builds(attempts):
    assert attempts == fluxus.retry(attempts).max_attempts


@given(st.integers(max_value=0))
def test_every_non_positive_attempt_count_is_refused(attempts):
    with pytest.raises(ValueError, match="attempts"):
        fluxus.retry(attempts)


def test_the_class_is_the_factory_result():
    assert isinstance(fluxus.retry(), fluxus.Retry)
    assert 3 == fluxus.Retry().max_attempts


@pytest.mark.parametrize("factory", [fluxus.retry, fluxus.Retry])
def test_bare_decorator_says_to_add_parentheses(factory):
    def fetch():
        return 1

    with pytest.raises(TypeError, match=r"use @fluxus\.retry\(\) with parentheses"):
        factory(fetch)


def test_on_mixing_rejections_with_retried_types_builds():
    assert fluxus.retry(on=(fluxus.CircuitOpenError, OSError))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attempts": 0}, "attempts must be >= 1 (the total number of calls), got 0"),
        ({"attempts": "3"}, "attempts must be an int, got '3'"),
        ({"on": ()}, "on must name at least one exception type, got ()"),
        ({"on_result": 1}, "on_result must be a callable or None, got 1"),
        ({"budget": 1}, "budget must be a fluxus.RetryBudget or None, got 1"),
        ({"name": ""}, "name must be a non-empty string, got ''"),
    ],
)
def test_messages_have_one_shape(kwargs, message):
    with pytest.raises((TypeError, ValueError)) as info:
        fluxus.retry(**kwargs)
    assert message == str(info.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"attempts": 2.5},
        {"backoff": 1},
        {"backoff": lambda: 0},
        {"on": "OSError"},
        {"on": fluxus.CircuitOpenError},
        {"should_retry": 1},
        {"on_exhausted": 1},
        {"budget": "b"},
    ],
)
def test_every_message_names_the_parameter_then_the_value(kwargs):
    ((param, value),) = kwargs.items()
    with pytest.raises((TypeError, ValueError)) as info:
        fluxus.retry(**kwargs)
    text = str(info.value)
    assert text.startswith(f"{param} must ")
    assert f", got {value!r}" in text
