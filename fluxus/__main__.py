"""The fluxus command line: ``python -m fluxus demo`` and ``python -m fluxus dlq``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        msg = f"must be > 0, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m fluxus")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo", help="protect a real flaky HTTP service on loopback and show it"
    )
    demo.add_argument(
        "--duration", type=_positive, default=20.0, help="seconds (default: 20)"
    )
    demo.add_argument(
        "--redis",
        metavar="URL",
        default=None,
        help="share the breaker's and the limiter's state through Redis",
    )
    demo.add_argument("--seed", type=int, default=None, help="reproducible run")
    from . import _dlq  # noqa: PLC0415 - keep the demo's start-up lean

    _dlq.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "dlq":
        return _dlq.run(args, sys.stdout, sys.stderr, sys.stdin)

    from . import _demo  # noqa: PLC0415 - only the demo needs its servers

    return _demo.run(
        duration=args.duration,
        seed=args.seed,
        redis_url=args.redis,
        out=sys.stdout,
    )


if __name__ == "__main__":
    sys.exit(main())
