"""The in-memory stores' mutex: it excludes, and callers never convoy on it."""

from __future__ import annotations

import resource
import threading
import time
from collections.abc import Callable

import fluxus
import pytest
from fluxus._mutex import Mutex


def test_mutex_excludes_other_threads():
    mutex = Mutex()
    total = [0]

    def add() -> None:
        for _ in range(300):
            with mutex:
                seen = total[0]
                time.sleep(0)  # gives the GIL away inside the section
                total[0] = seen + 1

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert total[0] == 8 * 300


def test_a_caller_finding_the_mutex_taken_waits_for_its_release():
    mutex = Mutex()
    order: list[str] = []
    mutex.acquire()
    entered = threading.Event()

    def enter() -> None:
        with mutex:
            order.append("entered")
        entered.set()

    thread = threading.Thread(target=enter)
    thread.start()
    time.sleep(0.02)
    order.append("released")
    mutex.release()
    assert entered.wait(5)
    thread.join()
    assert order == ["released", "entered"]


def test_the_mutex_is_released_when_the_section_raises():
    mutex = Mutex()
    with pytest.raises(KeyError), mutex:
        raise KeyError
    with mutex:  # would wait forever had it stayed taken
        pass


def _switches_per_call(call: Callable[[], object], threads: int, calls: int) -> float:
    """Voluntary context switches per call, counted by each calling thread."""
    counted: list[int] = []
    gate = threading.Barrier(threads)

    def run() -> None:
        gate.wait()
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw
        for _ in range(calls):
            call()
        counted.append(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw - before)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return sum(counted) / (threads * calls)


STORES = {
    "token bucket": lambda: fluxus.rate_limit(1e9, burst=10**9)(lambda: None),
    "fixed window": lambda: fluxus.rate_limit(
        "1000000000/second", strategy="fixed-window"
    )(lambda: None),
    "bulkhead": lambda: fluxus.bulkhead(1000)(lambda: None),
}


@pytest.mark.skipif(
    not hasattr(resource, "RUSAGE_THREAD"), reason="per-thread counts: Linux"
)
@pytest.mark.parametrize("store", list(STORES))
def test_callers_of_a_memory_store_do_not_convoy(store):
    """8 threads calling one store: no thread switch per call.

    With a plain ``threading.Lock`` each of these took 1.1 to 2.6 voluntary
    switches a call from 8 threads (a convoy: see ``fluxus._mutex``); a
    thread waiting its turn for the GIL accounts for about one per 5 ms.
    """
    call = STORES[store]()
    switches = _switches_per_call(call, threads=8, calls=4_000)
    assert switches < 0.2, f"{switches:.2f} voluntary switches a call"
