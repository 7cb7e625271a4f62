"""Circuits shared through a real redis-server."""

from __future__ import annotations

import asyncio
import math
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import uuid

import fluxus
import pytest
import redis
import redis.asyncio
from fluxus import CircuitState
from fluxus._breaker._circuit import Circuit
from fluxus._config import set_default_storage
from fluxus.instrumentation import (
    CircuitRejected,
    CircuitStateChanged,
    CircuitStorageRecovered,
    CircuitStorageUnavailable,
)
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from _faults import RedisServer
from test_breaker_state_machine import RESET_TIMEOUT, CircuitMachine

pytestmark = pytest.mark.redis

RESET = 0.2


class Service:
    def __init__(self, *errors):
        self.errors = list(errors)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return "ok"


def call(mode, fn):
    try:
        return mode.run(fn)
    except BaseException as exc:
        return exc


@pytest.fixture
def name():
    return f"test-{uuid.uuid4().hex}"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_circuit_lives_in_redis(mode, redis_url, name, events):
    service = Service(OSError("a"), OSError("b"))
    breaker = fluxus.circuit_breaker(2, RESET, name=name, storage=redis_url)
    fn = breaker(mode.make(service))

    outcomes = [call(mode, fn) for _ in range(3)]
    time.sleep(RESET)
    assert "ok" == mode.run(fn)

    assert [OSError, OSError, fluxus.CircuitOpenError] == [type(o) for o in outcomes]
    assert 0 < outcomes[2].retry_after <= RESET
    assert outcomes[1] is breaker.last_error
    assert CircuitState.CLOSED == breaker.state
    assert [
        ("closed", "open", "2 consecutive failures"),
        ("open", "half-open", "reset timeout elapsed"),
        ("half-open", "closed", "1 trial success"),
    ] == [
        (e.old_state, e.new_state, e.reason)
        for e in events
        if isinstance(e, CircuitStateChanged)
    ]
    client = redis.Redis.from_url(redis_url)
    assert b"closed" == client.hget(f"fluxus:breaker:{{{name}}}:state", "state")


def test_a_success_forgets_failures_and_exclusions_count_neither(mode, redis_url, name):
    service = Service(OSError(), None, OSError(), KeyError(), OSError(), OSError())
    # A reset timeout this test never waits for: the last call must find
    # the circuit still open, however slowly a busy machine makes the calls.
    breaker = fluxus.circuit_breaker(
        3, 30.0, exclude=KeyError, name=name, storage=redis_url
    )
    fn = breaker(mode.make(service))

    outcomes = [type(call(mode, fn)) for _ in range(7)]

    assert [
        OSError,
        str,
        OSError,
        KeyError,
        OSError,
        OSError,
        fluxus.CircuitOpenError,
    ] == outcomes


def test_trial_failures_reopen_and_successes_close_after_the_threshold(
    mode, redis_url, name
):
    service = Service(OSError(), OSError(), None, None)
    breaker = fluxus.circuit_breaker(
        1, RESET, success_threshold=2, name=name, storage=redis_url
    )
    fn = breaker(mode.make(service))
    call(mode, fn)
    time.sleep(RESET)

    assert isinstance(call(mode, fn), OSError)  # the trial fails
    assert CircuitState.OPEN == breaker.state
    time.sleep(RESET)
    assert "ok" == mode.run(fn)
    assert CircuitState.HALF_OPEN == breaker.state
    assert "ok" == mode.run(fn)
    assert CircuitState.CLOSED == breaker.state


def test_open_and_reset_by_hand_are_shared(mode, redis_url, name):
    storage = fluxus.CircuitRedisStorage(redis_url, prefix="fluxus-test")
    here = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    there = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    fn = there(mode.make(Service()))

    here.open()
    here.open()
    time.sleep(RESET)
    rejected = call(mode, fn)
    here.reset()
    here.reset()

    assert isinstance(rejected, fluxus.CircuitOpenError)
    assert math.inf == rejected.retry_after
    assert "ok" == mode.run(fn)
    keys = redis.Redis.from_url(redis_url).keys(f"fluxus-test:{{{name}}}:*")
    assert [f"fluxus-test:{{{name}}}:state".encode()] == keys


