"""Configuration mistakes and the message each one gets, one row per mistake.

Every public factory and class refuses bad configuration when it is built
(or when it decorates a function), with one message shape: the parameter,
what it must be, and the value it got (``"<param> must be <what>, got
<value>"``), followed by a hint where one helps (``@fluxus.timeout`` written
without parentheses). A factory and its class say the same thing.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import fluxus
import pytest
from fluxus import backoff, sinks


def job() -> None:
    """A function to decorate."""


async def async_job() -> None:
    """An async function to decorate."""


def login(password: str) -> str:
    """A function with a secret to redact."""
    return password


#: The class each factory is a thin alias of.
CLASSES: dict[str, Callable[..., Any]] = {
    "retry": fluxus.Retry,
    "timeout": fluxus.Timeout,
    "circuit_breaker": fluxus.CircuitBreaker,
    "rate_limit": fluxus.RateLimiter,
    "bulkhead": fluxus.Bulkhead,
    "fallback": fluxus.Fallback,
    "hedge": fluxus.Hedge,
    "dead_letter": fluxus.DeadLetterQueue,
    "stack": fluxus.Stack,
}

R = "redis://127.0.0.1:1/0"
SCHEMES = "redis, redis+cluster, redis+sentinel, redis+unix, rediss"

#: (factory, args, kwargs, error, message): building
#: ``fluxus.<factory>(*args, **kwargs)`` raises *error* with exactly *message*.
BUILT: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    # Mistakes with fluxus.retry.
    (
        "retry",
        (job,),
        {},
        TypeError,
        f"attempts must be an int, got {job!r}: use @fluxus.retry() with parentheses",
    ),
    (
        "retry",
        (0,),
        {},
        ValueError,
        "attempts must be >= 1 (the total number of calls), got 0",
    ),
    ("retry", ("3",), {}, TypeError, "attempts must be an int, got '3'"),
    (
        "retry",
        (),
        {"backoff": 3},
        TypeError,
        (
            "backoff must be None, a callable backoff(retry_index) -> seconds, "
            "a fluxus.backoff strategy or a tenacity wait, got 3"
        ),
    ),
    (
        "retry",
        (),
        {"on": KeyboardInterrupt},
        TypeError,
        (
            "on must be an Exception subclass or a tuple of them (fluxus never "
            "retries BaseExceptions), got <class 'KeyboardInterrupt'>"
        ),
    ),
    (
        "retry",
        (),
        {"on": ()},
        ValueError,
        "on must name at least one exception type, got ()",
    ),
    (
        "retry",
        (),
        {"on": fluxus.CircuitOpenError},
        ValueError,
        (
            "on must name an exception type that can be retried, got "
            "<class 'fluxus.exceptions.CircuitOpenError'>: fluxus's own rejections "
            "(fluxus.is_rejection) are never retried"
        ),
    ),
    (
        "retry",
        (),
        {"should_retry": 1},
        TypeError,
        "should_retry must be a callable or None, got 1",
    ),
    (
        "retry",
        (),
        {"budget": 0.2},
        TypeError,
        "budget must be a fluxus.RetryBudget or None, got 0.2",
    ),
    ("retry", (), {"name": ""}, ValueError, "name must be a non-empty string, got ''"),
    ("retry", (), {"name": 3}, TypeError, "name must be a non-empty string, got 3"),
    # Mistakes with fluxus.timeout.
    (
        "timeout",
        (job,),
        {},
        TypeError,
        (
            f"seconds must be seconds (int, float or timedelta), got {job!r}: "
            "use @fluxus.timeout(5) with parentheses"
        ),
    ),
    ("timeout", (0,), {}, ValueError, "seconds must be finite and > 0 seconds, got 0"),
    (
        "timeout",
        (-1,),
        {},
        ValueError,
        "seconds must be finite and > 0 seconds, got -1",
    ),
    (
        "timeout",
        (float("nan"),),
        {},
        ValueError,
        "seconds must be finite and > 0 seconds, got nan",
    ),
    (
        "timeout",
        ("5s",),
        {},
        TypeError,
        "seconds must be seconds (int, float or timedelta), got '5s'",
    ),
    (
        "timeout",
        (1,),
        {"strategy": "process"},
        ValueError,
        "strategy must be one of 'thread', 'signal', 'cooperative', got 'process'",
    ),
    (
        "timeout",
        (1,),
        {"max_threads": 0},
        ValueError,
        "max_threads must be >= 1, got 0",
    ),
    (
        "timeout",
        (1,),
        {"on_timeout": 1},
        TypeError,
        "on_timeout must be a callable or None, got 1",
    ),
    (
        "timeout",
        (1,),
        {"name": ""},
        ValueError,
        "name must be a non-empty string, got ''",
    ),
    # Mistakes with fluxus.circuit_breaker.
    (
        "circuit_breaker",
        (job,),
        {},
        TypeError,
        (
            f"failure_threshold must be an int, got {job!r}: "
            "use @fluxus.circuit_breaker() with parentheses"
        ),
    ),
    ("circuit_breaker", (0,), {}, ValueError, "failure_threshold must be >= 1, got 0"),
    (
        "circuit_breaker",
        (),
        {"reset_timeout": 0},
        ValueError,
        "reset_timeout must be finite and > 0 seconds, got 0",
    ),
    (
        "circuit_breaker",
        (),
        {"reset_timeout": -1},
        ValueError,
        "reset_timeout must be finite and > 0 seconds, got -1",
    ),
    (
        "circuit_breaker",
        (),
        {"failure_rate": 1.5},
        ValueError,
        "failure_rate must be > 0 and <= 1, got 1.5",
    ),
    (
        "circuit_breaker",
        (None,),
        {},
        ValueError,
        (
            "failure_threshold must be an int >= 1 when failure_rate and "
            "slow_call_duration are None (with no rule the circuit would never "
            "open), got None"
        ),
    ),
    (
        "circuit_breaker",
        (),
        {"fail_open": "no"},
        TypeError,
        "fail_open must be True or False, got 'no'",
    ),
    (
        "circuit_breaker",
        (),
        {"exclude": 3},
        TypeError,
        (
            "exclude must be an exception type, a predicate exc -> bool, or an "
            "iterable of them, got 3"
        ),
    ),
    (
        "circuit_breaker",
        (),
        {"listeners": [1]},
        TypeError,
        (
            "listeners must be an iterable of pybreaker.CircuitBreakerListener "
            "(objects with before_call, success, failure and state_change), got 1 in it"
        ),
    ),
    (
        "circuit_breaker",
        (),
        {"name": ""},
        ValueError,
        "name must be a non-empty string, got ''",
    ),
    (
        "circuit_breaker",
        (),
        {"storage": "ftp://x"},
        ValueError,
        (
            f"storage must be a Redis URL ({SCHEMES}, unix) or a Redis client, "
            "got 'ftp://x'"
        ),
    ),
    (
        "circuit_breaker",
        (),
        {"storage": 3},
        TypeError,
        (
            "storage must be None, a Redis URL, a redis.Redis or redis.asyncio.Redis "
            "client, or a CircuitRedisStorage, got 3"
        ),
    ),
    # Mistakes with fluxus.rate_limit.
    (
        "rate_limit",
        (job,),
        {},
        TypeError,
        (
            "limit must be a rate string such as '10/second' or a number of calls "
            f"per second, got {job!r}: use @fluxus.rate_limit('10/second') with "
            "parentheses"
        ),
    ),
    (
        "rate_limit",
        (0,),
        {},
        ValueError,
        "limit must be a finite number of calls per second > 0, got 0",
    ),
    (
        "rate_limit",
        ("ten a second",),
        {},
        ValueError,
        (
            "limit must be a rate in limits' notation such as '10/second' or "
            "'100 per minute; 10 per second', got 'ten a second'"
        ),
    ),
    (
        "rate_limit",
        ("0/second",),
        {},
        ValueError,
        "limit must allow at least 1 call per period, got '0/second'",
    ),
    (
        "rate_limit",
        (10,),
        {"burst": 0},
        ValueError,
        "burst must be >= 1 (tokens), got 0",
    ),
    (
        "rate_limit",
        ("10/second",),
        {"burst": 5},
        ValueError,
        (
            "burst must be None with limit='10/second' and strategy='fixed-window' "
            "(burst applies to a numeric limit with the token bucket), got 5"
        ),
    ),
    (
        "rate_limit",
        (2.5,),
        {"strategy": "fixed-window"},
        ValueError,
        (
            "limit must be a whole number of calls per second or a string with "
            "strategy='fixed-window' (or use strategy='token-bucket'), got 2.5"
        ),
    ),
    (
        "rate_limit",
        (10,),
        {"strategy": "leaky"},
        ValueError,
        (
            "strategy must be one of token-bucket, sliding-window-counter, "
            "fixed-window, moving-window or None, got 'leaky'"
        ),
    ),
    (
        "rate_limit",
        (10,),
        {"timeout": -1},
        ValueError,
        "timeout must be finite and >= 0 seconds, got -1",
    ),
    (
        "rate_limit",
        (10,),
        {"key": "user"},
        TypeError,
        "key must be a callable or None, got 'user'",
    ),
    (
        "rate_limit",
        (10,),
        {"key_prefix": ""},
        ValueError,
        "key_prefix must be a non-empty string, got ''",
    ),
    (
        "rate_limit",
        (10,),
        {"fail_open": "yes"},
        ValueError,
        "fail_open must be True, False or 'local', got 'yes'",
    ),
    (
        "rate_limit",
        (10,),
        {"fail_open": 1},
        TypeError,
        "fail_open must be True, False or 'local', got 1",
    ),
    ("rate_limit", (10,), {"cost": 0}, ValueError, "cost must be >= 1 (tokens), got 0"),
    (
        "rate_limit",
        (10,),
        {"cost": "1"},
        TypeError,
        "cost must be an int >= 1 or a callable returning one, got '1'",
    ),
    (
        "rate_limit",
        (10,),
        {"burst": 2, "cost": 3, "name": "api"},
        ValueError,
        (
            "cost must be at most 2 (tokens), what rate limit 'api' can ever admit "
            "at once with limit=10 and burst=2, got 3"
        ),
    ),
    (
        "rate_limit",
        (10,),
        {"storage": 3},
        TypeError,
        "storage must be a limits storage URI such as 'memory://', got 3",
    ),
    (
        "rate_limit",
        (10,),
        {"storage": "memcached://:pw@h:11211"},
        ValueError,
        (
            f"storage must be 'memory://' or a Redis URL ({SCHEMES}) with "
            "strategy='token-bucket' (use a string limit with a window strategy for "
            "other storages), got 'memcached://:***@h:11211'"
        ),
    ),
    # Mistakes with fluxus.bulkhead.
    (
        "bulkhead",
        (job,),
        {},
        TypeError,
        (
            f"max_concurrent must be an int, got {job!r}: "
            "use @fluxus.bulkhead(10) with parentheses"
        ),
    ),
    ("bulkhead", (0,), {}, ValueError, "max_concurrent must be >= 1, got 0"),
    (
        "bulkhead",
        (2,),
        {"max_waiting": -1},
        ValueError,
        "max_waiting must be >= 0, got -1",
    ),
    (
        "bulkhead",
        (2,),
        {"max_waiting": 2},
        ValueError,
        (
            "timeout must be > 0 seconds or None with max_waiting=2 (how long a "
            "caller waits), got 0.0"
        ),
    ),
    (
        "bulkhead",
        (2,),
        {"timeout": 1},
        ValueError,
        (
            "timeout must be 0 with max_waiting=0 (no caller waits; give "
            "max_waiting > 0 to let callers wait), got 1"
        ),
    ),
    (
        "bulkhead",
        (2,),
        {"lease": 0},
        ValueError,
        "lease must be finite and > 0 seconds, got 0",
    ),
    (
        "bulkhead",
        (2,),
        {"fail_open": "no"},
        TypeError,
        "fail_open must be True or False, got 'no'",
    ),
    (
        "bulkhead",
        (2,),
        {"fail_open": 0},
        TypeError,
        "fail_open must be True or False, got 0",
    ),
    (
        "bulkhead",
        (2,),
        {"storage": "ftp://h"},
        ValueError,
        (
            "storage must be None, 'memory://' or a redis://, rediss:// or unix:// "
            "URL, got 'ftp://h'"
        ),
    ),
    (
        "bulkhead",
        (2,),
        {"name": ""},
        ValueError,
        "name must be a non-empty string, got ''",
    ),
    # Mistakes with fluxus.fallback.
    (
        "fallback",
        (),
        {},
        TypeError,
        (
            "handler or value must be given, exactly one of them, got neither "
            "(handler=None, value=<no value>)"
        ),
    ),
    (
        "fallback",
        (job,),
        {"value": 1},
        TypeError,
        (
            "handler or value must be given, exactly one of them, got both "
            f"(handler={job!r}, value=1)"
        ),
    ),
    ("fallback", (3,), {}, TypeError, "handler must be a callable or None, got 3"),
    (
        "fallback",
        (),
        {"value": 1, "on": 3},
        TypeError,
        "on must be an Exception subclass or a tuple of them, got 3",
    ),
    # Mistakes with fluxus.hedge.
    (
        "hedge",
        (async_job,),
        {},
        TypeError,
        (
            f"delay must be seconds (int, float or timedelta), got {async_job!r}: "
            "use @fluxus.hedge(0.1) with parentheses"
        ),
    ),
    ("hedge", (-1,), {}, ValueError, "delay must be finite and >= 0 seconds, got -1"),
    ("hedge", (0.1,), {"max_hedges": 0}, ValueError, "max_hedges must be >= 1, got 0"),
    (
        "hedge",
        (0.1,),
        {"budget": 1},
        TypeError,
        "budget must be a fluxus.RetryBudget or None, got 1",
    ),
    # Mistakes with fluxus.dead_letter.
    (
        "dead_letter",
        (3,),
        {},
        TypeError,
        "handler must be a callable handler(letter) or a sink with put(letter), got 3",
    ),
    (
        "dead_letter",
        (print,),
        {"should_dlq": 3},
        TypeError,
        "should_dlq must be a callable or None, got 3",
    ),
    (
        "dead_letter",
        (print,),
        {"redact": 3},
        TypeError,
        "redact must be argument names (strings), got 3",
    ),
    (
        "dead_letter",
        (print,),
        {"redact": ""},
        ValueError,
        "redact must be argument names (identifiers), got ''",
    ),
    (
        "dead_letter",
        (print,),
        {"redact": [3]},
        TypeError,
        "redact must be argument names (strings), got 3",
    ),
    (
        "dead_letter",
        (print,),
        {"reraise": "no"},
        TypeError,
        "reraise must be a bool, got 'no'",
    ),
    # Mistakes with fluxus.stack.
    (
        "stack",
        (job,),
        {},
        TypeError,
        (
            f"policies[0] must be a fluxus policy such as fluxus.retry(), got {job!r}: "
            "use @fluxus.stack(fluxus.retry(), fluxus.timeout(5)) with parentheses, "
            "naming the policies"
        ),
    ),
    ("stack", (), {}, ValueError, "policies must hold at least one policy, got none"),
    (
        "stack",
        (fluxus.retry, fluxus.timeout(1)),
        {},
        TypeError,
        (
            "policies[0] must be a fluxus policy such as fluxus.retry(), got "
            f"{fluxus.retry!r}: call the factory, as in fluxus.retry(...)"
        ),
    ),
    (
        "stack",
        (fluxus.retry(name="r"), 3),
        {},
        TypeError,
        "policies[1] must be a fluxus policy such as fluxus.retry(), got 3",
    ),
    (
        "stack",
        (fluxus.retry(name="a"), fluxus.timeout(1), fluxus.retry(name="b")),
        {},
        ValueError,
        (
            "policies must hold at most one policy of each kind, got two retry "
            "policies: <fluxus.Retry 'a'> and policies[2] <fluxus.Retry 'b'>"
        ),
    ),
    (
        "stack",
        (fluxus.stack(fluxus.retry(name="r")),),
        {},
        TypeError,
        (
            "policies[0] must be a fluxus policy such as fluxus.retry(), got "
            "fluxus.stack(<fluxus.Retry 'r'>): give its policies (stack.policies) "
            "rather than the stack"
        ),
    ),
]


@pytest.mark.parametrize(
    "row", [pytest.param(row, id=f"{row[0]}-{i}") for i, row in enumerate(BUILT)]
)
@pytest.mark.parametrize("through", ["factory", "class"])
def test_a_mistake_gets_its_message(row, through):
    factory, args, kwargs, error, message = row
    build = getattr(fluxus, factory) if through == "factory" else CLASSES[factory]

    with pytest.raises(error) as info:
        build(*args, **kwargs)

    assert message == str(info.value)


#: (what, build, error, message) for the other public classes and for
#: mistakes found when a policy decorates a function or is reconfigured.
OTHERS: list[tuple[str, Callable[[], object], type[Exception], str]] = [
    (
        "CircuitRedisStorage(R, prefix='')",
        lambda: fluxus.CircuitRedisStorage(R, prefix=""),
        ValueError,
        "prefix must be a non-empty string, got ''",
    ),
    (
        "CircuitRedisStorage(R, fail_open='no')",
        lambda: fluxus.CircuitRedisStorage(R, fail_open="no"),
        TypeError,
        "fail_open must be True or False, got 'no'",
    ),
    (
        "CircuitRedisStorage(R, timeout=0)",
        lambda: fluxus.CircuitRedisStorage(R, timeout=0),
        ValueError,
        "timeout must be finite and > 0 seconds, got 0",
    ),
    (
        "CircuitRedisStorage(3)",
        lambda: fluxus.CircuitRedisStorage(3),
        TypeError,
        (
            "target must be None, a Redis URL, a redis.Redis or redis.asyncio.Redis "
            "client, or a CircuitRedisStorage, got 3"
        ),
    ),
    (
        "breaker.configure(failure_threshold=0)",
        lambda: fluxus.circuit_breaker().configure(failure_threshold=0),
        ValueError,
        "failure_threshold must be >= 1, got 0",
    ),
    (
        "fallback(async handler)(sync function)",
        lambda: fluxus.fallback(async_job)(job),
        TypeError,
        (
            f"handler must be a sync callable to serve the sync function "
            f"{__name__}.job, got the async {async_job!r}"
        ),
    ),
    (
        "dead_letter(redact='pasword')(a function taking password)",
        lambda: fluxus.dead_letter(print, redact="pasword")(login),
        ValueError,
        f"redact must name parameters of {__name__}.login (password), got ['pasword']",
    ),
    (
        "RetryBudget(ratio=-1)",
        lambda: fluxus.RetryBudget(ratio=-1),
        ValueError,
        "ratio must be a finite number >= 0, got -1",
    ),
    (
        "RetryBudget(ratio='x')",
        lambda: fluxus.RetryBudget(ratio="x"),
        TypeError,
        "ratio must be a number, got 'x'",
    ),
    (
        "backoff.constant(-1)",
        lambda: backoff.constant(-1),
        ValueError,
        "delay must be finite and >= 0 seconds, got -1",
    ),
    (
        "backoff.exponential(1, factor=0.5)",
        lambda: backoff.exponential(1, factor=0.5),
        ValueError,
        "factor must be a finite number >= 1, got 0.5",
    ),
    (
        "backoff.exponential(1, jitter='yes')",
        lambda: backoff.exponential(1, jitter="yes"),
        TypeError,
        "jitter must be a bool, got 'yes'",
    ),
    (
        "backoff.retry_after(3)",
        lambda: backoff.retry_after(3),
        TypeError,
        "fallback must be None or a backoff strategy, got 3",
    ),
    (
        "sinks.RedisStream(R, maxlen=0)",
        lambda: sinks.RedisStream(R, maxlen=0),
        ValueError,
        "maxlen must be >= 1, got 0",
    ),
    (
        "sinks.RedisStream(R, stream='')",
        lambda: sinks.RedisStream(R, stream=""),
        ValueError,
        "stream must be a non-empty string, got ''",
    ),
    (
        "sinks.RedisStream(R, approximate_trim=True)",
        lambda: sinks.RedisStream(R, approximate_trim=True),
        ValueError,
        "maxlen must be an int >= 1 with approximate_trim=True, got None",
    ),
    (
        "sinks.SQLite(path, table='a b')",
        lambda: sinks.SQLite(":memory:", table="a b"),
        ValueError,
        "table must be an SQL identifier (letters, digits, _), got 'a b'",
    ),
    (
        "sinks.SQLite(path, table=3)",
        lambda: sinks.SQLite(":memory:", table=3),
        TypeError,
        "table must be an SQL identifier (letters, digits, _), got 3",
    ),
    (
        "sinks.JsonlFile('')",
        lambda: sinks.JsonlFile(""),
        ValueError,
        "path must be a file path (str or os.PathLike), got ''",
    ),
    (
        "sinks.SQLite(3)",
        lambda: sinks.SQLite(3),
        TypeError,
        "path must be a file path (str or os.PathLike), got 3",
    ),
    (
        "sinks.Log(level='x')",
        lambda: sinks.Log(level="x"),
        TypeError,
        "level must be a logging level (an int), got 'x'",
    ),
    (
        "sinks.JsonlFile(path in a missing directory)",
        lambda: sinks.JsonlFile("/nonexistent-fluxus-dir/letters.jsonl"),
        FileNotFoundError,
        (
            "[Errno 2] path must be a file that can be written, no such file or "
            "directory: '/nonexistent-fluxus-dir/letters.jsonl'"
        ),
    ),
]


@pytest.mark.parametrize(
    ("what", "build", "error", "message"),
    [pytest.param(*row, id=row[0]) for row in OTHERS],
)
def test_other_mistakes_get_their_message(what, build, error, message):
    del what
    with pytest.raises(error) as info:
        build()

    assert message == str(info.value)


def test_every_public_factory_and_class_has_rows():
    covered = {row[0] for row in BUILT} | {
        row[0].split("(")[0].split(".")[-1] for row in OTHERS
    }
    factories = set(CLASSES) | {"CircuitRedisStorage", "RetryBudget"}
    assert factories <= covered


MISSING_REDIS = """
import sys
sys.modules["redis"] = None
import fluxus, fluxus.sinks
url = "redis://:hunter2@127.0.0.1:1/0"
for build in (
    lambda: fluxus.circuit_breaker(storage=url),
    lambda: fluxus.CircuitRedisStorage(url),
    lambda: fluxus.rate_limit("10/second", storage=url),
    lambda: fluxus.rate_limit(10, storage=url),
    lambda: fluxus.bulkhead(2, storage=url),
    lambda: fluxus.sinks.RedisStream(url),
):
    try:
        build()
    except ImportError as exc:
        print(type(exc).__name__, exc, "|", type(exc.__cause__).__name__)
    except Exception as exc:
        print("wrong", type(exc).__name__, exc)
    else:
        print("built")
