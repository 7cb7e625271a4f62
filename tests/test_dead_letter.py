from __future__ import annotations

import asyncio
import inspect
import logging
from datetime import UTC

import fluxus
import pytest
from fluxus.instrumentation import DeadLettered, DeadLetterHandlerFailed
from fluxus.sinks import Memory

#: The ``mode`` fixture runs the async bodies under trio as well.
MODES = ("sync", "async", "trio")


class Boom:
    """Raise the given exception on every call; count the calls."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        raise self.error


def ok(*args, **kwargs):
    return "ok"


def test_success_passes_through_without_a_letter(mode, events):
    sink = Memory()
    fn = fluxus.dead_letter(sink)(mode.make(ok))

    assert "ok" == mode.run(fn, 1, key="v")
    assert [] == list(sink.letters())
    assert [] == events


def test_failure_becomes_a_letter_and_the_original_is_reraised(mode, events):
    sink = Memory()
    error = ValueError("bad order")
    fn = fluxus.dead_letter(sink)(mode.make(Boom(error)))

    with pytest.raises(ValueError, match="bad order") as info:
        mode.run(fn, 1, "two", qty=3)

    assert error is info.value
    (letter,) = sink.letters()
    assert ((1, "two"), {"qty": 3}) == (letter.args, letter.kwargs)
    assert error is letter.error
    assert ("builtins.ValueError", "bad order") == (
        letter.error_type,
        letter.error_message,
    )
    assert letter.function.endswith("Boom")
    assert "ValueError: bad order" in letter.traceback
    assert UTC == letter.failed_at.tzinfo
    assert letter.replayable
    assert [f"fluxus.dead_letter kept this call as letter {letter.id}"] == (
        error.__notes__
    )
    (event,) = events
    assert isinstance(event, DeadLettered)
    assert (letter.id, "builtins.ValueError", "bad order") == (
        event.letter_id,
        event.error_type,
        event.error_message,
    )


def test_letter_ids_are_unique(mode):
    sink = Memory()
    fn = fluxus.dead_letter(sink)(mode.make(Boom(OSError("x"))))
    for _ in range(20):
        with pytest.raises(OSError):
            mode.run(fn)
    assert 20 == len({letter.id for letter in sink.letters()})


def test_reraise_false_returns_default(mode):
    sink = Memory()
    fn = fluxus.dead_letter(sink, reraise=False, default="queued")(
        mode.make(Boom(KeyError("k")))
    )

    assert "queued" == mode.run(fn)
    assert 1 == len(sink)


@pytest.mark.parametrize(
    "error",
    [
        fluxus.CircuitOpenError("db", 1.0),
        fluxus.RateLimitExceeded("api", 0.5),
        fluxus.DeadlineExceeded("slow", 2.0),
    ],
)
def test_fluxus_rejections_are_kept_by_default(mode, error):
    sink = Memory()
    fn = fluxus.dead_letter(sink)(mode.make(Boom(error)))

    with pytest.raises(type(error)):
        mode.run(fn, "order-1")

    (letter,) = sink.letters()
    assert (f"fluxus.exceptions.{type(error).__name__}", ("order-1",)) == (
        letter.error_type,
        letter.args,
    )


def test_should_dlq_narrows(mode):
    sink = Memory()
    policy = fluxus.dead_letter(sink, should_dlq=lambda e: isinstance(e, OSError))
    kept = policy(mode.make(Boom(OSError("kept"))))
    ignored = policy(mode.make(Boom(ValueError("ignored"))))

    with pytest.raises(OSError):
        mode.run(kept)
    with pytest.raises(ValueError):
        mode.run(ignored)

    assert ["kept"] == [letter.error_message for letter in sink.letters()]


def test_keyboard_interrupt_is_never_kept():
    sink = Memory()
    fn = fluxus.dead_letter(sink)(Boom(KeyboardInterrupt()))

    with pytest.raises(KeyboardInterrupt):
        fn()
    assert 0 == len(sink)


def test_cancellation_is_never_kept():
    sink = Memory()

    @fluxus.dead_letter(sink)
    async def slow():
        await asyncio.sleep(10)

    async def main():
        task = asyncio.create_task(slow())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert 0 == len(sink)


def test_a_plain_callable_handler(mode):
    received = []
    fn = fluxus.dead_letter(received.append)(mode.make(Boom(OSError("x"))))

    with pytest.raises(OSError):
        mode.run(fn, 5)

    assert [(5,)] == [letter.args for letter in received]


def test_an_async_handler_serves_async_functions():
    received = []

    async def handler(letter):
        await asyncio.sleep(0)
        received.append(letter)

    @fluxus.dead_letter(handler)
    async def fails(x):
        raise OSError(x)

    with pytest.raises(OSError):
        asyncio.run(fails(1))
    assert [(1,)] == [letter.args for letter in received]


def test_an_async_handler_cannot_serve_a_sync_function():
    async def handler(letter):
        pass

    with pytest.raises(TypeError, match="got the async"):
        fluxus.dead_letter(handler)(ok)


def test_a_sink_aput_is_used_for_async_functions():
    calls = []

    class Sink:
        def put(self, letter):
            calls.append("put")

        async def aput(self, letter):
            calls.append("aput")

    @fluxus.dead_letter(Sink())
    async def fails():
        raise OSError

    with pytest.raises(OSError):
        asyncio.run(fails())
    assert ["aput"] == calls


def test_failing_handler_keeps_the_callers_exception(mode, events):
    handler_error = RuntimeError("disk full")
    reported = []

    def handler(letter):
        raise handler_error

    error = ValueError("original")
    fn = fluxus.dead_letter(handler, on_handler_error=reported.append)(
        mode.make(Boom(error))
    )

    with pytest.raises(ValueError) as info:
        mode.run(fn)

    assert error is info.value
    assert not hasattr(error, "__notes__")
    assert [handler_error] == reported
    (event,) = events
    assert isinstance(event, DeadLetterHandlerFailed)
    assert ("builtins.RuntimeError", "disk full") == (
        event.error_type,
        event.error_message,
    )
    assert logging.ERROR == event.level


def test_failing_handler_reraises_even_with_reraise_false(mode):
    def handler(letter):
        raise RuntimeError("down")

    fn = fluxus.dead_letter(handler, reraise=False, default="lost")(
        mode.make(Boom(OSError("original")))
    )

    with pytest.raises(OSError, match="original"):
        mode.run(fn)


def test_failing_on_handler_error_is_logged_not_raised(mode, caplog):
    def handler(letter):
        raise RuntimeError("down")

    def on_handler_error(exc):
        raise LookupError("worse")

    fn = fluxus.dead_letter(handler, on_handler_error=on_handler_error)(
        mode.make(Boom(OSError("original")))
    )

    with pytest.raises(OSError, match="original"):
        mode.run(fn)
    assert "on_handler_error" in caplog.text


def test_failing_should_dlq_is_reported_as_a_handler_failure(mode, events):
    def should_dlq(exc):
        raise RuntimeError("predicate bug")

    fn = fluxus.dead_letter(Memory(), should_dlq=should_dlq)(
        mode.make(Boom(OSError("original")))
    )

    with pytest.raises(OSError, match="original"):
        mode.run(fn)
    assert ["predicate bug"] == [e.error_message for e in events]


def test_events_never_carry_arguments(mode, events):
    fn = fluxus.dead_letter(Memory())(mode.make(Boom(OSError("x"))))

    with pytest.raises(OSError):
        mode.run(fn, "hunter2", token="s3cret")

    text = repr([e.fields() for e in events])
    assert "hunter2" not in text
    assert "s3cret" not in text


def test_redact_masks_by_name_and_by_position(mode):
    sink = Memory()

    def login(user, password, *, token=None, **extra):
        raise PermissionError("denied")

    async def alogin(user, password, *, token=None, **extra):
        raise PermissionError("denied")

    fn = fluxus.dead_letter(sink, redact=["password", "token", "api_key"])(
        alogin if mode.is_async else login
    )
    with pytest.raises(PermissionError):
        mode.run(fn, "ann", "hunter2", token="s3cret", api_key="k", other=1)
    with pytest.raises(PermissionError):
        mode.run(fn, "bob", password="pw")

    first, second = sink.letters()
    assert (
        ("ann", "<redacted>"),
        {"token": "<redacted>", "api_key": "<redacted>", "other": 1},
    ) == (
        first.args,
        first.kwargs,
    )
    assert ("args[1]", "kwargs['token']", "kwargs['api_key']") == first.placeholders
    assert (("bob",), {"password": "<redacted>"}) == (second.args, second.kwargs)
    assert not first.replayable
    assert "hunter2" not in repr(first)


def test_redact_one_name_as_a_string():
    sink = Memory()

    @fluxus.dead_letter(sink, redact="token")
    def call(token):
        raise OSError

    with pytest.raises(OSError):
        call("t")
    assert ("<redacted>",) == next(iter(sink.letters())).args


def test_redact_in_methods_leaves_self_out():
    sink = Memory()

    class Client:
        @fluxus.dead_letter(sink, redact=["secret"])
        def send(self, secret, body):
            raise OSError

    with pytest.raises(OSError):
        Client().send("xyz", "hello")
    letter = next(iter(sink.letters()))
    assert ("<redacted>", "hello") == letter.args


def test_redact_masks_every_positional_when_the_name_may_hide_in_varargs(mode):
    sink = Memory()
    fn = fluxus.dead_letter(sink, redact=["password"])(mode.make(Boom(OSError())))

    with pytest.raises(OSError):
        mode.run(fn, "ann", "hunter2", password="pw", other=1)

    letter = next(iter(sink.letters()))
    assert (("<redacted>", "<redacted>"), {"password": "<redacted>", "other": 1}) == (
        letter.args,
        letter.kwargs,
    )


def test_redact_masks_every_positional_without_a_signature():
    sink = Memory()
    fn = fluxus.dead_letter(sink, redact=["x"])(max)

    with pytest.raises(TypeError):
        fn(5)
    assert ("<redacted>",) == next(iter(sink.letters())).args


def test_redact_leaves_varargs_alone_when_the_names_are_named():
    sink = Memory()

    @fluxus.dead_letter(sink, redact=["token"])
    def call(token, *rest):
        raise OSError

    with pytest.raises(OSError):
        call("t", 1, 2)
    assert ("<redacted>", 1, 2) == next(iter(sink.letters())).args


def test_keeps_signature_and_coroutine_function():
    @fluxus.dead_letter(Memory())
    async def fetch(url: str, *, retries: int = 1) -> bytes:
        return b""

    assert inspect.iscoroutinefunction(fetch)
    assert ["url", "retries"] == list(inspect.signature(fetch).parameters)
    assert isinstance(fluxus.layers(fetch)[0], fluxus.DeadLetterQueue)


def test_broken_str_does_not_lose_the_letter(mode):
    class Weird(Exception):
        def __str__(self):
            raise RuntimeError("no str")

    sink = Memory()
    fn = fluxus.dead_letter(sink)(mode.make(Boom(Weird())))
    with pytest.raises(Weird):
        mode.run(fn)
    assert "Weird" in next(iter(sink.letters())).error_message


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"handler": 3}, TypeError, "handler must be"),
        ({"handler": print, "should_dlq": 1}, TypeError, "should_dlq"),
        ({"handler": print, "on_handler_error": "x"}, TypeError, "on_handler_error"),
        ({"handler": print, "reraise": 0}, TypeError, "reraise"),
        ({"handler": print, "redact": 5}, TypeError, "redact"),
        ({"handler": print, "redact": ["not a name"]}, ValueError, "redact"),
        ({"handler": print, "name": ""}, ValueError, "name"),
    ],
)
def test_bad_configuration_is_refused(kwargs, error, match):
    handler = kwargs.pop("handler")
    with pytest.raises(error, match=match):
        fluxus.dead_letter(handler, **kwargs)


def test_letter_replace_and_repr_of_policy():
    sink = Memory()
    policy = fluxus.dead_letter(sink, name="orders")
    fn = policy(Boom(OSError("x")))
    with pytest.raises(OSError):
        fn()
    letter = next(iter(sink.letters()))
    assert () == letter.replace(args=()).args
    assert "<fluxus.DeadLetterQueue 'orders'>" == repr(policy)
    assert "orders" == policy.name
