"""Where rate limiters and breakers without ``storage=`` keep their state.

They use the process's default storage, looked up on their first call
(``FLUXUS_STORAGE_URI`` of the web integrations sets it after the views were
decorated), and a forked child (a gunicorn worker) builds its own storages
instead of inheriting its parent's connections, locks and state.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import fluxus
import pytest
import redis
from fluxus._config import default_storage, set_default_storage
from fluxus._rate_limit import _hold

pytestmark = pytest.mark.timeout(30)


@pytest.fixture(autouse=True)
def memory_default() -> Iterator[None]:
    yield
    set_default_storage(None)


def unique() -> str:
    return f"default-storage-{uuid.uuid4()}"


def admitted(fn: Callable[[], object]) -> bool:
    try:
        fn()
    except fluxus.RateLimitExceeded:
        return False
    return True


def outcome(fn: Callable[[], object]) -> str:
    try:
        return str(fn())
    except Exception as exc:
        return type(exc).__name__


def in_children(body: Callable[[], Any], children: int = 3) -> list[Any]:
    """Run *body* in forked children at once; return what each returned."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()

    def child(i: int) -> None:
        try:
            results.put((i, body()))
        except BaseException as exc:
            results.put((i, f"child failed: {exc!r}"))

    processes = [ctx.Process(target=child, args=(i,)) for i in range(children)]
    with warnings.catch_warnings():
        # Python 3.12+ warns when a process with threads forks; a preloading
        # server forks just like this.
        warnings.simplefilter("ignore", DeprecationWarning)
        for process in processes:
            process.start()
    try:
        answers = dict(results.get(timeout=10) for _ in processes)
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.exitcode is None:
                process.kill()
        results.close()
    return [answers[i] for i in range(children)]


# --- the default storage -----------------------------------------------------


def test_the_default_is_memory():
    limiter = fluxus.rate_limit(1)
    assert ("memory://", "memory://") == (default_storage(), limiter.storage)


@pytest.mark.redis
def test_policies_built_before_the_default_follow_it(mode, redis_url):
    name = unique()
    limiter = fluxus.rate_limit("2/minute", name=name)
    breaker = fluxus.circuit_breaker(1, 30.0, name=name)
    limited = limiter(mode.make(lambda: "ok"))

    @breaker
    @mode.make
    def broken() -> str:
        raise ConnectionError

    set_default_storage(redis_url)
    results = [outcome(lambda: mode.run(limited)) for _ in range(3)]
    results += [outcome(lambda: mode.run(broken)) for _ in range(2)]
    assert ["ok", "ok", "RateLimitExceeded"] == results[:3]
    assert ["ConnectionError", "CircuitOpenError"] == results[3:]
    store = redis.Redis.from_url(redis_url)
    assert b"open" == store.hget(f"fluxus:breaker:{{{name}}}:state", "state")
    assert 1 == len(store.keys(f"*{name}/*"))
    assert redis_url == limiter.storage


@pytest.mark.redis
def test_an_explicit_storage_is_kept(redis_url):
    name = unique()
    limiter = fluxus.rate_limit(1, burst=1, name=name, storage="memory://")
    breaker = fluxus.circuit_breaker(1, 30.0, name=name, storage="memory://")
    set_default_storage(redis_url)
    fn = limiter(breaker(lambda: "ok"))
    assert [True, False] == [admitted(fn), admitted(fn)]
    assert fluxus.CircuitState.CLOSED == breaker.state
    assert [] == redis.Redis.from_url(redis_url).keys(f"*{name}*")
    assert "memory://" == limiter.storage


def test_a_new_default_starts_policies_in_use_afresh():
    limiter = fluxus.rate_limit(1, burst=1, name=unique())
    breaker = fluxus.circuit_breaker(1, 30.0)

    @limiter
    @breaker
    def fail() -> None:
        raise ConnectionError

    results = [outcome(fail), outcome(fail)]
    set_default_storage("memory://")  # the same: nothing changes
    results.append(outcome(fail))
    set_default_storage("memory://?fresh=1")
    results += [outcome(fail), outcome(fail)]
    assert [
        "ConnectionError",
        "RateLimitExceeded",
        "RateLimitExceeded",
        "ConnectionError",  # a new bucket, a closed circuit
        "RateLimitExceeded",
    ] == results
    assert fluxus.CircuitState.OPEN == breaker.state


@pytest.mark.parametrize("result", ["success", "failure", "excluded"])
def test_a_call_running_while_the_default_changes_completes(mode, result):
    breaker = fluxus.circuit_breaker(1, 30.0, exclude=KeyError)

    @breaker
    @mode.make
    def call() -> str:
        set_default_storage(f"memory://?{uuid.uuid4()}")
        if result == "failure":
            raise ConnectionError
        if result == "excluded":
            raise KeyError(result)
        return result

    expected = {"success": "success", "failure": "ConnectionError"}
    assert expected.get(result, "KeyError") == outcome(lambda: mode.run(call))
    assert ("open" if result == "failure" else "closed") == breaker.state.value


def test_the_first_step_may_be_a_control(mode):
    opened = fluxus.circuit_breaker(1, 30.0)
    opened.open()
    closed = fluxus.circuit_breaker(1, 30.0)
    closed.reset()
    fn = opened(mode.make(lambda: "ok"))
    assert "CircuitOpenError" == outcome(lambda: mode.run(fn))
    assert fluxus.CircuitState.CLOSED == closed.state


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: fluxus.rate_limit(5), r"the default storage must be .*token-bucket"),
        (fluxus.circuit_breaker, r"default storage.*memcached://"),
    ],
)
def test_a_default_a_policy_cannot_use_fails_its_calls(make, match):
    policy = make()
    fn = policy(lambda: "ok")
    set_default_storage("memcached://127.0.0.1:9")
    with pytest.raises(ValueError, match=match):
        fn()


