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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field


class StorageUnavailableError(Exception):
    """The storage could not be reached; ``__cause__`` says why."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One token bucket: *capacity* tokens, one more every *interval* seconds.

    *since* is when this limit replaced another, on the store's clock
    (``-inf`` when it did not): a bucket last counted under the old limit
    is converted as it stood then (:func:`convert`).
    """

    interval: float
    capacity: int
    since: float = field(default=-math.inf, compare=False)


@dataclass(frozen=True, slots=True)
class Reservation:
    """The storage's answer to one request for a permit.

    Attributes:
        admitted: Whether the permit is granted (possibly after *wait*).
        wait: Seconds until the permit is usable; when not admitted, seconds
            until one is expected to be free.
        token: What :meth:`refund` needs to give a reserved slot back.
        origin: The store that made the reservation (the one to refund).
    """

    admitted: bool
    wait: float
    token: object = None
    origin: object = None


ADMITTED = Reservation(admitted=True, wait=0.0)

_TOLERANCE = 1e-9

_nextafter = math.nextafter


def reserve(
    tats: Sequence[float],
    buckets: Sequence[Bucket],
    now: float,
    max_wait: float,
    cost: int = 1,
) -> tuple[float, list[float] | None]:
    """Decide one request against GCRA buckets: the whole token-bucket arithmetic.

    A bucket of capacity ``b`` refilled one token per ``T`` seconds admits a
    call of cost ``c`` arriving at ``s`` when its TAT is at most
    ``s + (b - c) * T``; the call then moves the TAT to ``max(TAT, s) + c * T``.
    The call is scheduled at the earliest ``s >= now`` every bucket admits.

    Args:
        tats: Each bucket's theoretical arrival time (``-inf`` when fresh).
        buckets: The buckets, all of which must admit the call.
        now: The current time on the storage's clock.
        max_wait: How long the caller accepts to wait.
        cost: The tokens the call takes (at most every bucket's capacity).

    Returns:
        ``(wait, new_tats)``: the seconds until the call may run, and the
        TATs to store, or ``None`` when *wait* exceeds *max_wait* (nothing
        is consumed then).
    """
    if len(buckets) == 1:  # a numeric rate: spare it the loops' overhead
        tat, bucket = tats[0], buckets[0]
        start = tat - (bucket.capacity - cost) * bucket.interval
        if start < now:  # noqa: PLR1730 - max() costs a call on this hot path
            start = now
        wait = _wait(start, now)
        if wait > max_wait:
            return wait, None
        base = tat if tat > start else start  # noqa: FURB136 - max() is a call
        step = cost * bucket.interval
        new = base + step
        if new - base < step:  # rounded down: see later()
            new = _nextafter(new, math.inf)
        return wait, [new]
    start = max(
        now,
        *(
            t - (b.capacity - cost) * b.interval
            for t, b in zip(tats, buckets, strict=True)
        ),
    )
    wait = _wait(start, now)
    if wait > max_wait:
        return wait, None
    return wait, [
        later(max(tat, start), cost * bucket.interval)
        for tat, bucket in zip(tats, buckets, strict=True)
    ]


def later(moment: float, seconds: float) -> float:
    """Return ``moment + seconds``, never less than *seconds* after *moment*.

    Rounded to the nearest float, a sum can fall short of the exact one,
    and a TAT moved forward one interval at a time would drift early: a
    thousand slots of 1 ms on a clock reading 33,000 s (a host up nine hours)
    came 3.4 ns early, more than :data:`_TOLERANCE`. Rounded up instead, a
    slot is never early, however long the host has been up.
    """
    sum_ = moment + seconds
    if sum_ - moment < seconds:  # the difference of two close floats is exact
        sum_ = _nextafter(sum_, math.inf)
    return sum_


def sooner(moment: float, seconds: float) -> float:
    """Return ``moment - seconds``, never more than *seconds* before *moment*.

    A refund rounded this way gives back at most what was taken.
    """
    difference = moment - seconds
    if moment - difference > seconds:
        difference = _nextafter(difference, math.inf)
    return difference


def convert(tat: float, old: Bucket, new: Bucket, now: float) -> float:
    """Return the TAT that keeps the tokens a bucket holds under a new limit.

    When the limit changed (at ``new.since``, or *now* if later or unknown),
    the bucket of *old* held ``old.capacity - (tat - then) / old.interval``
    tokens (negative while callers wait for reserved slots: a debt). Under
    *new* it holds as many, at most ``new.capacity``, and refills at the
    new rate from then on: a new limit never hands out a fresh full bucket,
    and a debt is carried over token for token. A full bucket stays full
    (a bucket swept away, or never used, cannot be told from a full one).
    """
    then = min(new.since, now)
    if tat <= then:
        # Full: as full as a key never seen (or swept away), under any limit.
        return -math.inf
    held = old.capacity - (tat - then) / old.interval
    held = min(float(new.capacity), held)
    return then + (new.capacity - held) * new.interval


def _wait(start: float, now: float) -> float:
    """Return ``start - now``, or 0 when only rounding separates them.

    Sums of intervals drift from products by a few ulps; without the
    tolerance a refilled token could be refused by 1e-16 seconds.
    """
    wait = start - now
    return 0.0 if wait <= _TOLERANCE else wait
