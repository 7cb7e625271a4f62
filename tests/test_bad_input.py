"""Bad input: fuzzed configuration, rate strings and corrupt dead letter stores.

Every factory either builds or raises ValueError/TypeError naming the
parameter it was given; every valid configuration builds; the ``dlq`` command
reads what is readable in a damaged store, reports the rest and exits with
a message, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fluxus
import pytest
from fluxus import backoff
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _figures import record

#: tox -e soak fuzzes 25 times longer.
SOAK = os.environ.get("FLUXUS_SOAK") == "1"
FUZZ = settings(
    max_examples=1000 if SOAK else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

#: Anything a confused caller might pass.
anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.timedeltas(),
    st.lists(st.integers(), max_size=3),
    st.tuples(st.integers()),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from([object(), ValueError, int, len, Exception("x"), ...]),
)
seconds = st.one_of(
    st.floats(0.001, 1e6),
    st.integers(1, 10**6),
    st.timedeltas(dt.timedelta(milliseconds=1), dt.timedelta(days=30)),
)
non_negative = st.one_of(st.floats(0, 1e6), st.integers(0, 10**6))
count = st.integers(1, 10**6)
maybe_callable = st.sampled_from([None, lambda *a: None, len])


def _handler(letter: Any) -> None:
    """Accept a letter."""


#: factory, fixed arguments, {parameter: strategy of valid values}.
FACTORIES: dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, Any]]] = {
    "retry": (
        fluxus.retry,
        {},
        {
            "attempts": count,
            "backoff": st.sampled_from(
                [None, backoff.constant(0.1), backoff.exponential(0.1), lambda i: 0.0]
            ),
            "on": st.sampled_from([Exception, (OSError, ValueError), TimeoutError]),
            "should_retry": maybe_callable,
            "on_result": maybe_callable,
            "on_exhausted": maybe_callable,
            "budget": st.sampled_from([None, fluxus.RetryBudget()]),
        },
    ),
    "timeout": (
        fluxus.timeout,
        {"seconds": 1.0},
        {
            "seconds": seconds,
            "strategy": st.sampled_from(["thread", "signal", "cooperative"]),
            "on_timeout": maybe_callable,
            "max_threads": st.integers(1, 1000),
            "name": st.text(min_size=1, max_size=10),
        },
    ),
    "circuit_breaker": (
        fluxus.circuit_breaker,
        {},
        {
            "failure_threshold": count,
            "reset_timeout": seconds,
            "success_threshold": count,
            "half_open_max_requests": count,
            "exclude": st.sampled_from([(), KeyError, (KeyError, OSError), None]),
            "name": st.text(min_size=1, max_size=10),
            "storage": st.sampled_from([None, "memory://"]),
        },
    ),
    "rate_limit": (
        fluxus.rate_limit,
        {"limit": 10},
        {
            "limit": st.one_of(
                st.floats(0.001, 1e6),
                st.integers(1, 10**6),
                st.sampled_from(["10/second", "100 per minute", "1/hour;5/day"]),
            ),
            "burst": st.one_of(st.none(), count),
            "timeout": st.one_of(st.none(), non_negative),
            "key": st.sampled_from([None, lambda *a, **k: "k"]),
            "name": st.text(min_size=1, max_size=10),
            "storage": st.just("memory://"),
        },
    ),
    "dead_letter": (
        fluxus.dead_letter,
        {"handler": _handler},
        {
            "handler": st.sampled_from([_handler, fluxus.sinks.Memory()]),
            "should_dlq": maybe_callable,
            "on_handler_error": maybe_callable,
            "reraise": st.booleans(),
            "redact": st.sampled_from([(), "token", ["a", "b"]]),
        },
    ),
    "RetryBudget": (
        fluxus.RetryBudget,
        {},
        {"ratio": non_negative, "min_per_second": non_negative},
    ),
    "constant": (backoff.constant, {"delay": 1.0}, {"delay": non_negative}),
    "linear": (backoff.linear, {"step": 1.0}, {"step": non_negative}),
    "exponential": (
        backoff.exponential,
        {"base": 1.0},
        {
            "base": non_negative,
            "factor": st.floats(1, 100),
            "max": st.one_of(st.none(), non_negative),
            "jitter": st.booleans(),
        },
    ),
}

PARAMETERS = [
    pytest.param(factory, param, id=f"{factory}-{param}")
    for factory, (_, _, params) in FACTORIES.items()
    for param in params
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("factory", "param"), PARAMETERS)
@FUZZ
@given(data=st.data())
def test_any_value_builds_or_is_refused_by_name(
    factory: str, param: str, data: st.DataObject
) -> None:
    build, fixed, _ = FACTORIES[factory]
    value = data.draw(anything, label=param)
    try:
        build(**(fixed | {param: value}))
    except (TypeError, ValueError) as exc:
        assert param in str(exc), (param, value, exc)  # noqa: PT017 - it may build
        record(bad_input_refused=1)
    except Exception as exc:  # pragma: no cover - what the test is for
        pytest.fail(f"{factory}({param}={value!r}) raised {exc!r}")
    else:
        record(bad_input_accepted=1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("factory", list(FACTORIES))
@FUZZ
@given(data=st.data())
def test_every_valid_configuration_builds(factory: str, data: st.DataObject) -> None:
    build, fixed, params = FACTORIES[factory]
    chosen = data.draw(st.fixed_dictionaries({}, optional=params))
    if factory == "rate_limit" and not isinstance(
        chosen.get("limit", fixed["limit"]), int | float
    ):
        chosen.pop("burst", None)  # burst is for numeric rates
    build(**(fixed | chosen))
    record(valid_configurations_built=1)


@FUZZ
@given(policies=st.lists(st.sampled_from([*range(5), None, "retry"]), max_size=6))
def test_stack_builds_or_is_refused_by_name(policies: list[Any]) -> None:
    makers = [
        lambda: fluxus.retry(2),
        lambda: fluxus.timeout(1),
        fluxus.circuit_breaker,
        lambda: fluxus.rate_limit(10),
        lambda: fluxus.dead_letter(_handler),
    ]
    given_ = [makers[p]() if isinstance(p, int) else p for p in policies]
    try:
        fluxus.stack(*given_)
    except (TypeError, ValueError) as exc:
        assert "policies" in str(exc)  # noqa: PT017 - it may build
        record(bad_input_refused=1)
    else:
        kinds = [p for p in policies if isinstance(p, int)]
        assert len(kinds) == len(set(kinds)) == len(policies) > 0


rate_words = st.sampled_from(
    ["second", "seconds", "minute", "hour", "day", "month", "year", "per", "/"]
)
rate_strings = st.one_of(
    st.text(max_size=30),
    st.builds(
        lambda n, sep, unit, more: f"{n}{sep}{unit}{more}",
        st.one_of(st.integers(-5, 10**9).map(str), st.text(max_size=4)),
        st.sampled_from(["/", " per ", " ", "", "//"]),
        rate_words,
        st.sampled_from(["", ";", "; 5/second", ",", ";;", " 2"]),
    ),
)


@FUZZ
@given(limit=rate_strings)
def test_fuzzed_rate_strings_build_or_are_refused_by_name(limit: str) -> None:
    try:
        limiter = fluxus.rate_limit(limit)
    except (TypeError, ValueError) as exc:
        assert "limit" in str(exc), (limit, exc)  # noqa: PT017 - it may build
        record(bad_input_refused=1)
    else:
        assert limiter.allow() in (True, False)
        record(bad_input_accepted=1)


# -- corrupt stores through the CLI ----------------------------------------


def _letter_line(n: int) -> str:
    sink = fluxus.sinks.Memory()

    @fluxus.dead_letter(sink)
    def fail(n: int) -> None:
        raise ValueError(n)

    with pytest.raises(ValueError, match=str(n)):
        fail(n)
    return fluxus.sinks._codec.encode(next(iter(sink.letters())))


def _dlq(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fluxus", "dlq", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


JSONL_DAMAGE = {
    "torn-last-line": lambda good: [*good, good[0][: len(good[0]) // 2]],
    "garbage-between": lambda good: [good[0], "\x00\xff not json", good[1]],
    "json-not-a-letter": lambda good: [good[0], json.dumps([1, 2]), '{"id": 3}'],
    "wrong-types": lambda good: [
        good[0],
        json.dumps(json.loads(good[1]) | {"args": 5, "failed_at": "yesterday"}),
    ],
    "missing-fields": lambda good: [
        json.dumps({k: v for k, v in json.loads(good[0]).items() if k != "function"}),
        good[1],
    ],
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", list(JSONL_DAMAGE))
def test_the_cli_lists_what_a_damaged_jsonl_file_still_holds(
    tmp_path: Path, damage: str
) -> None:
    good = [_letter_line(1), _letter_line(2)]
    lines = JSONL_DAMAGE[damage](good)
    path = tmp_path / "letters.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape") + b"\n")
    readable = [line for line in lines if line in good]
    done = _dlq("list", str(path))
    assert "Traceback" not in done.stderr
    assert 0 == done.returncode, done.stderr
    assert len(readable) == sum(
        json.loads(line)["id"] in done.stdout for line in readable
    )
    assert "warning" in done.stderr
    record(corrupt_stores_read=1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "damage", ["garbage-file", "truncated", "foreign-table", "bad-rows", "empty"]
)
def test_the_cli_survives_a_damaged_sqlite_database(
    tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "letters.db"
    sink = fluxus.sinks.SQLite(path)

    @fluxus.dead_letter(sink)
    def fail(n: int) -> None:
        raise ValueError(n)

    for n in range(3):
        with pytest.raises(ValueError, match=str(n)):
            fail(n)
    data = path.read_bytes()
    if damage == "garbage-file":
        path.write_bytes(b"SQLite format 3\x00" + b"\xde\xad" * 600)
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "foreign-table":
        path.unlink()
        with sqlite3.connect(path) as db:
            db.execute("create table other (x)")
    elif damage == "bad-rows":
        with sqlite3.connect(path) as db:
            db.execute(f"update {sink.table} set rowid = rowid")  # noqa: S608 - the sink's own table
            columns = [row[1] for row in db.execute(f"pragma table_info({sink.table})")]
            text = next(c for c in columns if c not in {"id", "rowid", "seq"})
            db.execute(
                f"update {sink.table} set {text} = 'not json' where rowid = 1"  # noqa: S608 - the sink's own table
            )
    else:
        path.write_bytes(b"")
    done = _dlq("list", str(path))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode in (0, 1), done.stderr
    if done.returncode:
        assert done.stderr.strip()  # a message says what is wrong
    record(corrupt_stores_read=1)


def test_a_backoff_is_not_called_when_the_decorator_is_built() -> None:
    indexes: list[int] = []
    fluxus.retry(3, backoff=indexes.append)
    assert [] == indexes
