from __future__ import annotations

import asyncio
import enum
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
import warnings
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import fluxus
import pytest
from fluxus._redis import mask_password
from fluxus.sinks import (
    CorruptRecordWarning,
    JsonlFile,
    Log,
    Memory,
    RedisStream,
    SinkFull,
    SQLite,
)
from fluxus.sinks._codec import decode, encode
from hypothesis import given
from hypothesis import strategies as st


@pytest.fixture(params=["jsonl", "sqlite", "redis"])
def opener(request, tmp_path):
    """Return a function opening the same store afresh, as another process would."""
    if request.param == "jsonl":
        return lambda: JsonlFile(tmp_path / "letters.jsonl")
    if request.param == "sqlite":
        return lambda: SQLite(tmp_path / "letters.db")
    url = request.getfixturevalue("redis_url")
    stream = f"test:{uuid.uuid4().hex}"
    return lambda: RedisStream(url, stream=stream)


def raw_content(sink) -> str:
    """Everything the store holds, as text, to look for secrets in."""
    if isinstance(sink, JsonlFile):
        return sink.path.read_text()
    if isinstance(sink, SQLite):
        with sqlite3.connect(sink.path) as connection:
            return repr(connection.execute(f"SELECT * FROM {sink.table}").fetchall())  # noqa: S608
    return repr(sink.client.xrange(sink.stream))


def letter(n: int = 0, *args, **kwargs) -> fluxus.DeadLetter:
    return fluxus.DeadLetter(
        id=f"{n:032x}",
        function="shop.orders.submit",
        args=args,
        kwargs=kwargs,
        error=ValueError("bad"),
        error_type="builtins.ValueError",
        error_message="bad",
        traceback="Traceback (most recent call last):\nValueError: bad\n",
        failed_at=datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC),
    )


RICH_ARGS = (
    1,
    "two",
    (3, [4, (5,)]),
    {"a": [1, 2], 7: "int key"},
    b"\x00bytes",
    {1, 2},
    frozenset({"x"}),
    datetime(2026, 1, 1, tzinfo=UTC),
    date(2026, 1, 1),
    timedelta(seconds=1.5),
    Decimal("1.10"),
    uuid.UUID(int=7),
    float("inf"),
    None,
    True,
    {"__fluxus__": "looks tagged"},
)


def test_round_trip_through_every_storing_sink(opener, mode):
    sink = opener()

    def submit(*args, **kwargs):
        raise ValueError("payment declined")

    fn = fluxus.dead_letter(sink)(mode.make(submit))
    with pytest.raises(ValueError, match="payment declined"):
        mode.run(fn, *RICH_ARGS, qty=3, tags=("a", "b"))

    (stored,) = opener().letters()
    assert RICH_ARGS == stored.args
    assert tuple is type(stored.args)
    assert {"qty": 3, "tags": ("a", "b")} == stored.kwargs
    assert stored.error is None
    assert ("builtins.ValueError", "payment declined") == (
        stored.error_type,
        stored.error_message,
    )
    assert "ValueError: payment declined" in stored.traceback
    assert UTC == stored.failed_at.tzinfo
    assert timedelta(0) == stored.failed_at.utcoffset()
    assert stored.replayable


def test_letters_oldest_first_remove_and_clear(opener):
    sink = opener()
    for n in range(3):
        sink.put(letter(n, n))

    assert [0, 1, 2] == [int(x.id, 16) for x in opener().letters()]
    assert sink.remove(letter(1).id)
    assert not sink.remove(letter(1).id)
    assert not opener().remove("f" * 32)
    assert [0, 2] == [x.args[0] for x in opener().letters()]
    assert letter(2).id == sink.get(letter(2).id).id
    assert sink.get("nope") is None
    assert 2 == opener().clear()
    assert [] == list(opener().letters())


def test_the_same_letter_read_twice_is_equal(opener):
    sink = opener()
    sink.put(letter(1, "a", k=[1]))
    first, second = next(iter(opener().letters())), next(iter(opener().letters()))
    assert first == second
    assert letter(1, "a", k=[1]).replace(error=None) == first


class Level(enum.IntEnum):
    LOW = 1


