"""The breaker's settings, its pybreaker bridge and its block forms."""

from __future__ import annotations

import pickle

import fluxus
import pybreaker
import pytest
from fluxus import CircuitState
from fluxus.instrumentation import CircuitRejected, CircuitStateChanged

from _clock import Clock


class Boom(Exception):
    pass


class Stop(BaseException):
    pass


def run(mode, fn):
    try:
        return mode.run(fn)
    except BaseException as exc:
        return exc


# -- read-only settings and configure --------------------------------------


@pytest.mark.parametrize(
    ("attr", "value"),
    [
        ("failure_threshold", 1),
        ("reset_timeout", 0.1),
        ("success_threshold", 2),
        ("half_open_max_requests", 3),
    ],
)
def test_settings_are_read_only(attr, value):
    breaker = fluxus.circuit_breaker(5, 30.0)
    before = getattr(breaker, attr)
    with pytest.raises(AttributeError):
        setattr(breaker, attr, value)
    assert getattr(breaker, attr) == before


def test_configure_changes_the_running_circuit(mode):
    clock = Clock()
    breaker = fluxus.circuit_breaker(5, 30.0, clock=clock)
    fn = breaker(mode.make(lambda: (_ for _ in ()).throw(Boom())))
    run(mode, fn)  # builds the storage; one failure counted
    breaker.configure(failure_threshold=2, reset_timeout=0.5)
    assert (breaker.failure_threshold, breaker.reset_timeout) == (2, 0.5)
    assert isinstance(run(mode, fn), Boom)
    assert breaker.state is CircuitState.OPEN
    error = run(mode, fn)
    assert isinstance(error, fluxus.CircuitOpenError)
    assert error.retry_after == pytest.approx(0.5)
    clock.now += 0.5
    breaker.configure(success_threshold=2, half_open_max_requests=2)
    ok = breaker(mode.make(lambda: "ok"))
    assert run(mode, ok) == "ok"
    assert breaker.state is CircuitState.HALF_OPEN
    assert run(mode, ok) == "ok"
    assert breaker.state is CircuitState.CLOSED


def test_configure_in_redis_is_followed_by_the_next_step(redis_url):
    breaker = fluxus.circuit_breaker(
        5, 30.0, storage=redis_url, name=f"configure-{id(redis_url)}"
    )
    fn = breaker(lambda: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        fn()
    breaker.configure(failure_threshold=2)
    with pytest.raises(Boom):
        fn()
    assert breaker.state is CircuitState.OPEN
    breaker.reset()


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"failure_threshold": 0}, ValueError, "failure_threshold must be >= 1, got 0"),
        ({"reset_timeout": -1}, ValueError, "reset_timeout"),
        ({"success_threshold": "2"}, TypeError, "success_threshold must be an int"),
        ({"half_open_max_requests": 0}, ValueError, "half_open_max_requests"),
        (
            {"failure_rate": 1.5},
            ValueError,
            r"failure_rate must be > 0 and <= 1, got 1.5",
        ),
        (
            {"failure_threshold": None},
            ValueError,
            "failure_threshold must be an int >= 1 when",
        ),
        ({"name": "x"}, TypeError, "configure\\(\\) cannot change name"),
    ],
)
def test_configure_validates_like_the_factory(changes, error, match):
    breaker = fluxus.circuit_breaker(3, 1.0)
    with pytest.raises(error, match=match):
        breaker.configure(**changes)
    assert (breaker.failure_threshold, breaker.reset_timeout) == (3, 1.0)


# -- pybreaker bridge --------------------------------------------------------


def test_circuit_open_error_is_a_pybreaker_error_and_keeps_its_shape():
    error = fluxus.CircuitOpenError("db", 1.5)
    assert isinstance(error, pybreaker.CircuitBreakerError)
    assert isinstance(error, fluxus.FluxusError)
    assert str(error) == "circuit 'db' is open; retry after 1.500s"
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (type(copy), copy.name, copy.retry_after) == (
        fluxus.CircuitOpenError,
        "db",
        1.5,
    )
    assert fluxus.is_rejection(error)


class Recorder(pybreaker.CircuitBreakerListener):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def before_call(self, cb, func, *args, **kwargs):
        self.calls.append(("before_call", cb, args, kwargs))

    def success(self, cb):
        self.calls.append(("success", cb))

    def failure(self, cb, exc):
        self.calls.append(("failure", cb, type(exc)))

    def state_change(self, cb, old_state, new_state):
        self.calls.append(("state_change", cb, old_state.name, new_state.name))


