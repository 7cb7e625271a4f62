from __future__ import annotations

import threading

import pytest
from fluxus import RetryBudget
from hypothesis import example, given
from hypothesis import strategies as st

from _clock import Clock


def test_min_per_second_allows_retries_without_traffic():
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, clock=Clock(100.0))
    assert 10 == budget.available()
    assert all(budget.try_spend() for _ in range(10))
    assert not budget.try_spend()


def test_first_attempts_earn_retries_at_the_ratio():
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, clock=Clock(100.0))
    for _ in range(10):
        budget.record_attempt()
    assert 5 == budget.available()


def test_window_slides():
    clock = Clock(100.0)
    budget = RetryBudget(ratio=0.0, min_per_second=0.1, clock=clock)
    assert budget.try_spend()
    assert not budget.try_spend()
    clock.now += 9.5
    assert not budget.try_spend()
    clock.now += 1
    assert budget.try_spend()


@given(
    st.floats(0, 5),
    st.floats(0, 5),
    st.lists(st.tuples(st.sampled_from(["attempt", "retry"]), st.floats(0, 3))),
)
@example(1.0, 0.0, [("attempt", 0), ("attempt", 0)] + [("retry", 4), ("retry", 3)] * 2)
def test_retries_never_exceed_the_budget(ratio, per_second, steps):
    clock = Clock(0.0)
    budget = RetryBudget(ratio=ratio, min_per_second=per_second, clock=clock)
    history = []  # (time, kind) of what the budget let through
    for kind, advance in steps:
        clock.now += advance
        if kind == "attempt":
            budget.record_attempt()
            history.append((clock.now, "attempt"))
        elif budget.try_spend():
            history.append((clock.now, "retry"))
            # Each granted retry is paid for by the window as it stands now.
            recent = [k for t, k in history if int(t) > int(clock.now) - 10]
            allowed = ratio * recent.count("attempt") + per_second * 10
            assert recent.count("retry") <= allowed


def test_threads_spend_exactly_the_budget():
    budget = RetryBudget(ratio=0.0, min_per_second=100.0, clock=Clock(100.0))
    granted = []

    def spend():
        granted.extend(1 for _ in range(200) if budget.try_spend())

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert 1000 == len(granted)


@pytest.mark.parametrize(
    ("kwargs", "error", "param"),
    [
        ({"ratio": -0.1}, ValueError, "ratio"),
        ({"ratio": "0.2"}, TypeError, "ratio"),
        ({"min_per_second": float("inf")}, ValueError, "min_per_second"),
        ({"clock": 3}, TypeError, "clock"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, error, param):
    with pytest.raises(error, match=param):
        RetryBudget(**kwargs)


def test_repr():
    assert "RetryBudget(ratio=0.2, min_per_second=10.0)" == repr(RetryBudget())