def test_unserializable_arguments_are_kept_as_repr(opener):
    sink = opener()

    class Opaque:
        def __repr__(self):
            return "<Opaque 42>"

    class Unrepresentable:
        def __repr__(self):
            raise RuntimeError

    sink.put(letter(1, Opaque(), [Opaque()], ok=1, lock=threading.Lock()))
    sink.put(letter(2, Unrepresentable()))
    sink.put(letter(3, logging.DEBUG, Level.LOW))

    first, second, third = opener().letters()
    assert (10, "<Level.LOW: 1>") == third.args
    assert ("args[1]",) == third.placeholders
    assert ("<Opaque 42>", ["<Opaque 42>"]) == first.args
    assert ("args[0]", "args[1]", "kwargs['lock']") == first.placeholders
    assert 1 == first.kwargs["ok"]
    assert not first.replayable
    assert second.args[0].startswith("<unrepresentable ")
    assert second.args[0].endswith("Unrepresentable>")


def test_redaction_reaches_every_sink(opener, mode):
    sink = opener()

    def login(user, password, token=None):
        raise PermissionError

    fn = fluxus.dead_letter(sink, redact=["password", "token"])(login)
    if mode.is_async:

        async def alogin(user, password, token=None):
            raise PermissionError

        fn = fluxus.dead_letter(sink, redact=["password", "token"])(alogin)
    with pytest.raises(PermissionError):
        mode.run(fn, "ann", "hunter2", token="s3cret")

    assert "hunter2" not in raw_content(sink)
    assert "s3cret" not in raw_content(sink)
    (stored,) = opener().letters()
    assert ("ann", "<redacted>") == stored.args
    assert ("args[1]", "kwargs['token']") == stored.placeholders


def test_missing_store_holds_nothing(tmp_path):
    for sink in (JsonlFile(tmp_path / "none.jsonl"), SQLite(tmp_path / "none.db")):
        assert [] == list(sink.letters())
        assert not sink.remove("x")
        assert 0 == sink.clear()
        assert not sink.path.exists()


def test_aput_writes_from_async_code(opener):
    sink = opener()
    asyncio.run(sink.aput(letter(1, "a")))
    assert [("a",)] == [x.args for x in opener().letters()]


def test_files_are_readable_by_the_owner_only(tmp_path):
    previous = os.umask(0)
    try:
        jsonl = JsonlFile(tmp_path / "a.jsonl")
        jsonl.put(letter(1))
        jsonl.put(letter(2))
        jsonl.remove(letter(1).id)
        db = SQLite(tmp_path / "a.db")
        db.put(letter(1))
    finally:
        os.umask(previous)
    modes = {
        p.name: p.stat().st_mode & 0o777
        for p in tmp_path.iterdir()
        if not p.name.startswith(".")
    }
    assert dict.fromkeys(modes, 0o600) == modes
    assert {"a.jsonl", "a.db"} <= set(modes)


def test_sqlite_uses_wal(tmp_path):
    SQLite(tmp_path / "a.db").put(letter(1))
    with sqlite3.connect(tmp_path / "a.db") as connection:
        assert ("wal",) == connection.execute("PRAGMA journal_mode").fetchone()


def test_sqlite_table_name_is_checked(tmp_path):
    with pytest.raises(ValueError, match="table"):
        SQLite(tmp_path / "a.db", table="x; DROP TABLE y")


