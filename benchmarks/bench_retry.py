"""Happy-path cost of fluxus.retry against a bare call and its peers.

Run with ``tox -e bench`` or ``python benchmarks/bench_retry.py``. Every
contender wraps the same trivial function and never fails, so what is
measured is what the decorator costs when nothing goes wrong.

Two tables per mode:

- decorators: ``fluxus.retry`` with and without ``on_result`` (the goal: the
  predicate costs at most 0.05 us over the plain retry, about one call of
  the predicate itself, which "bare call + predicate" measures), tenacity,
  stamina, backoff;
- blocks: ``for attempt in policy.attempts(): with attempt:`` (and ``async
  for``) against tenacity's ``for attempt in Retrying()`` (the goal: at
  most 0.1x its time per successful block) and stamina's
  ``retry_context``.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import stamina
import tenacity

import backoff

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import sync_and_async


def rejects(value):
    """The ``on_result`` predicate measured: retry on ``None``."""
    return value is None


def with_predicate(work):
    """Return a bare call of *work* followed by one call of the predicate.

    Its overhead over the bare call is the predicate's own cost, the floor
    of what ``on_result`` can add to a retry.
    """
    if inspect.iscoroutinefunction(work):

        async def checked_async():
            return rejects(await work())

        return checked_async

    def checked():
        return rejects(work())

    return checked


def build(work):
    """Return the contenders, each wrapping *work* (sync or async)."""
    return {
        "bare call": work,
        "bare call + predicate": with_predicate(work),
        "fluxus.retry": fluxus.retry(3, on=OSError)(work),
        "fluxus.retry on_result": fluxus.retry(3, on=OSError, on_result=rejects)(work),
        "tenacity.retry": tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            retry=tenacity.retry_if_exception_type(OSError),
            reraise=True,
        )(work),
        "stamina.retry": stamina.retry(on=OSError, attempts=3)(work),
        "backoff.on_exception": backoff.on_exception(
            backoff.expo, OSError, max_tries=3
        )(work),
    }


def build_blocks(work):
    """Return the block-form contenders, each running one block around *work*."""
    policy = fluxus.retry(3, on=OSError)
    options = {
        "stop": tenacity.stop_after_attempt(3),
        "retry": tenacity.retry_if_exception_type(OSError),
        "reraise": True,
    }
    if inspect.iscoroutinefunction(work):
        return _async_blocks(work, policy, options)
    reused = tenacity.Retrying(**options)

    def fluxus_block():
        for attempt in policy.attempts():
            with attempt:
                work()

    def tenacity_block():
        for attempt in tenacity.Retrying(**options):
            with attempt:
                work()

    def tenacity_reused_block():
        for attempt in reused:
            with attempt:
                work()

    def stamina_block():
        for attempt in stamina.retry_context(on=OSError, attempts=3):
            with attempt:
                work()

    return {
        "bare call": work,
        "fluxus attempts()": fluxus_block,
        "tenacity Retrying()": tenacity_block,
        "tenacity reused Retrying": tenacity_reused_block,
        "stamina.retry_context": stamina_block,
    }


def _async_blocks(work, policy, options):
    reused = tenacity.AsyncRetrying(**options)

    async def fluxus_block():
        async for attempt in policy.attempts():
            with attempt:
                await work()

    async def tenacity_block():
        async for attempt in tenacity.AsyncRetrying(**options):
            with attempt:
                await work()

    async def tenacity_reused_block():
        async for attempt in reused:
            with attempt:
                await work()

    async def stamina_block():
        async for attempt in stamina.retry_context(on=OSError, attempts=3):
            with attempt:
                await work()

    return {
        "bare call": work,
        "fluxus attempts()": fluxus_block,
        "tenacity Retrying()": tenacity_block,
        "tenacity reused Retrying": tenacity_reused_block,
        "stamina.retry_context": stamina_block,
    }


def work(x=1):
    return x


async def awork(x=1):
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    lines = sync_and_async(
        build,
        work,
        awork,
        rounds=args.rounds,
        calls=args.calls,
        reference="tenacity.retry",
    )
    print("decorators")
    print("\n".join(lines))
    blocks = sync_and_async(
        build_blocks,
        work,
        awork,
        rounds=args.rounds,
        calls=max(1, args.calls // 10),
        reference="tenacity Retrying()",
    )
    print("\nblocks (per successful block)")
    print("\n".join(blocks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
