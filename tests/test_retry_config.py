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
        ({"backoff": lambda i: -0.5}, ValueError, "backoff"),
        ({"backoff": lambda i: "1s"}, TypeError, "backoff"),
        ({"on": ValueError()}, TypeError, "on"),
        ({"on": (OSError, "KeyError")}, TypeError, "on"),
        ({"on": KeyboardInterrupt}, TypeError, "on"),
        ({"on": ()}, ValueError, "on"),
        ({"should_retry": True}, TypeError, "should_retry"),
        ({"on_exhausted": "raise"}, TypeError, "on_exhausted"),
        ({"budget": 0.2}, TypeError, "budget"),
    ],
)
def test_bad_configuration(kwargs, error, param):
    with pytest.raises(error, match=param):
        fluxus.retry(**kwargs)


@given(st.integers(min_value=1, max_value=10_000))
def test_every_positive_attempt_count_builds(attempts):
    assert attempts == fluxus.retry(attempts).attempts


@given(st.integers(max_value=0))
def test_every_non_positive_attempt_count_is_refused(attempts):
    with pytest.raises(ValueError, match="attempts"):
        fluxus.retry(attempts)


def test_the_class_is_the_factory_result():
    assert isinstance(fluxus.retry(), fluxus.Retry)
    assert 3 == fluxus.Retry().attempts
