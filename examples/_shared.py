"""What the example apps share: a flaky upstream and an upstream that is down.

The apps put ``fluxus.rate_limit(..., key=client_ip)`` on their views and a
``fluxus.circuit_breaker`` around :func:`fetch_status`; none of them passes
``storage=``, so ``FLUXUS_STORAGE_URI`` (a Redis URL, for example) decides
where the limits and the circuit live, even though the decorators run
before the app reads its configuration.
"""

from __future__ import annotations

import itertools

import fluxus

_calls = itertools.count()


@fluxus.retry(3, on=ConnectionError, backoff=fluxus.backoff.exponential(0.05))
def fetch_quote() -> str:
    """Ask a flaky upstream service: every other call fails."""
    if next(_calls) % 2 == 0:
        msg = "upstream reset the connection"
        raise ConnectionError(msg)
    return "Simple is better than complex."


#: After two failures in a row the status service is left alone for 30 s:
#: callers get 503 with ``Retry-After`` at once instead of waiting on it.
status_breaker = fluxus.circuit_breaker(
    failure_threshold=2, reset_timeout=30.0, name="status-service"
)


@status_breaker
def fetch_status() -> str:
    """Ask a status service that is down."""
    msg = "status service unreachable"
    raise ConnectionError(msg)


_orders = itertools.count()


def submit_order(order_id: str) -> str:
    """Hand an order to a flaky order service: every third call fails."""
    if next(_orders) % 3 == 2:  # noqa: PLR2004 - every third call
        msg = "order service reset the connection"
        raise ConnectionError(msg)
    return f"receipt-{order_id}"
