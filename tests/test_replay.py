from __future__ import annotations

import asyncio

import fluxus
import pytest
from fluxus.sinks import JsonlFile, Memory, SQLite


@pytest.fixture(params=["memory", "jsonl", "sqlite"])
def sink(request, tmp_path):
    if request.param == "memory":
        return Memory()
    if request.param == "jsonl":
        return JsonlFile(tmp_path / "letters.jsonl")
    return SQLite(tmp_path / "letters.db")


def fill(sink, *calls, redact=()):
    """Dead-letter one failed call of ``orders.submit`` per item of *calls*."""

    def submit(order, *, qty=1, password=None):
        raise OSError("down")

    fn = fluxus.dead_letter(sink, redact=redact)(submit)
    for args, kwargs in calls:
        with pytest.raises(OSError):
            fn(*args, **kwargs)
    return fn


def run_replay(mode, sink, body, **options):
    if mode.is_async:
        return asyncio.run(fluxus.replay_async(sink, mode.make(body), **options))
    return fluxus.replay(sink, body, **options)


def test_replays_oldest_first_and_removes_successes(sink, mode):
    fill(sink, (("a",), {"qty": 2}), (("b",), {}), (("c",), {"qty": 3}))
    calls = []

    def target(order, *, qty=1):
        calls.append((order, qty))
        if order == "b":
            raise OSError("still down")

    result = run_replay(mode, sink, target)

    assert [("a", 2), ("b", 1), ("c", 3)] == calls
    assert (2, 1, 0) == (result.replayed, result.failed, result.skipped)
    assert [("b",)] == [letter.args for letter in sink.letters()]

    again = run_replay(mode, sink, lambda order, qty=1: None)
    assert fluxus.ReplayResult(replayed=1) == again
    assert [] == list(sink.letters())


def test_skips_letters_it_cannot_rebuild(tmp_path, mode):
    sink = JsonlFile(tmp_path / "letters.jsonl")
    fill(sink, ((object(),), {}), (("ok",), {}))
    fill(sink, (("x",), {"password": "pw"}), redact=["password"])
    calls = []

    result = run_replay(mode, sink, lambda *a, **k: calls.append(a))

    assert [("ok",)] == calls
    assert (1, 0, 2) == (result.replayed, result.failed, result.skipped)
    assert 2 == len(list(sink.letters()))


def test_function_filter_and_progress(sink, mode):
    fill(sink, (("a",), {}))
    sink.put(next(iter(sink.letters())).replace(id="other", function="shop.refund"))
    seen = []

    result = run_replay(
        mode,
        sink,
        lambda order: None,
        function="test_replay.fill.<locals>.submit",
        progress=lambda done, total: seen.append((done, total)),
    )

    assert (1, 0, 1) == (result.replayed, result.failed, result.skipped)
    assert [(1, 2), (2, 2)] == seen
    assert ["other"] == [letter.id for letter in sink.letters()]


def test_an_interrupted_replay_can_run_again(sink):
    fill(sink, (("a",), {}), (("b",), {}), (("c",), {}))
    calls = []

    def interrupted(order):
        calls.append(order)
        if order == "b":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fluxus.replay(sink, interrupted)
    assert [("b",), ("c",)] == [letter.args for letter in sink.letters()]

    result = fluxus.replay(sink, calls.append)
    assert 2 == result.replayed
    assert ["a", "b", "b", "c"] == calls


def test_replay_async_awaits_coroutines_and_calls_plain_functions():
    sink = Memory()
    fill(sink, (("a",), {}))
    fill(sink, (("b",), {}))
    calls = []

    async def target(order):
        await asyncio.sleep(0)
        calls.append(order)

    assert 2 == asyncio.run(fluxus.replay_async(sink, target)).replayed
    assert ["a", "b"] == calls


def test_replay_refuses_bad_arguments():
    async def coroutine(order):
        pass

    with pytest.raises(TypeError, match="replay_async"):
        fluxus.replay(Memory(), coroutine)
    with pytest.raises(TypeError, match="sink must offer"):
        fluxus.replay(object(), print)
    with pytest.raises(TypeError, match="func must be callable"):
        fluxus.replay(Memory(), 3)
    with pytest.raises(TypeError, match="function must be"):
        fluxus.replay(Memory(), print, function=3)


def test_a_custom_sink_works_with_the_policy_and_replay():
    class ListSink:
        def __init__(self):
            self.items = []

        def put(self, letter):
            self.items.append(letter)

        def letters(self):
            return list(self.items)

        def remove(self, letter_id):
            self.items = [x for x in self.items if x.id != letter_id]

    sink = ListSink()
    assert isinstance(sink, fluxus.sinks.Sink)
    fill(sink, (("a",), {}))
    assert 1 == fluxus.replay(sink, lambda order: None).replayed
    assert [] == sink.items


def test_a_method_letter_replays_through_the_bound_method():
    sink = Memory()

    class Client:
        def __init__(self, up):
            self.up, self.seen = up, []

        @fluxus.dead_letter(sink)
        def get_quote(self, symbol, *, currency="EUR"):
            if not self.up:
                raise ConnectionError(symbol)
            self.seen.append((symbol, currency))

    with pytest.raises(ConnectionError):
        Client(up=False).get_quote("ACME", currency="USD")
    (letter,) = sink.letters()
    assert (("ACME",), {"currency": "USD"}) == (letter.args, letter.kwargs)
    healthy = Client(up=True)
    assert 1 == fluxus.replay(sink, healthy.get_quote).replayed
    assert [("ACME", "USD")] == healthy.seen


@pytest.mark.parametrize("as_callable", [False, True])
def test_fill_gives_redacted_arguments_back(as_callable):
    sink = Memory()

    @fluxus.dead_letter(sink, redact=["token", "pin"])
    def pay(order, token, *, pin=None):
        raise OSError(order)

    with pytest.raises(OSError):
        pay("o1", "t0k3n", pin=1234)
    (letter,) = sink.letters()
    assert ("args[1]", "kwargs['pin']") == letter.placeholders
    calls = []

    def target(order, token, *, pin=None):
        calls.append((order, token, pin))

    values = {"token": "fresh", "pin": 9}
    fill = (lambda stored: values) if as_callable else values
    partial = fluxus.replay(sink, target, fill={"token": "fresh"})
    assert (0, 1) == (partial.replayed, partial.skipped)
    assert 1 == fluxus.replay(sink, target, fill=fill).replayed
    assert [("o1", "fresh", 9)] == calls


def test_fill_and_redact_must_name_parameters():
    with pytest.raises(ValueError, match="tokn"):
        fluxus.dead_letter(Memory(), redact=["tokn"])(lambda order, token: None)
    fluxus.dead_letter(Memory(), redact=["tokn"])(lambda order, **kw: None)
    with pytest.raises(ValueError, match="tokn"):
        fluxus.replay(Memory(), lambda order, token: None, fill={"tokn": 1})
    with pytest.raises(TypeError, match="fill"):
        fluxus.replay(Memory(), lambda order: None, fill=3)
