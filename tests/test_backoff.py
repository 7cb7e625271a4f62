from __future__ import annotations

import math
from datetime import timedelta

import pytest
from fluxus import backoff
from hypothesis import given
from hypothesis import strategies as st

seconds = st.floats(min_value=0, max_value=1e6, allow_nan=False)
indexes = st.integers(min_value=0, max_value=10_000)


@given(seconds, indexes)
def test_constant_is_constant(delay, i):
    assert delay == backoff.constant(delay)(i)


@given(seconds, indexes)
def test_linear_grows_by_one_step(step, i):
    strategy = backoff.linear(step)
    assert math.isclose(step * (i + 1), strategy(i))
    assert strategy(i + 1) >= strategy(i)


@given(seconds, st.floats(1, 10), st.none() | seconds, indexes)
def test_exponential_is_non_negative_monotone_and_capped(base, factor, cap, i):
    strategy = backoff.exponential(base, factor=factor, max=cap)
    assert 0 <= strategy(i) <= strategy(i + 1)
    if cap is not None:
        assert strategy(i) <= cap


@given(seconds, st.floats(1, 10), seconds, indexes)
def test_full_jitter_stays_between_zero_and_the_exponential(base, factor, cap, i):
    plain = backoff.exponential(base, factor=factor, max=cap)
    jittered = backoff.exponential(base, factor=factor, max=cap, jitter=True)
    assert 0 <= jittered(i) <= plain(i)


def test_exponential_first_values():
    strategy = backoff.exponential(0.1, max=0.5)
    assert [0.1, 0.2, 0.4, 0.5, 0.5] == [strategy(i) for i in range(5)]


def test_exponential_without_cap_overflows_to_infinity():
    assert math.inf == backoff.exponential(1.0)(10_000)


def test_timedelta_durations():
    assert 1.5 == backoff.constant(timedelta(seconds=1.5))(0)
    assert 2.0 == backoff.exponential(1, max=timedelta(seconds=2))(5)


@pytest.mark.parametrize(
    ("build", "error", "param"),
    [
        (lambda: backoff.constant(-1), ValueError, "delay"),
        (lambda: backoff.constant(math.nan), ValueError, "delay"),
        (lambda: backoff.constant("1"), TypeError, "delay"),
        (lambda: backoff.constant(True), TypeError, "delay"),
        (lambda: backoff.linear(-0.1), ValueError, "step"),
        (lambda: backoff.exponential(-1), ValueError, "base"),
        (lambda: backoff.exponential(1, factor=0.5), ValueError, "factor"),
        (lambda: backoff.exponential(1, factor="2"), TypeError, "factor"),
        (lambda: backoff.exponential(1, max=-2), ValueError, "max"),
        (lambda: backoff.exponential(1, jitter="yes"), TypeError, "jitter"),
    ],
)
def test_bad_input_names_the_parameter(build, error, param):
    with pytest.raises(error, match=param):
        build()


def test_which_callables_see_the_error():
    def index_only(retry_index, *, jitter=0.5):
        return jitter

    assert not backoff.takes_error(index_only)
    assert backoff.takes_error(lambda i, error: 0.0)
    assert backoff.takes_error(lambda *args: 0.0)
    assert not backoff.takes_error(backoff.constant(1))
    assert backoff.takes_error(backoff.retry_after())
    assert not backoff.takes_error(max)  # no signature: called with the index


def test_retry_after_reads_timedeltas():
    class Throttled(Exception):
        retry_after = timedelta(seconds=4)

    strategy = backoff.retry_after(lambda i: timedelta(seconds=1.5))
    assert 4.0 == strategy(0, Throttled())
    assert 1.5 == strategy(0, OSError())
