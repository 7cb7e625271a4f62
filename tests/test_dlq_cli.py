from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid

import fluxus
import pytest
from fluxus.__main__ import main
from fluxus.sinks import JsonlFile, RedisStream, SQLite

TARGET = """
calls = []

def ok(order, qty=1):
    calls.append(order)

def fails(order, qty=1):
    raise OSError("still down")

async def aok(order, qty=1):
    calls.append(order)

not_callable = 3
"""


@pytest.fixture
def target(tmp_path, monkeypatch):
    (tmp_path / "dlq_target.py").write_text(TARGET)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("dlq_target", None)
    yield
    sys.modules.pop("dlq_target", None)


@pytest.fixture(params=["jsonl", "sqlite", "redis"])
def store(request, tmp_path):
    """Return (sink, command-line arguments naming it)."""
    if request.param == "jsonl":
        path = tmp_path / "letters.jsonl"
        return JsonlFile(path), [str(path)]
    if request.param == "sqlite":
        path = tmp_path / "letters.sqlite"
        return SQLite(path), [str(path)]
    url = request.getfixturevalue("redis_url")
    stream = f"cli:{uuid.uuid4().hex}"
    return RedisStream(url, stream=stream), [url, "--stream", stream]


def fill(sink, *orders, secret=False):
    def submit(order, qty=1, password=None):
        raise OSError(f"cannot submit {order}")

    fn = fluxus.dead_letter(sink, redact=["password"])(submit)
    for order in orders:
        with pytest.raises(OSError):
            fn(order, password="pw") if secret else fn(order, qty=2)


def cli(capsys, *argv):
    capsys.readouterr()  # drop the events fill() logged
    code = main(["dlq", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_show_replay_purge_in_process(store, capsys, target):
    sink, where = store
    fill(sink, "a", "b")
    fill(sink, "c", secret=True)
    first = next(iter(sink.letters()))

    code, out, _ = cli(capsys, "list", *where)
    assert 0 == code
    lines = out.splitlines()
    assert ["ID", "FAILED", "AT", "(UTC)", "FUNCTION", "ERROR"] == lines[0].split()
    assert first.id in lines[1]
    assert "OSError: cannot submit a" in lines[1]
    assert "*" == lines[3].split()[4]
    assert lines[4].startswith("3 letters (* arguments redacted")

    code, out, _ = cli(capsys, "list", *where, "--json")
    assert [first.id] == [
        line.split('"id": "')[1][:32] for line in out.splitlines()[:1]
    ]

    code, out, _ = cli(capsys, "show", *where, first.id[:8])
    assert 0 == code
    assert f"id:           {first.id}" in out
    assert "args:         ('a',)" in out
    assert "Traceback (most recent call last)" in out

    code, out, _ = cli(capsys, "replay", *where, "--call", "dlq_target:fails")
    assert (1, "replayed 0, failed 2 (kept), skipped 1 (kept)\n") == (code, out)

    code, out, _ = cli(capsys, "replay", *where, "--target", "dlq_target:ok")
    assert (0, "replayed 2, failed 0 (kept), skipped 1 (kept)\n") == (code, out)
    assert ["a", "b"] == sys.modules["dlq_target"].calls
    assert 1 == len(list(sink.letters()))

    code, out, _ = cli(capsys, "purge", *where, "--yes")
    assert (0, "removed 1 letters\n") == (code, out)
    assert [] == list(sink.letters())


def test_replay_awaits_an_async_target(tmp_path, capsys, target):
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a")
    code, out, _ = cli(capsys, "replay", str(sink.path), "--call", "dlq_target:aok")
    assert (0, "replayed 1, failed 0 (kept), skipped 0 (kept)\n") == (code, out)


def test_replay_function_filter(tmp_path, capsys, target):
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a")
    code, out, _ = cli(
        capsys, "replay", str(sink.path), "--call", "dlq_target:ok", "--function", "x"
    )
    assert (0, "replayed 0, failed 0 (kept), skipped 1 (kept)\n") == (code, out)


def test_purge_asks_first(tmp_path, capsys, monkeypatch):
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a")
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    code, out, _ = cli(capsys, "purge", str(sink.path))
    assert 1 == code
    assert "remove these 1 letters from" in out
    assert 1 == len(list(sink.letters()))

    monkeypatch.setattr(sys, "stdin", io.StringIO("yes\n"))
    assert 0 == cli(capsys, "purge", str(sink.path))[0]
    assert [] == list(sink.letters())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list", "{tmp}/missing.jsonl"], "no dead letter store at"),
        (["list", "{tmp}/missing.db"], "no dead letter store at"),
        (["list", "{tmp}/letters.txt"], "cannot tell what kind of store"),
        (["list", "{tmp}/a.jsonl", "--stream", "s"], "--stream is for Redis"),
        (["replay", "{tmp}/a.jsonl", "--call", "nocolon"], "must be module:function"),
        (["replay", "{tmp}/a.jsonl", "--call", "no_such_mod:f"], "cannot import"),
        (["replay", "{tmp}/a.jsonl", "--call", "os:no_such"], "cannot import"),
        (["replay", "{tmp}/a.jsonl", "--call", "os:sep"], "is not callable"),
    ],
)
def test_clear_errors(tmp_path, capsys, argv, message):
    fill(JsonlFile(tmp_path / "a.jsonl"), "a")
    (tmp_path / "letters.txt").write_text("")
    code, _, err = cli(capsys, *(arg.format(tmp=tmp_path) for arg in argv))
    assert 2 == code
    assert message in err


