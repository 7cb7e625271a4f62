"""Concurrent replays on real stores: each letter called once, crashes recovered.

Replayers run as real processes on JSON Lines, SQLite and a real
redis-server stream; every call is appended to a shared file, so the test
sees exactly which letter was called how often.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import fluxus
import pytest
from fluxus.sinks import JsonlFile, RedisStream, SQLite

LETTERS = 120

REPLAYER = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
import fluxus
from test_replay_claims import open_store

store = open_store({spec!r})
calls = os.open({calls!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
block_at = {block_at!r}
count = 0

def target(order):
    global count
    count += 1
    os.write(calls, f"{{os.getpid()}} {{order}}\n".encode())
    if count == block_at:
        time.sleep(3600)  # killed here, mid-call
    time.sleep(0.001)

while not os.path.exists({start!r}):
    time.sleep(0.005)
result = fluxus.replay(store, target, claim_timeout={claim_timeout!r})
print(json.dumps([result.replayed, result.failed, result.skipped]))
"""


def open_store(spec: dict[str, str]) -> JsonlFile | SQLite | RedisStream:
    """Open the store *spec* describes (also in the replayer processes)."""
    if spec["kind"] == "jsonl":
        return JsonlFile(spec["where"])
    if spec["kind"] == "sqlite":
        return SQLite(spec["where"])
    return RedisStream(spec["where"], stream=spec["stream"])


@pytest.fixture(params=["jsonl", "sqlite", "redis", "redis-cluster"])
def spec(request, tmp_path):
    if request.param == "jsonl":
        return {"kind": "jsonl", "where": str(tmp_path / "letters.jsonl")}
    if request.param == "sqlite":
        return {"kind": "sqlite", "where": str(tmp_path / "letters.db")}
    if request.param == "redis-cluster":
        url = request.getfixturevalue("redis_cluster").url
    else:
        url = request.getfixturevalue("redis_url")
    return {"kind": "redis", "where": url, "stream": f"claims:{uuid.uuid4().hex}"}


def store_letters(sink, count: int) -> list[str]:
    """Put *count* letters, orders "o0".. (the argument replay passes back)."""
    orders = [f"o{i}" for i in range(count)]
    for order in orders:
        sink.put(
            fluxus.DeadLetter(
                id=uuid.uuid4().hex,
                function="shop.submit",
                args=(order,),
                kwargs={},
                error=None,
                error_type="builtins.OSError",
                error_message="down",
                traceback="",
                failed_at=datetime.now(UTC),
            )
        )
    return orders


def start_replayers(spec, tmp_path, count, *, claim_timeout=30.0, block_at=0):
    calls, start = tmp_path / "calls.txt", tmp_path / f"start-{uuid.uuid4().hex}"
    code = REPLAYER.format(
        tests=str(Path(__file__).parent),
        spec=spec,
        calls=str(calls),
        start=str(start),
        block_at=block_at,
        claim_timeout=claim_timeout,
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    start.touch()
    return procs, calls


def called(calls: Path) -> Counter[str]:
    if not calls.exists():
        return Counter()
    return Counter(line.split()[1] for line in calls.read_text().splitlines())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("replayers", [2, 4])
def test_concurrent_replayers_call_each_letter_once(spec, tmp_path, replayers):
    orders = store_letters(open_store(spec), LETTERS)
    procs, calls = start_replayers(spec, tmp_path, replayers)
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=100)
        assert 0 == proc.returncode, err
        results.append(json.loads(out))

    assert dict.fromkeys(orders, 1) == dict(called(calls))
    assert LETTERS == sum(replayed for replayed, _, _ in results)
    assert [0, 0] == [sum(r[1] for r in results), sum(r[2] for r in results)]
    assert [] == list(open_store(spec).letters())


@pytest.mark.timeout(120)
def test_a_killed_replayers_claims_expire_and_another_replays_them(spec, tmp_path):
    orders = store_letters(open_store(spec), 40)
    claim_timeout = 2.0
    (proc,), calls = start_replayers(
        spec, tmp_path, 1, claim_timeout=claim_timeout, block_at=5
    )
    deadline = time.monotonic() + 60
    while sum(called(calls).values()) < 5:
        assert time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    killed_at = time.monotonic()
    in_flight = orders[4]
    first_four = set(orders[:4])
    assert first_four | {in_flight} == set(called(calls))

    # At once: the letters the dead replayer claimed are still held.
    seen: list[str] = []
    early = fluxus.replay(open_store(spec), seen.append, claim_timeout=30)
    if time.monotonic() < killed_at + claim_timeout:  # the claims cannot have expired
        assert in_flight not in seen
        assert 0 == early.failed + early.skipped
    assert not first_four & set(seen)  # removed after success: never again

    # Once they expire, another replayer takes them.
    time.sleep(max(0.0, killed_at + claim_timeout - time.monotonic()) + 0.1)
    late = fluxus.replay(open_store(spec), seen.append, claim_timeout=30)
    assert in_flight in seen
    assert sorted(set(orders) - first_four) == sorted(seen)
    assert len(seen) == len(set(seen))  # none twice after the crash
    assert 40 - 4 == early.replayed + late.replayed
    assert [] == list(open_store(spec).letters())


def test_a_failed_letter_is_released_for_the_next_replay(spec):
    sink = open_store(spec)
    store_letters(sink, 3)

    def refuse(order):
        raise ConnectionError(f"still down for {order}")

    failed = fluxus.replay(sink, refuse, claim_timeout=60)
    assert (0, 3, 0) == (failed.replayed, failed.failed, failed.skipped)
    assert ["still down for o0"] == [
        str(failed.failures[x]) for x in [*failed.failures][:1]
    ]
    assert all(isinstance(e, ConnectionError) for e in failed.failures.values())
    again = fluxus.replay(open_store(spec), lambda order: None, claim_timeout=60)
    assert 3 == again.replayed


def test_letters_held_by_another_replayer_are_counted_nowhere(spec):
    sink = open_store(spec)
    store_letters(sink, 5)
    holder = sink.claims(60.0)
    held = holder.take(2)
    result = fluxus.replay(open_store(spec), lambda order: None)
    assert (3, 0, 0) == (result.replayed, result.failed, result.skipped)
    assert sorted(x.id for x in held) == sorted(
        x.id for x in open_store(spec).letters()
    )


def test_an_interrupted_replay_gives_its_claims_back(spec):
    sink = open_store(spec)
    store_letters(sink, 3)

    def interrupted(order):
        if order == "o1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fluxus.replay(sink, interrupted, claim_timeout=60)
    seen: list[str] = []
    fluxus.replay(open_store(spec), seen.append)
    assert ["o1", "o2"] == seen


@pytest.mark.parametrize("claim_timeout", [0, -1.0])
def test_claim_timeout_must_be_positive(claim_timeout):
    with pytest.raises(ValueError, match="claim_timeout"):
        fluxus.replay(fluxus.sinks.Memory(), print, claim_timeout=claim_timeout)


def test_jsonl_removal_compacts_the_file(tmp_path):
    sink = JsonlFile(tmp_path / "a.jsonl", fsync=False)
    store_letters(sink, 2100)
    size = sink.path.stat().st_size
    calls: list[str] = []
    result = fluxus.replay(sink, calls.append, function="shop.submit")
    assert 2100 == result.replayed == len(set(calls))
    assert sink.path.stat().st_size < size / 2  # rewritten without the removed
    assert 0 == sink.count()
    assert sink.claims_path.stat().st_size < 1024 * 64
