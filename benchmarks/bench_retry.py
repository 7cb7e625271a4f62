"""Happy-path cost of fluxus.retry against a bare call and its peers.

Run with ``tox -e bench`` or ``python benchmarks/bench_retry.py``. Every
contender wraps the same trivial function and never fails, so what is
measured is what the decorator costs when nothing goes wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import stamina
import tenacity

import backoff

sys.path.insert(0, str(Path(__file__).parent))

import fluxus

from _harness import compare, report, time_async, time_sync


def build(work):
    """Return the contenders, each wrapping *work* (sync or async)."""
    return {
        "bare call": work,
        "fluxus.retry": fluxus.retry(3, on=OSError)(work),
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


def work(x=1):
    return x


async def awork(x=1):
    return x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20_000)
    args = parser.parse_args()

    sync = build(work)
    medians = compare(
        {name: (lambda f=f: time_sync(f, args.calls)) for name, f in sync.items()},
        args.rounds,
    )
    lines = report(
        f"sync, {args.rounds} rounds x {args.calls} calls, medians",
        medians,
        baseline="bare call",
        reference="tenacity.retry",
    )
    coro = build(awork)
    medians = compare(
        {name: (lambda f=f: time_async(f, args.calls)) for name, f in coro.items()},
        args.rounds,
    )
    lines += [
        "",
        *report(
            f"async, {args.rounds} rounds x {args.calls} calls, medians",
            medians,
            baseline="bare call",
            reference="tenacity.retry",
        ),
    ]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
