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

Run with ``tox -e bench`` or ``python benchmarks/bench_stack.py``.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pyresilience
import tenacity

sys.path.insert(0, str(Path(__file__).parent))

import fluxus
from fluxus.sinks import Memory

from _harness import sync_and_async


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


async def awork(x=1):
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=5_000)
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
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