def test_corrupt_stores(tmp_path, capsys):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("this is\nnot a dead letter file\n")
    code, _, err = cli(capsys, "list", str(jsonl))
    assert 2 == code
    assert "warning:" in err
    assert "holds no readable dead letter" in err

    db = tmp_path / "a.db"
    db.write_bytes(b"garbage" * 100)
    code, _, err = cli(capsys, "list", str(db))
    assert 2 == code
    assert "not a readable SQLite database" in err


def test_a_torn_line_is_reported_but_the_rest_is_listed(tmp_path, capsys):
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a")
    with sink.path.open("a") as file:
        file.write('{"v": 1, "id": "torn')
    code, out, err = cli(capsys, "list", str(sink.path))
    assert 0 == code
    assert "1 letter\n" in out
    assert "line 2 is not a readable dead letter" in err


def test_show_unknown_or_ambiguous_id(tmp_path, capsys):
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a", "b")
    code, _, err = cli(capsys, "show", str(sink.path), "zz")
    assert (1, "error: no letter with an id starting with 'zz'\n") == (code, err)
    code, _, err = cli(capsys, "show", str(sink.path), "")
    assert 1 == code
    assert "2 letters" in err


def test_unreachable_redis_hides_the_password(capsys):
    code, _, err = cli(capsys, "list", "redis://:topsecret@127.0.0.1:1/0")
    assert 2 == code
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in err
    assert "topsecret" not in err


def test_progress_bar_on_a_terminal(tmp_path, target, monkeypatch):
    from fluxus import _dlq

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a", "b")
    err = Terminal()
    args = main.__globals__["argparse"].Namespace(
        sink=str(sink.path),
        stream=None,
        action="replay",
        call="dlq_target:ok",
        function=None,
    )
    assert 0 == _dlq.run(args, io.StringIO(), err, io.StringIO())
    assert err.getvalue().endswith("] 2/2\n")
    assert "\rreplaying [###############...............] 1/2" in err.getvalue()