def test_sqlite_foreign_database_without_our_table(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (x)")
    assert [] == list(SQLite(path).letters())
    assert not SQLite(path).remove("x")


def test_sqlite_corrupt_row_is_skipped_with_a_warning(tmp_path):
    sink = SQLite(tmp_path / "a.db")
    sink.put(letter(1))
    sink.put(letter(2))
    with sqlite3.connect(sink.path) as connection:
        connection.execute(
            "UPDATE fluxus_dead_letters SET record = 'garbage' WHERE id = ?",
            (letter(1).id,),
        )
    with pytest.warns(CorruptRecordWarning, match="row 1"):
        assert [letter(2).id] == [x.id for x in sink.letters()]


def test_jsonl_torn_last_line_is_skipped_and_the_next_append_starts_fresh(tmp_path):
    sink = JsonlFile(tmp_path / "a.jsonl")
    sink.put(letter(1))
    with sink.path.open("ab") as file:
        file.write(encode(letter(2)).encode()[:40])

    with pytest.warns(CorruptRecordWarning, match="line 2"):
        assert [letter(1).id] == [x.id for x in sink.letters()]

    sink.put(letter(3))
    with pytest.warns(CorruptRecordWarning, match="line 2"):
        assert [letter(1).id, letter(3).id] == [x.id for x in sink.letters()]
    assert sink.remove(letter(3).id)
    with pytest.warns(CorruptRecordWarning):
        assert [letter(1).id] == [x.id for x in sink.letters()]
    assert 1 == sink.clear()
    assert b"" == sink.path.read_bytes()


def test_jsonl_blank_lines_and_unknown_versions(tmp_path):
    path = tmp_path / "a.jsonl"
    record = json.loads(encode(letter(1)))
    record["v"] = 99
    path.write_text("\n\n" + json.dumps(record) + "\n[1, 2]\n")
    with pytest.warns(CorruptRecordWarning) as caught:
        assert [] == list(JsonlFile(path).letters())
    assert 2 == len(caught)
    assert "unknown record version 99" in str(caught[0].message)


def test_a_sink_that_cannot_write_fails_when_built(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    with pytest.raises(NotADirectoryError, match=r"letters\.jsonl"):
        JsonlFile(blocker / "letters.jsonl")
    with pytest.raises(FileNotFoundError, match=r"letters\.db"):
        SQLite(tmp_path / "missing" / "letters.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_read_only_directory_goes_to_on_handler_error(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    reported = []
    try:
        for sink in (JsonlFile(directory / "a.jsonl"), SQLite(directory / "a.db")):
            fn = fluxus.dead_letter(sink, on_handler_error=reported.append)(
                lambda: 1 / 0
            )
            with pytest.raises(ZeroDivisionError):
                fn()
    finally:
        directory.chmod(0o700)
    assert [PermissionError, PermissionError] == [type(e) for e in reported]


def test_a_corrupt_database_goes_to_on_handler_error(tmp_path):
    path = tmp_path / "a.db"
    path.write_bytes(b"this is not a database, whatever the suffix says" * 100)
    reported = []
    fn = fluxus.dead_letter(SQLite(path), on_handler_error=reported.append)(
        lambda: 1 / 0
    )
    with pytest.raises(ZeroDivisionError):
        fn()
    (failure,) = reported
    assert isinstance(failure, sqlite3.DatabaseError)


def test_a_replaced_database_gets_a_new_connection(tmp_path):
    path = tmp_path / "a.db"
    sink = SQLite(path)
    sink.put(letter(1))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    sink.put(letter(2))
    assert [letter(2).id] == [x.id for x in SQLite(path).letters()]


WRITER = """
import sys
from fluxus.sinks import {kind}
sys.path.insert(0, {tests!r})
from test_sinks import letter
sink = {kind}({path!r})
start, count = int(sys.argv[1]), int(sys.argv[2])
for n in range(start, start + count):
    sink.put(letter(n, "x" * {size}))
    print(n, flush=True)
"""


def writer(kind, path, start, count, size=10):
    code = WRITER.format(
        kind=kind, path=str(path), tests=str(Path(__file__).parent), size=size
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, str(start), str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )


def kill_9_midway(kind, path, after):
    """Kill -9 a writer once it acknowledged *after* letters; return them all."""
    proc = writer(kind, path, 0, 1_000_000, size=20_000)
    acknowledged = []
    for line in proc.stdout:
        acknowledged.append(int(line))
        if len(acknowledged) == after:
            break
    proc.kill()  # SIGKILL, in the middle of a write loop
    rest, _ = proc.communicate()
    return acknowledged + [int(line) for line in rest.split()]


@pytest.mark.timeout(60)
def test_jsonl_kill_9_mid_append_loses_no_acknowledged_letter(tmp_path):
    path = tmp_path / "a.jsonl"
    acknowledged = kill_9_midway("JsonlFile", path, after=150)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stored = [int(x.id, 16) for x in JsonlFile(path).letters()]
    assert len(caught) <= 1
    assert set(acknowledged) <= set(stored)
    assert list(range(len(stored))) == stored

    sink = JsonlFile(path)
    sink.put(letter(10**9))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [*stored, 10**9] == [int(x.id, 16) for x in sink.letters()]


@pytest.mark.timeout(60)
def test_sqlite_kill_9_mid_insert_loses_no_acknowledged_letter(tmp_path):
    path = tmp_path / "a.db"
    acknowledged = kill_9_midway("SQLite", path, after=100)

    stored = [int(x.id, 16) for x in SQLite(path).letters()]
    assert set(acknowledged) <= set(stored)
    assert list(range(len(stored))) == stored
    SQLite(path).put(letter(10**9))
    assert [*stored, 10**9] == [int(x.id, 16) for x in SQLite(path).letters()]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("kind", "name"), [("JsonlFile", "a.jsonl"), ("SQLite", "a.db")]
)
def test_several_processes_append_to_one_store(tmp_path, kind, name):
    path = tmp_path / name
    procs = [writer(kind, path, 1000 * i, 30) for i in range(4)]
    for proc in procs:
        proc.communicate(timeout=50)
        assert 0 == proc.returncode
    sink = JsonlFile(path) if kind == "JsonlFile" else SQLite(path)
    stored = sorted(int(x.id, 16) for x in sink.letters())
    assert sorted(1000 * i + n for i in range(4) for n in range(30)) == stored


@pytest.mark.timeout(60)
@pytest.mark.parametrize("make", [JsonlFile, SQLite])
def test_threads_append_while_another_removes(tmp_path, make):
    sink = make(tmp_path / ("a.jsonl" if make is JsonlFile else "a.db"))
    for n in range(20):
        sink.put(letter(n))

    def append(base):
        for n in range(base, base + 25):
            sink.put(letter(n))

    def remove():
        for n in range(20):
            assert sink.remove(letter(n).id)

    threads = [threading.Thread(target=append, args=(100 * i,)) for i in (1, 2, 3)]
    threads.append(threading.Thread(target=remove))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = sorted(int(x.id, 16) for x in sink.letters())
    assert sorted(100 * i + n for i in (1, 2, 3) for n in range(25)) == stored


def test_memory_keeps_the_exception():
    sink = Memory()
    error = OSError("x")
    fn = fluxus.dead_letter(sink)(lambda: (_ for _ in ()).throw(error))
    with pytest.raises(OSError):
        fn()
    assert error is next(iter(sink.letters())).error
    assert "<fluxus.sinks.Memory 1 letters>" == repr(sink)
    asyncio.run(sink.aput(letter(9)))
    assert 2 == sink.clear()
    assert not sink.remove("x")


def test_log_sink_logs_without_arguments_by_default(caplog, mode):
    caplog.set_level(logging.INFO, logger="fluxus.dead_letter")
    sink = Log()

    def work(password):
        raise OSError("refused")

    fn = fluxus.dead_letter(sink)(mode.make(work))
    with pytest.raises(OSError):
        mode.run(fn, "hunter2")

    (record,) = [r for r in caplog.records if r.name == "fluxus.dead_letter"]
    assert logging.ERROR == record.levelno
    assert "builtins.OSError: refused" in record.getMessage()
    assert "Traceback" in record.getMessage()
    assert "hunter2" not in record.getMessage()
    assert "args" not in record.fluxus_dead_letter
    assert [] == list(sink.letters())
    assert not sink.remove("x")
    assert 0 == sink.clear()


def test_log_sink_with_arguments(caplog):
    logger = logging.getLogger("mine")
    caplog.set_level(logging.WARNING, logger="mine")
    Log(logger, level=logging.WARNING, include_args=True).put(letter(1, "a", k=2))
    (record,) = caplog.records
    assert "args=('a',) kwargs={'k': 2}" in record.getMessage()
    assert "('a',)" == record.fluxus_dead_letter["args"]
    with pytest.raises(TypeError, match="level"):
        Log(level="ERROR")


def test_redis_maxlen_refuses_rather_than_drops(redis_url):
    stream = f"test:{uuid.uuid4().hex}"
    sink = RedisStream(redis_url, stream=stream, maxlen=2)
    sink.put(letter(1))
    sink.put(letter(2))
    with pytest.raises(SinkFull, match="maxlen=2"):
        sink.put(letter(3))
    assert [1, 2] == [int(x.id, 16) for x in sink.letters()]

    trimming = RedisStream(redis_url, stream=stream, maxlen=2, approximate_trim=True)
    trimming.put(letter(3))
    assert letter(3).id in [x.id for x in trimming.letters()]


def test_redis_removes_without_a_prior_listing(redis_url):
    stream = f"test:{uuid.uuid4().hex}"
    RedisStream(redis_url, stream=stream).put(letter(1))
    sink = RedisStream(redis_url, stream=stream)
    sink.client.xadd(stream, {"letter": "garbage " + letter(1).id})
    sink.client.xadd(stream, {"other": "x"})
    assert sink.remove(letter(1).id)
    with pytest.warns(CorruptRecordWarning):
        assert [] == list(sink.letters())
    assert 2 == sink.clear()


def test_redis_accepts_a_client_and_hides_the_password(redis_url):
    import redis

    sink = RedisStream(redis.Redis.from_url(redis_url), stream="s")
    assert "<client>" == sink.url
    assert "redis://:***@host:6379/0" == mask_password("redis://:pw@host:6379/0")
    assert "redis://me:***@host/0" == mask_password("redis://me:pw@host/0")
    assert "redis://host/0" == mask_password("redis://host/0")
    masked = RedisStream("redis://:topsecret@127.0.0.1:1/0", stream="s")
    assert "topsecret" not in repr(masked)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"maxlen": 0}, ValueError, "maxlen must be >= 1"),
        ({"maxlen": True}, TypeError, "maxlen must be an int"),
        ({"approximate_trim": True}, ValueError, "with approximate_trim=True"),
        ({"stream": ""}, ValueError, "stream must be a non-empty string"),
        ({"stream": 3}, TypeError, "stream must be a non-empty string"),
    ],
)
def test_redis_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        RedisStream("redis://127.0.0.1:1/0", **kwargs)


