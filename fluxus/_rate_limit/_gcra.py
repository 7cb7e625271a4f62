"""The token bucket, pure: GCRA's arithmetic and the stores' answers.

limits has no token bucket and counts in whole-second windows, so fluxus
adds one: the Generic Cell Rate Algorithm (GCRA), which keeps a single
number per bucket, the *theoretical arrival time* (TAT) at which the bucket
would be full again. :func:`reserve` is the whole arithmetic, pure and
shared by :class:`MemoryTokenBuckets` (a dict behind a lock) and
:class:`RedisTokenBuckets` (the same arithmetic in one Lua script, run
atomically by Redis with Redis's clock). A caller that has to wait reserves
its slot in the schedule before it sleeps, so waiters are served first come,
first served and a newcomer can never overtake them.

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class StorageUnavailableError(Exception):
    """The storage could not be reached; ``__cause__`` says why."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket: *capacity* tokens, one more every *interval* seconds."""

    interval: float
    capacity: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The storage's answer to one request for a permit.

    Attributes:
        admitted: Whether the permit is granted (possibly after *wait*).
        wait: Seconds until the permit is usable; when not admitted, seconds
            until one is expected to be free.
        token: What :meth:`refund` needs to give a reserved slot back.
    """

    admitted: bool
    wait: float
    token: object = None


ADMITTED = Reservation(admitted=True, wait=0.0)

_TOLERANCE = 1e-9


def reserve(
    tats: Sequence[float],
    buckets: Sequence[Bucket],
    now: float,
    max_wait: float,
) -> tuple[float, list[float] | None]:
    """Decide one request against GCRA buckets: the whole token-bucket arithmetic.

    A bucket of capacity ``b`` refilled one token per ``T`` seconds admits a
    call arriving at ``s`` when its TAT is at most ``s + (b - 1) * T``; the
    call then moves the TAT to ``max(TAT, s) + T``. The call is scheduled at
    the earliest ``s >= now`` every bucket admits.

    Args:
        tats: Each bucket's theoretical arrival time (``-inf`` when fresh).
        buckets: The buckets, all of which must admit the call.
        now: The current time on the storage's clock.
        max_wait: How long the caller accepts to wait.

    Returns:
        ``(wait, new_tats)``: the seconds until the call may run, and the
        TATs to store, or ``None`` when *wait* exceeds *max_wait* (nothing
        is consumed then).
    """
    if len(buckets) == 1:  # a numeric rate: spare it the loops' overhead
        tat, bucket = tats[0], buckets[0]
        start = tat - (bucket.capacity - 1) * bucket.interval
        if start < now:  # noqa: PLR1730 - max() costs a call on this hot path
            start = now
        wait = _wait(start, now)
        if wait > max_wait:
            return wait, None
        new = (tat if tat > start else start) + bucket.interval  # noqa: FURB136
        return wait, [new]
    start = max(
        now,
        *(
            t - (b.capacity - 1) * b.interval
            for t, b in zip(tats, buckets, strict=True)
        ),
    )
    wait = _wait(start, now)
    if wait > max_wait:
        return wait, None
    return wait, [
        max(tat, start) + bucket.interval
        for tat, bucket in zip(tats, buckets, strict=True)
    ]


def _wait(start: float, now: float) -> float:
    """Return ``start - now``, or 0 when only rounding separates them.

    Sums of intervals drift from products by a few ulps; without the
    tolerance a refilled token could be refused by 1e-16 seconds.
    """
    wait = start - now
    return 0.0 if wait <= _TOLERANCE else wait
