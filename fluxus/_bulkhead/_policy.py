"""``@fluxus.bulkhead``: at most so many calls at once, the rest wait or go.

A bulkhead keeps one slow dependency from taking every thread, task or
connection of a service: at most ``max_concurrent`` calls run through it at
once, up to ``max_waiting`` more wait their turn (first come, first served)
for at most ``timeout`` seconds and never past an enclosing deadline, and
everybody else gets :class:`~fluxus.BulkheadFull` at once. Sync and async
callers of one policy share its slots.

A slot is given back however the call ends: a result, an exception, a
cancellation. One case keeps it longer on purpose: a call that a
``"thread"``-strategy :func:`fluxus.timeout` abandoned at its deadline
still runs in its worker thread, so it keeps its slot until it really
returns (the caller gets control back at once). A bulkhead therefore bounds
the work actually running, which is what protects the dependency.

The decisions live in :class:`~fluxus._bulkhead._core.Slots` (pure); the
memory store and the Redis store apply them; :class:`Bulkhead` holds one
small sync and one small async driver around a store.
"""

from __future__ import annotations

import itertools
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, ClassVar

from fluxus._config import MEMORY
from fluxus._core import BULKHEAD, factory_of
from fluxus._validate import (
    check_fail_open,
    int_at_least,
    not_bare,
    positive_int,
    positive_seconds,
    to_seconds,
)

from ._blocks import _BlockForms
from ._drivers import _Drivers
from ._memory import MemoryCompartment

if TYPE_CHECKING:
    from ._store import Compartment


class Bulkhead(_BlockForms, _Drivers):
    """Run at most so many calls at once; see :func:`bulkhead`."""

    _kind: ClassVar[str] = "bulkhead"
    _rank: ClassVar[int] = BULKHEAD

    _ids = itertools.count(1)

    def __init__(
        self,
        max_concurrent: int,
        *,
        max_waiting: int = 0,
        timeout: float | None = 0.0,
        name: str | None = None,
        storage: object = None,
        fail_open: bool = True,
        lease: float = 60.0,
    ) -> None:
        """Build the policy; see :func:`bulkhead` for the parameters.

        Args:
            max_concurrent: See :func:`bulkhead`.
            max_waiting: See :func:`bulkhead`.
            timeout: See :func:`bulkhead`.
            name: See :func:`bulkhead`.
            storage: See :func:`bulkhead`.
            fail_open: See :func:`bulkhead`.
            lease: See :func:`bulkhead`.
        """
        super().__init__(name)
        not_bare(max_concurrent, "max_concurrent", "an int", "@fluxus.bulkhead(10)")
        self.max_concurrent: int = positive_int(max_concurrent, "max_concurrent")
        self.max_waiting: int = int_at_least(max_waiting, "max_waiting", 0)
        self.timeout: float | None = (
            None if timeout is None else to_seconds(timeout, "timeout", allow_none=True)
        )
        if self.max_waiting and self.timeout == 0:
            msg = (
                f"timeout must be > 0 seconds or None with max_waiting={max_waiting!r} "
                f"(how long a caller waits), got {timeout!r}"
            )
            raise ValueError(msg)
        if not self.max_waiting and self.timeout != 0:
            msg = (
                f"timeout must be 0 with max_waiting=0 (no caller waits; give "
                f"max_waiting > 0 to let callers wait), got {timeout!r}"
            )
            raise ValueError(msg)
        self.fail_open: bool = check_fail_open(fail_open)
        self.lease: float = positive_seconds(lease, "lease")
        self._store: Compartment = self._make_store(storage)
        self._blocks: ContextVar[tuple[tuple[Any, ...], ...]] = ContextVar(
            f"fluxus_bulkhead_{next(self._ids)}", default=()
        )

    def _make_store(self, storage: object) -> Compartment:
        if storage is None or storage == MEMORY:
            return MemoryCompartment(self.max_concurrent, self.max_waiting)
        from ._redis import redis_compartment  # noqa: PLC0415 - redis is an extra

        return redis_compartment(self, storage)


@factory_of(Bulkhead)
def bulkhead() -> None:
    """Return a policy that runs at most *max_concurrent* calls at once.

    Args:
        max_concurrent: How many calls may run at once through the policy,
            sync and async callers together (an int >= 1).
        max_waiting: How many more callers may wait for a slot; they are
            served first come, first served. ``0`` (the default) refuses
            at once every call that finds no free slot.
        timeout: How long a caller may wait for a slot: seconds (or a
            timedelta), or ``None`` to wait as long as an enclosing
            :func:`fluxus.timeout` deadline allows. A waiting caller never
            waits past that deadline. Must be > 0 (or ``None``) when
            *max_waiting* is, and 0 when it is not.
        name: The name in events and errors, and of the shared compartment
            in Redis; by default the first decorated function's
            ``module.qualname``. A bulkhead used only as a block without a
            name shares its slots with no other policy.
        storage: ``None`` or ``"memory://"`` (this process), or a
            ``redis://``, ``rediss://`` or ``unix://`` URL: the limit then
            holds across every process and machine using it with the same
            *name*. ``None`` does not follow the process's default storage
            (``FLUXUS_STORAGE_URI``): a bulkhead shared among processes is
            a choice made where it is declared.
        fail_open: With Redis storage, while Redis is unreachable, run calls
            without a slot (``True``, the default) or refuse them with
            :class:`~fluxus.BulkheadFull` (``False``).
        lease: With Redis storage, seconds a slot stays taken after its
            holder last renewed it; a live holder renews it while its call
            runs, so only the slot of a holder that died expires.

    Returns:
        A :class:`Bulkhead` policy; decorate functions with it, or use it as
        a block: ``with bh:`` / ``async with bh:``.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If a number is out of range, or *timeout* and
            *max_waiting* contradict each other.

    Every slot is given back when its call ends, whatever the outcome. A
    call abandoned at its deadline by a ``"thread"``-strategy
    :func:`fluxus.timeout` inside the bulkhead keeps its slot until it
    really returns: it still runs, and the bulkhead bounds running work.
    The testing mode does not change a bulkhead: its waits end when
    another call gives a slot back, not when a clock says so.
    """