def test_decode_refuses_what_is_not_a_record():
    for text in ("", "[]", "{}", '{"v": 1}', "not json"):
        with pytest.raises(ValueError, match="not a fluxus dead letter record"):
            decode(text)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.just(UTC))
    | st.decimals(allow_nan=False)
    | st.uuids(),
    lambda children: (
        st.lists(children)
        | st.tuples(children, children)
        | st.dictionaries(st.text() | st.integers(), children)
        | st.frozensets(st.integers())
    ),
    max_leaves=10,
)


@given(
    args=st.lists(json_values, max_size=4),
    kwargs=st.dictionaries(st.text(), json_values, max_size=3),
)
def test_codec_round_trips_what_it_can_write(args, kwargs):
    original = letter(1).replace(args=tuple(args), kwargs=kwargs, error=None)
    assert original == decode(encode(original))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("make", [JsonlFile, SQLite])
def test_a_forked_child_shares_the_sink(tmp_path, make):
    sink = make(tmp_path / ("a.jsonl" if make is JsonlFile else "a.db"))
    sink.put(letter(1))
    with warnings.catch_warnings():
        # Python 3.12+ warns about fork() while other threads run; this child
        # only writes one letter and exits.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: write through the inherited sink, then vanish
        code = 1
        try:
            sink.put(letter(2))
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status)
    sink.put(letter(3))
    assert [1, 2, 3] == [int(x.id, 16) for x in sink.letters()]