def test_the_trial_limit_holds_across_breakers(mode, redis_url, name, events):
    first = fluxus.circuit_breaker(1, RESET, name=name, storage=redis_url)
    second = fluxus.circuit_breaker(1, RESET, name=name, storage=redis_url)
    fn = second(mode.make(Service(OSError())))
    call(mode, fn)
    time.sleep(RESET)

    token = first._admit("elsewhere")  # a trial running in another process
    rejected = call(mode, fn)
    first._record_failure(token, KeyboardInterrupt(), "elsewhere")  # neither
    admitted = mode.run(fn)

    assert isinstance(rejected, fluxus.CircuitOpenError)
    assert 0.0 == rejected.retry_after
    assert ["half-open"] == [e.state for e in events if isinstance(e, CircuitRejected)]
    assert "ok" == admitted
    assert CircuitState.CLOSED == first.state


def test_a_crashed_trial_frees_its_slot_after_trial_timeout(mode, redis_url, name):
    # A trial slot lasts 1.5 s: room for the refused call (a new event loop
    # and connection, slow on a busy machine) to come before it expires.
    storage = fluxus.CircuitRedisStorage(redis_url, trial_timeout=1.5)
    crashed = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    alive = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    fn = alive(mode.make(Service(OSError())))
    call(mode, fn)
    time.sleep(RESET)

    crashed._admit("crashed")  # and never reports
    admitted = time.monotonic()
    rejected = call(mode, fn)
    time.sleep(max(0.0, admitted + 1.6 - time.monotonic()))

    assert isinstance(rejected, fluxus.CircuitOpenError)
    assert "ok" == mode.run(fn)
    assert CircuitState.CLOSED == alive.state


def test_a_cancelled_trial_frees_its_slot(redis_url, name):
    breaker = fluxus.circuit_breaker(1, RESET, name=name, storage=redis_url)

    async def main():
        @breaker
        async def fn(fail, block):
            if block:
                await asyncio.Event().wait()
            if fail:
                raise OSError
            return "ok"

        with pytest.raises(OSError):
            await fn(True, False)
        await asyncio.sleep(RESET)
        task = asyncio.ensure_future(fn(False, True))
        for _ in range(50):
            await asyncio.sleep(0.01)
            if CircuitState.HALF_OPEN == breaker.state:
                break
        with pytest.raises(fluxus.CircuitOpenError):
            await fn(False, False)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return breaker.state, await fn(False, False)

    assert (CircuitState.HALF_OPEN, "ok") == asyncio.run(main())


def test_clients_of_either_kind_serve_both_kinds_of_function(redis_url, name):
    sync_client = redis.Redis.from_url(redis_url)
    async_client = redis.asyncio.Redis.from_url(redis_url)
    by_sync = fluxus.circuit_breaker(1, RESET, name=name, storage=sync_client)
    by_async = fluxus.circuit_breaker(1, RESET, name=name, storage=async_client)

    @by_sync
    async def afail():
        raise OSError

    @by_async
    def check():
        return "ok"

    with pytest.raises(OSError):
        asyncio.run(afail())

    with pytest.raises(fluxus.CircuitOpenError):
        check()
    assert "redis://127.0.0.1" in repr(by_sync._storage.storage)


TWIN = textwrap.dedent(
    """
    import sys, time, fluxus
    url, name, role, reset = sys.argv[1:5]
    fluxus.instrumentation.set_hooks([])  # keep stdout for the answers
    breaker = fluxus.circuit_breaker(2, float(reset), name=name, storage=url)

    @breaker
    def work(fail):
        if role == "trial":
            print("trial started", flush=True)
            sys.stdin.readline()
        if fail:
            raise OSError("down")
        return "ok"

    if role == "fail":
        for _ in range(2):
            try:
                work(True)
            except OSError:
                pass
        print(breaker.state.value, flush=True)
    else:
        print(work(False), breaker.state.value, flush=True)
    """
)