@pytest.mark.timeout(60)
def test_the_command_line_through_a_real_subprocess(tmp_path):
    (tmp_path / "dlq_target.py").write_text(TARGET)
    path = tmp_path / "letters.jsonl"
    sink = JsonlFile(path)
    fill(sink, "a", "b")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def run(*argv, stdin=""):
        return subprocess.run(
            [sys.executable, "-m", "fluxus", "dlq", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=30,
            check=False,
        )

    listed = run("list", str(path))
    assert 0 == listed.returncode
    assert "2 letters" in listed.stdout
    shown = run("show", str(path), list(sink.letters())[1].id)
    assert "args:         ('b',)" in shown.stdout
    replayed = run("replay", str(path), "--call", "dlq_target:ok")
    assert (0, "replayed 2, failed 0 (kept), skipped 0 (kept)\n") == (
        replayed.returncode,
        replayed.stdout,
    )
    fill(sink, "c")
    refused = run("purge", str(path), stdin="\n")
    assert 1 == refused.returncode
    assert 0 == run("purge", str(path), "--yes").returncode
    assert [] == list(sink.letters())
    missing = run("list", str(tmp_path / "nope.jsonl"))
    assert (2, "") == (missing.returncode, missing.stdout)
    assert "no dead letter store" in missing.stderr


def test_purge_removes_only_the_letters_it_listed(store, capsys, monkeypatch):
    sink, where = store
    fill(sink, "a", "b")

    class ArrivesWhileAsking(io.StringIO):
        def readline(self, *args):
            fill(sink, "late")  # stored between the listing and the answer
            return "y\n"

    monkeypatch.setattr(sys, "stdin", ArrivesWhileAsking())
    code, out, _ = cli(capsys, "purge", *where)
    assert 0 == code
    assert "remove these 2 letters" in out
    assert "removed 2 letters" in out
    assert [("late",)] == [x.args for x in sink.letters()]


def test_list_filters_limit_and_json(tmp_path, capsys):
    sink = SQLite(tmp_path / "a.db")
    fill(sink, "a", "b", "c")

    @fluxus.dead_letter(sink)
    def refund(order):
        raise KeyError(order)

    with pytest.raises(KeyError):
        refund("r")
    code, out, _ = cli(capsys, "list", str(sink.path), "--function", "*refund")
    assert (0, 3) == (code, len(out.splitlines()))  # header, one row, count
    assert "refund" in out.splitlines()[1]
    _, out, _ = cli(capsys, "list", str(sink.path), "--error", "KeyError", "--json")
    (line,) = out.splitlines()
    assert ["r"] == __import__("json").loads(line)["args"]
    _, out, _ = cli(capsys, "list", str(sink.path), "--error", "builtins.OSError")
    assert "3 letters" in out
    _, out, _ = cli(capsys, "list", str(sink.path), "--json", "--limit", "2")
    assert 2 == len(out.splitlines())
    _, out, _ = cli(capsys, "list", str(sink.path), "--error", "Nope")
    assert out.endswith("0 letters\n")


def test_progress_lines_without_a_terminal(tmp_path, monkeypatch):
    from fluxus import _dlq

    monkeypatch.setattr(_dlq, "PROGRESS_ABOVE", 2)
    sink = JsonlFile(tmp_path / "a.jsonl")
    fill(sink, "a", "b", "c")
    out, err = io.StringIO(), io.StringIO()
    args = main.__globals__["argparse"].Namespace(
        sink=str(sink.path),
        stream=None,
        action="list",
        json=True,
        limit=None,
        function=None,
        error=None,
    )
    assert 0 == _dlq.run(args, out, err, io.StringIO())
    assert 3 == len(out.getvalue().splitlines())  # stdout: the result only
    assert err.getvalue().endswith("listing: 3/3 letters\n")


TARGET_WITH_CLIENT = """
import os

calls = []

class Client:
    def __init__(self, base):
        self.base = base

    def get_quote(self, symbol, token=None):
        assert token == os.environ["QUOTE_TOKEN"], token
        calls.append((self.base, symbol))
        with open(os.environ["CALLS_FILE"], "a") as file:
            file.write(symbol + "\\n")

def make_client():
    return Client("https://quotes.example")
"""


@pytest.mark.timeout(60)
def test_replay_a_method_with_a_factory_and_fill_through_a_subprocess(tmp_path):
    (tmp_path / "quotes_target.py").write_text(TARGET_WITH_CLIENT)
    path = tmp_path / "letters.db"
    sink = SQLite(path)

    class Client:
        @fluxus.dead_letter(sink, redact=["token"])
        def get_quote(self, symbol, token=None):
            raise ConnectionError(f"no quote for {symbol}")

    for symbol in ("ACME", "INITECH"):
        with pytest.raises(ConnectionError):
            Client().get_quote(symbol, token="s3cret")
    (first, _) = sink.letters()
    assert (("ACME",), {"token": "<redacted>"}) == (first.args, first.kwargs)
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "QUOTE_TOKEN": "s3cret",
        "CALLS_FILE": str(tmp_path / "calls.txt"),
    }

    def run(*argv):
        return subprocess.run(
            [sys.executable, "-m", "fluxus", "dlq", *argv],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=30,
            check=False,
        )

    call = ["--call", "quotes_target:make_client().get_quote"]
    skipped = run("replay", str(path), *call)
    assert (0, "replayed 0, failed 0 (kept), skipped 2 (kept)\n") == (
        skipped.returncode,
        skipped.stdout,
    )
    listed = run("list", str(path), "--json")
    assert 2 == len(listed.stdout.splitlines())
    assert "s3cret" not in listed.stdout
    replayed = run("replay", str(path), *call, "--fill", "token=QUOTE_TOKEN")
    assert (0, "replayed 2, failed 0 (kept), skipped 0 (kept)\n") == (
        replayed.returncode,
        replayed.stdout,
    ), replayed.stderr
    assert "ACME\nINITECH\n" == (tmp_path / "calls.txt").read_text()
    missing = run("replay", str(path), *call, "--fill", "token=NOT_SET_ANYWHERE")
    assert 2 == missing.returncode
    assert "NOT_SET_ANYWHERE is not set" in missing.stderr
    bad = run("replay", str(path), "--call", "quotes_target:make_client(1).get")
    assert 2 == bad.returncode
    assert "must be module:function" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
    code = (
        "import sys; sys.modules['redis'] = None\n"
        "from fluxus.__main__ import main\n"
        "sys.exit(main(['dlq', 'list', 'redis://127.0.0.1:1/0']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert 2 == proc.returncode
    assert "pip install 'fluxus[redis]'" in proc.stderr
    assert "Traceback" not in proc.stderr
