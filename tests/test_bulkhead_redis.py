"""Bulkheads shared through a real redis-server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import fluxus
import pytest
import redis
from fluxus.instrumentation import BulkheadStorageUnavailable

pytestmark = pytest.mark.redis


@pytest.fixture
def name():
    return f"test-{uuid.uuid4().hex}"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_two_policies_with_one_name_share_the_slots(mode, any_redis_url, name):
    here = fluxus.bulkhead(2, name=name, storage=any_redis_url)
    there = fluxus.bulkhead(2, name=name, storage=any_redis_url)
    fn = there(mode.make(lambda: "ran"))

    with here, here:
        assert 2 == here.in_use == there.in_use
        with pytest.raises(fluxus.BulkheadFull):
            mode.run(fn)
    assert 0 == there.in_use
    assert "ran" == mode.run(fn)
    assert 0 == there.in_use


def test_waiters_get_freed_slots_in_order(any_redis_url, name):
    bh = fluxus.bulkhead(1, max_waiting=3, timeout=10, name=name, storage=any_redis_url)
    order = []

    @bh
    def work(i):
        order.append(i)

    threads = []
    with bh:
        for i in range(3):
            thread = threading.Thread(target=work, args=(i,))
            thread.start()
            threads.append(thread)
            assert wait_until(lambda i=i: bh.waiting == i + 1)
        with pytest.raises(fluxus.BulkheadFull):
            work(99)  # every waiting place is taken
    for thread in threads:
        thread.join(10)
    assert [0, 1, 2] == order
    assert (0, 0) == (bh.in_use, bh.waiting)


def test_async_waiters_time_out_and_cancel_without_leaking(redis_url, name):
    bh = fluxus.bulkhead(1, max_waiting=2, timeout=0.2, name=name, storage=redis_url)

    @bh
    async def work():
        await asyncio.sleep(10)

    async def main():
        async with bh:
            started = time.monotonic()
            with pytest.raises(fluxus.BulkheadFull):
                await work()
            assert time.monotonic() - started >= 0.15
            waiter = asyncio.create_task(work())
            while bh.waiting < 1:  # noqa: ASYNC110 - polling another side
                await asyncio.sleep(0.005)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        holder = asyncio.create_task(work())
        while bh.in_use < 1:  # noqa: ASYNC110 - polling another side
            await asyncio.sleep(0.005)
        holder.cancel()
        with pytest.raises(asyncio.CancelledError):
            await holder
        for _ in range(200):
            if bh.in_use == 0:
                break
            await asyncio.sleep(0.01)
        return bh.in_use, bh.waiting

    assert (0, 0) == asyncio.run(main())


WORKER = textwrap.dedent(
    """
    import sys, threading, time
    import fluxus, redis

    url, name, counter = sys.argv[1:4]
    r = redis.Redis.from_url(url)
    peak = r.register_script(
        "local n = redis.call('INCR', KEYS[1]) "
        "if n > tonumber(redis.call('GET', KEYS[2]) or '0') then "
        "redis.call('SET', KEYS[2], n) end return n"
    )
    bh = fluxus.bulkhead(3, max_waiting=64, timeout=60, name=name, storage=url)

    @bh
    def work():
        peak(keys=[counter, counter + ':peak'])
        time.sleep(0.002)
        r.decr(counter)

    def many():
        for _ in range(20):
            work()

    threads = [threading.Thread(target=many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done", flush=True)
    """
)


@pytest.mark.timeout(180)
def test_four_processes_never_exceed_the_limit(redis_url, name):
    counter = f"{name}:running"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, name, counter],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    client = redis.Redis.from_url(redis_url)
    assert ["done"] * 4 == outs
    assert 3 == int(client.get(f"{counter}:peak"))
    assert 0 == int(client.get(counter))
    assert 0 == fluxus.bulkhead(3, name=name, storage=redis_url).in_use


HOLDER = textwrap.dedent(
    """
    import sys, time
    import fluxus

    url, name, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    bh = fluxus.bulkhead(1, name=name, storage=url, lease=lease)
    with bh:
        print("held", flush=True)
        time.sleep(60)
    """
)


def test_a_killed_holder_frees_its_slot_after_the_lease(redis_url, name):
    lease = 0.6
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_url, name, str(lease)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert "held" == holder.stdout.readline().strip()
        bh = fluxus.bulkhead(1, name=name, storage=redis_url)
        # A live holder renews its lease: it outlives several lease periods.
        time.sleep(lease * 3)
        assert 1 == bh.in_use
        with pytest.raises(fluxus.BulkheadFull):
            bh(lambda: None)()
        os.kill(holder.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert wait_until(lambda: bh.in_use == 0)
        assert time.monotonic() - killed <= lease + 5
    finally:
        holder.kill()
        holder.wait(10)
        holder.stdout.close()
    assert "ran" == bh(lambda: "ran")()


def test_a_decorated_call_renews_its_lease(redis_url, name):
    bh = fluxus.bulkhead(1, name=name, storage=redis_url, lease=0.3)
    other = fluxus.bulkhead(1, name=name, storage=redis_url)

    @bh
    def long_call():
        time.sleep(1.2)
        return other.in_use

    assert 1 == long_call()
    assert 0 == other.in_use


@pytest.mark.parametrize("fail_open", [True, False])
def test_redis_down_follows_the_fail_mode(mode, name, events, fail_open):
    url = f"redis://:sekrit@127.0.0.1:{free_port()}/0"
    bh = fluxus.bulkhead(1, name=name, storage=url, fail_open=fail_open)
    fn = bh(mode.make(lambda: "ran"))

    started = time.monotonic()
    if fail_open:
        assert ["ran", "ran"] == [mode.run(fn), mode.run(fn)]
    else:
        for _ in range(2):
            with pytest.raises(fluxus.BulkheadFull, match="unreachable") as info:
                mode.run(fn)
        assert "sekrit" not in str(info.value)
        assert "redis://:***@127.0.0.1" in info.value.storage
    assert time.monotonic() - started < 5
    (down,) = [e for e in events if isinstance(e, BulkheadStorageUnavailable)]
    assert fail_open == down.fail_open
    assert "sekrit" not in repr(events)


def test_a_stack_takes_and_gives_back_redis_slots(mode, redis_url, name):
    bh = fluxus.bulkhead(1, name=name, storage=redis_url)
    fn = fluxus.stack(bh, fluxus.fallback(value="full"))(mode.make(lambda: "ran"))

    with bh:
        assert "full" == mode.run(fn)
    assert "ran" == mode.run(fn)
    assert 0 == bh.in_use
    assert fluxus.instrumentation.Stats(calls=3, rejections=1) == bh.stats