def test_two_processes_share_one_circuit(redis_url, name):
    # The reset timeout is an argument of each call (the circuit's opening
    # time is Redis's): the opening is checked with a long one, so a slow
    # start or exit of a process on a loaded machine cannot let it elapse,
    # and the trial with a short one, waited out.
    def twin(role, reset, **kwargs):
        return subprocess.Popen(
            [sys.executable, "-c", TWIN, redis_url, name, role, str(reset)],
            stdout=subprocess.PIPE,
            text=True,
            **kwargs,
        )

    service = Service()
    fn = fluxus.circuit_breaker(2, 60.0, name=name, storage=redis_url)(service)
    short = fluxus.circuit_breaker(2, 0.3, name=name, storage=redis_url)(service)

    failing = twin("fail", 60.0)
    assert "open" == failing.communicate(timeout=30)[0].strip()
    with pytest.raises(fluxus.CircuitOpenError) as opened:
        fn()
    assert opened.value.retry_after > 0
    time.sleep(0.3)
    trial = twin("trial", 0.3, stdin=subprocess.PIPE)
    assert "trial started" == trial.stdout.readline().strip()
    with pytest.raises(fluxus.CircuitOpenError) as info:
        short()  # the other process holds the only trial slot
    out, _ = trial.communicate("go\n", timeout=30)

    assert 0.0 == info.value.retry_after
    assert "ok closed" == out.strip()
    assert "ok" == fn()
    assert 1 == service.calls


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_follows_the_fail_mode(mode, name, events, fail_open):
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    storage = fluxus.CircuitRedisStorage(url, fail_open=fail_open, timeout=0.2)
    breaker = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    service = Service(OSError("boom"))
    fn = breaker(mode.make(service))

    start = time.perf_counter()
    outcomes = [call(mode, fn) for _ in range(3)]
    elapsed = time.perf_counter() - start

    assert elapsed < 2.0
    if fail_open:
        assert [OSError, str, str] == [type(o) for o in outcomes]
        assert CircuitState.CLOSED == breaker.state
    else:
        assert [fluxus.CircuitOpenError] * 3 == [type(o) for o in outcomes]
        assert 0 == service.calls
        assert CircuitState.OPEN == breaker.state
    (down,) = [e for e in events if isinstance(e, CircuitStorageUnavailable)]
    assert (fail_open, "redis.exceptions.ConnectionError") == (
        down.fail_open,
        down.error_type,
    )
    assert "sekrit" not in repr(events) + repr(storage) + repr(outcomes)
    assert "redis://:***@127.0.0.1" in down.storage
    with pytest.raises(ConnectionError, match="Redis is unreachable") as info:
        breaker.reset()
    assert "sekrit" not in str(info.value)


def test_the_breaker_recovers_when_redis_comes_back(tmp_path, name, events):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    storage = fluxus.CircuitRedisStorage(url, fail_open=False, retry_interval=0.05)
    breaker = fluxus.circuit_breaker(1, RESET, name=name, storage=storage)
    fn = breaker(Service())

    with pytest.raises(fluxus.CircuitOpenError):
        fn()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert "ok" == fn()
                break
            except fluxus.CircuitOpenError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert "ok" == asyncio.run(breaker(asyncio.sleep)(0, "ok"))
    finally:
        server.terminate()
        server.wait(timeout=10)

    kinds = [type(e) for e in events]
    assert [CircuitStorageUnavailable, CircuitRejected] == kinds[:2]
    assert CircuitStorageRecovered in kinds


def test_redis_down_async_does_not_hang(name, events):
    url = f"redis://127.0.0.1:{free_port()}/0"
    breaker = fluxus.circuit_breaker(1, RESET, name=name, storage=url)

    @breaker
    async def fn():
        return "ok"

    assert "ok" == asyncio.run(fn())
    assert [CircuitStorageUnavailable] == [type(e) for e in events]


def test_bad_storage_options_fail_when_built(redis_url):
    with pytest.raises(ValueError, match="prefix must be a non-empty string"):
        fluxus.CircuitRedisStorage(redis_url, prefix="")
    with pytest.raises(ValueError, match="timeout"):
        fluxus.CircuitRedisStorage(redis_url, timeout=0)
    with pytest.raises(ValueError, match="target must be a Redis URL"):
        fluxus.CircuitRedisStorage("http://user:pw@host/")