"""


def test_a_redis_storage_without_redis_fails_when_built_naming_the_extra():
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MISSING_REDIS)],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )

    extra = "needs redis: pip install 'fluxus[redis]' | ModuleNotFoundError"
    assert [
        f"ImportError a Redis circuit storage {extra}",
        f"ImportError a Redis circuit storage {extra}",
        f"ImportError a Redis rate limit storage {extra}",
        f"ImportError a Redis rate limit storage {extra}",
        f"ImportError a bulkhead with Redis storage {extra}",
        f"ImportError fluxus.sinks.RedisStream {extra}",
    ] == done.stdout.splitlines(), done.stderr


# -- a storage that is down, with fail_open=False ------------------------------


def _closed_port_url() -> str:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://:s3cret@127.0.0.1:{port}/0"


@pytest.mark.parametrize("kind", ["circuit_breaker", "rate_limit"])
@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_a_storage_that_is_down_is_named_in_the_refusal(kind, is_async):
    import asyncio
    import pickle

    url = _closed_port_url()
    if kind == "circuit_breaker":
        policy = fluxus.circuit_breaker(storage=url, fail_open=False)
        expected_type, subject = fluxus.CircuitOpenError, "circuit"
    else:
        policy = fluxus.rate_limit(10, storage=url, fail_open=False)
        expected_type, subject = fluxus.RateLimitExceeded, "rate limit"
    calls = []

    def job():
        calls.append(1)

    async def ajob():
        calls.append(1)

    with pytest.raises(expected_type) as caught:
        if is_async:
            asyncio.run(policy(ajob)())
        else:
            policy(job)()

    error = caught.value
    masked = url.replace("s3cret", "***")
    assert error.storage == masked
    assert str(error).startswith(
        f"{subject} {error.name!r} refused the call: its storage {masked} "
        "is unreachable (fail_open=False); retry after "
    )
    assert "s3cret" not in str(error)
    assert not calls
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.name, copy.storage) == (error.name, error.storage)
    assert str(copy) == str(error)


def test_an_open_circuit_and_a_spent_limit_keep_their_messages():
    assert fluxus.CircuitOpenError("api", 2.0).storage is None
    assert str(fluxus.CircuitOpenError("api", 2.0)) == (
        "circuit 'api' is open; retry after 2.000s"
    )
    assert str(fluxus.RateLimitExceeded("api", 0.5)) == (
        "rate limit 'api' exceeded; retry after 0.500s"
    )