def test_import_fluxus_alone_makes_the_sinks_usable(tmp_path):
    code = (
        "import fluxus, sys; s = fluxus.sinks.JsonlFile(sys.argv[1]); "
        "fluxus.dead_letter(s); print(len(list(s.letters())))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "a.jsonl")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "0\n" == out
    assert sorted(fluxus.sinks.__all__) == fluxus.sinks.__all__


TORN_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_sinks import letter
from fluxus.sinks import JsonlFile
sink = JsonlFile({path!r})
for n in range(5):
    sink.put(letter(n, "x" * 1000))
    print(n, flush=True)
real_write = os.write

def half_then_die(fd, data):
    real_write(fd, bytes(data[: len(data) // 2]))
    os.kill(os.getpid(), signal.SIGKILL)

os.write = half_then_die
sink.put(letter(5, "x" * 1000))
"""


@pytest.mark.timeout(60)
def test_jsonl_kill_9_in_the_middle_of_a_record(tmp_path):
    path = tmp_path / "a.jsonl"
    code = TORN_WRITER.format(tests=str(Path(__file__).parent), path=str(path))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert -9 == proc.returncode
    assert [0, 1, 2, 3, 4] == [int(n) for n in proc.stdout.split()]
    assert not path.read_bytes().endswith(b"\n")

    with pytest.warns(CorruptRecordWarning, match="line 6"):
        assert [0, 1, 2, 3, 4] == [int(x.id, 16) for x in JsonlFile(path).letters()]
    JsonlFile(path).put(letter(6))
    with pytest.warns(CorruptRecordWarning, match="line 6"):
        stored = [int(x.id, 16) for x in JsonlFile(path).letters()]
    assert [0, 1, 2, 3, 4, 6] == stored


def test_a_failed_rewrite_leaves_the_file_as_it_was(tmp_path, monkeypatch):
    sink = JsonlFile(tmp_path / "a.jsonl", fsync=False)
    sink.put(letter(1))
    sink.put(letter(2))
    before = sink.path.read_bytes()

    def refuse(self, target):
        raise OSError("disk full")

    monkeypatch.setattr(Path, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        sink.clear()
    assert before == sink.path.read_bytes()
    assert ["a.jsonl"] == [p.name for p in tmp_path.iterdir()]


def test_switching_to_wal_waits_out_another_process_creating_the_store(tmp_path):
    import sqlite3
    import threading

    from fluxus.sinks._sqlite import _switch_to_wal

    path = tmp_path / "contended.db"
    blocker = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    blocker.execute("CREATE TABLE t (a)")
    contender = sqlite3.connect(path, timeout=0.01, isolation_level=None)
    try:
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            _switch_to_wal(contender, 0.05)  # gives up once its time is spent
        release = threading.Timer(0.1, blocker.execute, ("COMMIT",))
        release.start()
        _switch_to_wal(contender, 5.0)
        release.join()
        assert "wal" == contender.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        contender.close()
        blocker.close()


class _BrokenRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


def _cycle():
    items = [1]
    items.append(items)
    return items


def _deep(depth=5000):
    root = node = []
    for _ in range(depth):
        node.append([])
        node = node[0]
    return root


SURROGATE = os.fsdecode(b"caf\xe9.txt")  # a non-UTF-8 file name, as Python sees it


@pytest.mark.parametrize(
    ("value", "kept", "placeholder"),
    [
        pytest.param(_cycle(), None, True, id="cycle"),
        pytest.param(_deep(), None, True, id="nested-5000"),
        pytest.param(10**5000, 10**5000, False, id="huge-int"),
        pytest.param(-(2**64), -(2**64), False, id="big-negative-int"),
        pytest.param(SURROGATE, SURROGATE, False, id="lone-surrogate"),
        pytest.param(
            {"k": [SURROGATE]}, {"k": [SURROGATE]}, False, id="nested-surrogate"
        ),
        pytest.param(_BrokenRepr(), None, True, id="repr-raises"),
    ],
)
def test_hostile_arguments_are_stored_and_listed(
    tmp_path, capsys, value, kept, placeholder
):
    from fluxus.__main__ import main

    for sink in (JsonlFile(tmp_path / "a.jsonl"), SQLite(tmp_path / "a.db")):

        @fluxus.dead_letter(sink)
        def upload(item, name):
            raise OSError(f"cannot open {SURROGATE}")

        with pytest.raises(OSError, match="cannot open"):
            upload(value, name=value)
        (stored,) = sink.letters()
        assert SURROGATE in stored.error_message
        if placeholder:
            assert ("args[0]", "kwargs['name']") == stored.placeholders
            assert not stored.replayable
        else:
            assert ((kept,), {"name": kept}) == (stored.args, stored.kwargs)
            assert stored.replayable
        capsys.readouterr()
        assert 0 == main(["dlq", "list", str(sink.path)])
        out = capsys.readouterr().out
        assert stored.id in out
        assert "1 letter" in out
        assert 0 == main(["dlq", "list", str(sink.path), "--json"])
        assert stored.id in capsys.readouterr().out
        assert 0 == main(["dlq", "show", str(sink.path), stored.id])
        assert "args:" in capsys.readouterr().out


def test_a_web_request_can_be_stored_as_data(tmp_path):
    from fluxus.sinks._codec import register_encoder

    class Request:
        def __init__(self, path):
            self.path = path

    register_encoder(Request, lambda r: {"method": "GET", "path": r.path})
    sink = JsonlFile(tmp_path / "a.jsonl")

    @fluxus.dead_letter(sink)
    def view(request):
        raise OSError

    with pytest.raises(OSError):
        view(Request("/orders"))
    (stored,) = sink.letters()
    assert ({"method": "GET", "path": "/orders"},) == stored.args
    assert stored.replayable
    with pytest.raises(TypeError, match="register_encoder"):
        register_encoder("Request", repr)


def test_letters_stream_and_stop_at_limit(tmp_path):
    for sink in (JsonlFile(tmp_path / "a.jsonl"), SQLite(tmp_path / "a.db")):
        for n in range(1200):
            sink.put(letter(n))
        assert [0, 1, 2] == [int(x.id, 16) for x in sink.letters(limit=3)]
        assert [] == list(sink.letters(limit=0))
        assert 1200 == sum(1 for _ in sink.letters())
        assert 1200 == sink.count()
        with pytest.raises(ValueError, match="limit"):
            list(sink.letters(limit=-1))


def test_web_requests_are_stored_as_data_without_credentials(tmp_path):
    from werkzeug.test import EnvironBuilder
    from werkzeug.wrappers import Request as WerkzeugRequest

    sink = JsonlFile(tmp_path / "a.jsonl")

    @fluxus.dead_letter(sink)
    def view(request):
        raise OSError("upstream down")

    request = WerkzeugRequest(
        EnvironBuilder(
            method="POST",
            path="/orders/7",
            query_string="rush=1",
            data=b'{"qty": 2}',
            headers={"Authorization": "Bearer s3cret", "Cookie": "sid=x", "X-Id": "42"},
        ).get_environ()
    )
    with pytest.raises(OSError, match="upstream"):
        view(request)
    (stored,) = sink.letters()
    assert stored.replayable
    (data,) = stored.args
    assert ("POST", "/orders/7", "rush=1", '{"qty": 2}') == (
        data["method"],
        data["path"],
        data["query"],
        data["body"],
    )
    assert "42" == data["headers"]["X-Id"]
    assert not {"Authorization", "Cookie"} & set(data["headers"])
    assert "s3cret" not in sink.path.read_text()


def test_starlette_and_django_requests_are_stored_as_data(tmp_path):
    from fluxus.contrib._request_data import starlette_request
    from starlette.requests import Request

    request = Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/q",
            "query_string": b"a=1",
            "headers": [(b"cookie", b"sid=x"), (b"x-id", b"7")],
        }
    )
    assert {
        "method": "GET",
        "path": "/q",
        "query": "a=1",
        "headers": {"x-id": "7"},
        "body": None,
        "user": None,
    } == starlette_request(request)

    code = (
        "import django, json, sys\n"
        "from django.conf import settings\n"
        "settings.configure(ALLOWED_HOSTS=['*'])\n"
        "django.setup()\n"
        "from django.test import RequestFactory\n"
        "import fluxus\n"
        f"sink = fluxus.sinks.JsonlFile({str(tmp_path / 'd.jsonl')!r})\n"
        "view = fluxus.dead_letter(sink)(lambda request: 1 / 0)\n"
        "request = RequestFactory().post('/p?x=1', data=b'hi', "
        "content_type='text/plain', HTTP_AUTHORIZATION='Bearer s3cret')\n"
        "try:\n    view(request)\nexcept ZeroDivisionError:\n    pass\n"
        "(letter,) = sink.letters()\n"
        "print(json.dumps(letter.args[0]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 0 == proc.returncode, proc.stderr
    data = json.loads(proc.stdout.splitlines()[-1])
    assert ("POST", "/p", "x=1", "hi", None) == (
        data["method"],
        data["path"],
        data["query"],
        data["body"],
        data["user"],
    )
    assert "Authorization" not in data["headers"]