class RedisCircuitUnderTest:
    """The Redis scripts behind the pure Circuit's interface, on a fake clock."""

    def __init__(self, url, failure_threshold, success_threshold, max_trials):
        # A generous timeout: the scripts' answers are under test, not the
        # outage handling, which a slow reply on a loaded machine would trigger.
        storage = fluxus.CircuitRedisStorage(url, timeout=30.0, trial_timeout=1e9)
        settings = Circuit(
            failure_threshold, RESET_TIMEOUT, success_threshold, max_trials
        )
        name = f"model-{uuid.uuid4().hex}"
        self.redis = storage.circuit(settings, lambda: name)
        self.client = storage.sync_client()
        self.keys = self.redis._keys()
        self.max_trials = max_trials
        self.now = 0.0
        self.redis.clock = lambda: self.now

    def admit(self, now):
        self.now = now
        return self.redis.admit("f")

    def succeed(self, token):
        return self.redis.succeed(token, "f")

    def fail(self, token, now):
        self.now = now
        return self.redis.fail(token, "f")

    def release(self, token):
        return self.redis.release(token, "f")

    def reset(self):
        return self.redis.reset()

    def force_open(self, now):
        self.now = now
        return self.redis.force_open()

    def _field(self, field):
        return int(self.client.hget(self.keys[0], field) or 0)

    @property
    def state(self):
        return self.redis.state()

    @property
    def failures(self):
        return self._field("failures")

    @property
    def successes(self):
        return self._field("successes")

    @property
    def trials(self):
        return self.client.zcard(self.keys[1])


@pytest.mark.timeout(240)  # a few thousand scripts on a loaded machine
def test_the_redis_scripts_follow_the_reference_model(redis_url):
    class RedisMachine(CircuitMachine):
        def make_circuit(self, failure_threshold, success_threshold, max_trials):
            return RedisCircuitUnderTest(
                redis_url, failure_threshold, success_threshold, max_trials
            )

    run_state_machine_as_test(
        RedisMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


# -- fail_open on the breaker -------------------------------------------------


@pytest.mark.parametrize("fail_open", [True, False])
def test_the_breakers_fail_open_applies_to_a_url_storage(
    mode, name, events, fail_open, tmp_path
):
    server = RedisServer(tmp_path)
    server.start()
    try:
        breaker = fluxus.circuit_breaker(
            1, RESET, name=name, storage=server.url, fail_open=fail_open
        )
        service = Service()
        fn = breaker(mode.make(service))
        assert "ok" == mode.run(fn)
    finally:
        server.kill()

    outcome = call(mode, fn)

    (down,) = [e for e in events if isinstance(e, CircuitStorageUnavailable)]
    assert fail_open == down.fail_open
    if fail_open:
        assert ("ok", 2) == (outcome, service.calls)
    else:
        assert isinstance(outcome, fluxus.CircuitOpenError)
        assert 1 == service.calls


@pytest.mark.parametrize("fail_open", [True, False])
def test_the_breakers_fail_open_applies_to_the_default_storage(
    mode, name, events, fail_open
):
    set_default_storage(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    try:
        breaker = fluxus.circuit_breaker(1, RESET, name=name, fail_open=fail_open)
        service = Service()
        outcome = call(mode, breaker(mode.make(service)))
    finally:
        set_default_storage(None)

    (down,) = [e for e in events if isinstance(e, CircuitStorageUnavailable)]
    assert fail_open == down.fail_open
    if fail_open:
        assert ("ok", 1) == (outcome, service.calls)
    else:
        assert isinstance(outcome, fluxus.CircuitOpenError)
        assert 0 == service.calls


def test_a_storage_object_keeps_its_own_fail_open(mode, name):
    url = f"redis://127.0.0.1:{free_port()}/0"
    closed = fluxus.CircuitRedisStorage(url, fail_open=False)
    breaker = fluxus.circuit_breaker(1, RESET, name=name, storage=closed)
    service = Service()
    assert isinstance(call(mode, breaker(mode.make(service))), fluxus.CircuitOpenError)
    assert 0 == service.calls
    agreeing = fluxus.CircuitRedisStorage(url, fail_open=False)
    both = fluxus.circuit_breaker(1, RESET, storage=agreeing, fail_open=False)
    assert isinstance(call(mode, both(mode.make(service))), fluxus.CircuitOpenError)


def test_fail_open_false_with_a_storage_that_fails_open_is_refused(redis_url):
    storage = fluxus.CircuitRedisStorage(redis_url)
    with pytest.raises(
        ValueError, match="fail_open=False contradicts the storage's own fail_open=True"
    ):
        fluxus.circuit_breaker(storage=storage, fail_open=False)