def test_limits_unix_socket_spelling_is_a_redis_default_for_breakers(tmp_path):
    breaker = fluxus.circuit_breaker(1, 30.0, name=unique())
    set_default_storage(f"redis+unix://{tmp_path}/none.sock")
    fn = breaker(lambda: "ok")
    assert "ok" == fn()  # fail open: the socket does not exist
    assert "unix://" in repr(breaker._storage.storage)


class Interrupted(BaseException):
    """Stands in for a signal or a cancellation ending a wait."""


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    return str(request.getfixturevalue("redis_url"))


def test_a_first_use_may_peek_or_wait_and_give_its_slot_back(
    storage, mode, monkeypatch
):
    name = unique()
    # One token every 5 s: what a loaded machine takes between two steps is
    # far less than the one interval a slot not given back would add.
    first = fluxus.rate_limit(0.2, burst=1, timeout=None, storage=storage, name=name)
    first.acquire()  # the budget the next limiters share is spent

    def limiter() -> fluxus.RateLimiter:
        return fluxus.rate_limit(0.2, burst=1, timeout=None, storage=storage, name=name)

    def interrupted(ticket: object, seconds: float) -> bool:
        raise Interrupted

    async def interrupted_async(ticket: object, seconds: float) -> bool:
        raise Interrupted

    monkeypatch.setattr(_hold, "_ticket_wait", interrupted)
    monkeypatch.setattr(_hold, "_ticket_wait_async", interrupted_async)
    if mode.is_async:
        allowed = asyncio.run(limiter().allow_async())
        waiter = limiter().acquire_async
    else:
        allowed = limiter().allow()
        waiter = limiter().acquire
    with pytest.raises(Interrupted):
        mode.run(waiter)
    with pytest.raises(fluxus.RateLimitExceeded) as info:
        first.acquire(timeout=0)
    assert (False, True) == (allowed, 3.0 < info.value.retry_after <= 5.0)


# --- after a fork ------------------------------------------------------------


def test_forked_children_start_with_fresh_memory_state():
    bucket = fluxus.rate_limit(1, burst=2)
    window = fluxus.rate_limit("2/minute")
    breaker = fluxus.circuit_breaker(1, 60.0)
    take, hit = bucket(lambda: "ok"), window(lambda: "ok")

    @breaker
    def call(fail: bool) -> str:
        if fail:
            raise ConnectionError
        return "ok"

    parent = [admitted(take) for _ in range(3)] + [admitted(hit) for _ in range(3)]
    parent.append(outcome(lambda: call(True)))
    # As if other threads were inside the stores when the server forked:
    # the children must not wait for locks nobody will ever release.
    bucket._plan.store._lock.acquire()
    breaker._storage.lock.acquire()
    try:
        children = in_children(
            lambda: (
                [admitted(take) for _ in range(3)],
                [admitted(hit) for _ in range(3)],
                outcome(lambda: call(False)),
                breaker.state.value,
            )
        )
    finally:
        bucket._plan.store._lock.release()
        breaker._storage.lock.release()
    assert [True, True, False] * 2 + ["ConnectionError"] == parent
    expected = ([True, True, False], [True, True, False], "ok", "closed")
    assert [expected] * 3 == children
    assert ["CircuitOpenError", False] == [outcome(lambda: call(False)), admitted(hit)]


def redis_client_id(client: Any) -> int:
    return int(client.client_id())


@pytest.mark.redis
def test_forked_children_share_a_redis_limit_without_sharing_a_connection(
    redis_url,
):
    limiter = fluxus.rate_limit(0.01, burst=6, storage=redis_url, name=unique())
    take = limiter(lambda: "ok")

    async def atake() -> str:
        return "ok"

    atake = limiter(atake)

    def child() -> tuple[list[bool], int]:
        calls = [admitted(take), admitted(take)]
        calls.append(admitted(lambda: asyncio.run(atake())))
        return calls, redis_client_id(limiter._plan.store._client())

    assert admitted(take)
    parent_id = redis_client_id(limiter._plan.store._client())
    children = in_children(child)
    calls = [call for answer, _ in children for call in answer]
    ids = {client_id for _, client_id in children}
    assert (5, 4) == (calls.count(True), calls.count(False))
    assert (3, False) == (len(ids), parent_id in ids)
    assert not admitted(take)


@pytest.mark.redis
def test_forked_children_share_a_circuit_through_the_default_storage(redis_url):
    set_default_storage(redis_url)
    breaker = fluxus.circuit_breaker(3, 60.0, name=unique())

    @breaker
    def fail() -> None:
        raise ConnectionError

    def child() -> tuple[str, int]:
        result = outcome(fail)  # builds the child's own storage
        return result, redis_client_id(breaker._storage.storage.sync_client())

    assert "ConnectionError" == outcome(fail)
    parent_id = redis_client_id(breaker._storage.storage.sync_client())
    children = in_children(child, children=2)
    assert ["ConnectionError"] * 2 == [result for result, _ in children]
    ids = {client_id for _, client_id in children}
    assert (2, False) == (len(ids), parent_id in ids)
    assert ["CircuitOpenError", "open"] == [outcome(fail), breaker.state.value]