def test_pybreaker_listeners_hear_every_step(mode):
    clock = Clock()
    listener = Recorder()
    breaker = fluxus.circuit_breaker(
        2, 1.0, exclude=KeyError, listeners=[listener], clock=clock
    )
    outcomes = iter([None, Boom(), KeyError(), Boom(), None])

    def body(x, y=0):
        error = next(outcomes)
        if error is not None:
            raise error
        return x + y

    fn = breaker(mode.make(body))
    assert run(mode, lambda: fn(1, y=2)) == 3
    assert isinstance(run(mode, lambda: fn(1)), Boom)
    assert isinstance(run(mode, lambda: fn(1)), KeyError)
    assert isinstance(run(mode, lambda: fn(1)), Boom)
    assert isinstance(run(mode, lambda: fn(1)), fluxus.CircuitOpenError)
    clock.now += 1.0
    assert run(mode, lambda: fn(2)) == 2
    assert listener.calls == [
        ("before_call", breaker, (1,), {"y": 2}),
        ("success", breaker),
        ("before_call", breaker, (1,), {}),
        ("failure", breaker, Boom),
        ("before_call", breaker, (1,), {}),  # excluded: neither hook
        ("before_call", breaker, (1,), {}),
        ("failure", breaker, Boom),
        ("state_change", breaker, "closed", "open"),
        ("state_change", breaker, "open", "half-open"),
        ("before_call", breaker, (2,), {}),
        ("success", breaker),
        ("state_change", breaker, "half-open", "closed"),
    ]


def test_pybreaker_listeners_hear_a_redis_breaker(redis_url):
    listener = Recorder()
    breaker = fluxus.circuit_breaker(
        1, 30.0, storage=redis_url, name="listened", listeners=[listener]
    )
    breaker.reset()
    fn = breaker(lambda: (_ for _ in ()).throw(Boom()))
    with pytest.raises(Boom):
        fn()
    assert [call[0] for call in listener.calls] == [
        "before_call",
        "failure",
        "state_change",
    ]
    breaker.reset()


@pytest.mark.parametrize("listeners", [object(), [object()], "abc"])
def test_listeners_must_have_pybreakers_hooks(listeners):
    with pytest.raises(TypeError, match="listeners must be an iterable of pybreaker"):
        fluxus.circuit_breaker(listeners=listeners)


# -- block forms --------------------------------------------------------------


def block_call(mode, breaker, error=None):
    """Run a block (sync or async form) that raises *error* if given."""
    if mode.is_async:

        async def body():
            async with breaker:
                if error is not None:
                    raise error
                return "ok"

        return run(mode, body)

    def sync_body():
        with breaker:
            if error is not None:
                raise error
            return "ok"

    return run(mode, sync_body)


def decorated_call(mode, breaker, error=None):
    def body():
        if error is not None:
            raise error
        return "ok"

    return run(mode, breaker(mode.make(body)))


@pytest.mark.parametrize("form", [block_call, decorated_call])
def test_block_forms_step_the_circuit_like_the_decorator(mode, events, form):
    clock = Clock()
    breaker = fluxus.circuit_breaker(2, 1.0, exclude=KeyError, clock=clock)
    assert form(mode, breaker) == "ok"
    assert isinstance(form(mode, breaker, Boom()), Boom)
    assert isinstance(form(mode, breaker, KeyError()), KeyError)  # neither
    assert isinstance(form(mode, breaker, Stop()), Stop)  # neither
    assert breaker.state is CircuitState.CLOSED
    assert isinstance(form(mode, breaker, Boom()), Boom)
    assert breaker.state is CircuitState.OPEN
    assert isinstance(form(mode, breaker), fluxus.CircuitOpenError)
    clock.now += 1.0
    assert form(mode, breaker) == "ok"
    assert breaker.state is CircuitState.CLOSED
    stats = breaker.stats
    assert (stats.calls, stats.failures, stats.rejections) == (7, 2, 1)
    assert [
        (e.old_state, e.new_state) for e in events if isinstance(e, CircuitStateChanged)
    ] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]
    assert sum(isinstance(e, CircuitRejected) for e in events) == 1


def test_nested_blocks_record_their_own_outcome():
    breaker = fluxus.circuit_breaker(2, 1.0, clock=Clock())
    with breaker:
        with pytest.raises(Boom), breaker:
            raise Boom
        assert breaker._circuit.failures == 1  # the inner block's failure
    assert breaker._circuit.failures == 0  # the outer block's success
    for _ in range(2):
        with pytest.raises(Boom), breaker:
            raise Boom
    assert breaker.state is CircuitState.OPEN


def test_async_blocks_in_a_redis_breaker(redis_url):
    import asyncio

    breaker = fluxus.circuit_breaker(1, 30.0, storage=redis_url, name="async-block")
    breaker.reset()

    async def main():
        async with breaker:
            pass
        with pytest.raises(Boom):
            async with breaker:
                raise Boom
        with pytest.raises(fluxus.CircuitOpenError):
            async with breaker:
                pass

    asyncio.run(main())
    breaker.reset()


def test_listeners_hear_calls_under_a_stack(mode):
    listener = Recorder()
    breaker = fluxus.circuit_breaker(1, 30.0, listeners=[listener])
    retry = fluxus.retry(1)
    fn = fluxus.stack(breaker, retry)(mode.make(lambda x: x))
    assert run(mode, lambda: fn(5)) == 5
    assert [call[0] for call in listener.calls] == ["before_call", "success"]
