"""Happy-path cost of a full fluxus.stack against tenacity alone and peers.

The full stack is the five policies (memory dead letter sink, memory rate
limit with room for every call, circuit breaker, default timeout, retry) on
a trivial function that never fails. It is compared in ONE process with:

- ``tenacity.retry`` alone (the goal: the whole sync stack costs at most
  1.0x of it; the async stack at most 0.5x of tenacity's async retry),
- pyresilience's combined decorator (retry + breaker + timeout + rate
  limiter),
- the same five fluxus policies stacked by hand (five wrappers), to show
  what compiling them into one wrapper saves.

Then, from 1, 8, 32 and 64 threads at once (``--threads``), the sync stack
against tenacity alone with the no-op function (the goal: at least
tenacity's throughput at each count), and against the bare function with a
function that sleeps 1 ms (the goal: at least 0.7x the bare throughput at
32 and 64 threads, with no call failing). Beside them, "hand-off floor": the
callee handed to a thread of the caller's own through two pipes and
nothing else (no deadline, no context, no other layer). A deadline that
holds for a callee blocked in a worker thread's ``time.sleep`` or socket
read needs the call in another thread, so this is the most any sync
stack with such a deadline can serve on the machine.

Run with ``tox -e bench`` or ``python benchmarks/bench_stack.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import pyresilience
import tenacity

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus.sinks import Memory

from _harness import compare_throughput, report_throughput, sync_and_async


def five(*, timeout_strategy: str = "thread"):
    return [
        fluxus.dead_letter(Memory()),
        fluxus.rate_limit(1e9, burst=10**9),
        fluxus.circuit_breaker(),
        fluxus.timeout(5, strategy=timeout_strategy),
        fluxus.retry(3, on=OSError),
    ]


def by_hand(work, policies):
    for policy in reversed(policies):
        work = policy(work)
    return work


def build(work, *, is_async: bool):
    contenders = {
        "bare call": work,
        "fluxus.stack (5)": fluxus.stack(*five())(work),
        "fluxus 5 by hand": by_hand(work, five()),
        "fluxus.stack, coop": fluxus.stack(*five(timeout_strategy="cooperative"))(work),
        "tenacity.retry": tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            retry=tenacity.retry_if_exception_type(OSError),
            reraise=True,
        )(work),
        "pyresilience": pyresilience.resilient(
            retry=pyresilience.RetryConfig(max_attempts=3, retry_on=(OSError,)),
            timeout=pyresilience.TimeoutConfig(seconds=5),
            circuit_breaker=pyresilience.CircuitBreakerConfig(),
            rate_limiter=pyresilience.RateLimiterConfig(max_calls=10**9, period=1.0),
        )(work),
    }
    if is_async:
        # The cooperative strategy is what async code gets anyway.
        del contenders["fluxus.stack, coop"]
    return contenders


def work(x=1):
    return x


def slow_work():
    time.sleep(0.001)


def tenacity_alone(fn):
    return tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        retry=tenacity.retry_if_exception_type(OSError),
        reraise=True,
    )(fn)


class _Floor:
    """A caller's own thread and pipes; signals keep the GIL (libc writes)."""

    write = ctypes.PyDLL(None).write

    def __init__(self):
        self.go_r, self.go_w = os.pipe()
        self.done_r, self.done_w = os.pipe()
        self.job = self.result = None
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        go_r, done_w = self.go_r, self.done_w
        while os.read(go_r, 1):
            self.result = self.job()
            self.write(done_w, b"d", 1)
        for fd in (go_r, self.done_r, done_w):
            os.close(fd)

    def call(self, func):
        self.job = func
        self.write(self.go_w, b"g", 1)
        os.read(self.done_r, 1)
        return self.result

    def __del__(self):
        os.close(self.go_w)  # the thread reads the end of the pipe and exits


def hand_off_floor(func):
    """*func* run in a thread of the caller's own: the floor of any hand-off."""
    seats = threading.local()

    def call():
        try:
            floor = seats.floor
        except AttributeError:
            floor = seats.floor = _Floor()
        return floor.call(func)

    return call


def threads_section(counts, rounds, seconds):
    """The sync stack's throughput from many threads, no-op and 1 ms callee."""
    lines = []
    for threads in counts:
        for callee, reference in ((work, "tenacity.retry"), (slow_work, "bare call")):
            contenders = {
                "bare call": callee,
                "tenacity.retry": tenacity_alone(callee),
                "fluxus.stack (5)": fluxus.stack(*five())(callee),
                "fluxus.stack, coop": fluxus.stack(
                    *five(timeout_strategy="cooperative")
                )(callee),
                "hand-off floor": hand_off_floor(callee),
            }
            medians, failed = compare_throughput(
                contenders, threads, rounds=rounds, seconds=seconds
            )
            label = "no-op" if callee is work else "1 ms"
            lines += [
                "",
                *report_throughput(
                    f"sync, {label} callee, {threads} thread(s), {rounds} rounds x "
                    f"{seconds}s, medians",
                    medians,
                    failed,
                    baseline="bare call",
                    reference=reference,
                ),
            ]
    return lines


async def awork(x=1):
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--threads", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=0.3)
    args = parser.parse_args()
    warnings.simplefilter("ignore", fluxus.LayeringWarning)

    lines = sync_and_async(
        lambda fn: build(fn, is_async=fn is awork),
        work,
        awork,
        rounds=args.rounds,
        calls=args.calls,
        reference="tenacity.retry",
    )
    counts = [int(n) for n in args.threads.split(",") if n]
    lines += threads_section(counts, args.rounds, args.seconds)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
