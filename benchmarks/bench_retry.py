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

from _harness import sync_and_async


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

    lines = sync_and_async(
        build,
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
