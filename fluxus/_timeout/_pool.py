"""The worker threads of the ``"thread"`` strategy: one hot worker per caller.

Every thread that calls a thread-strategy function gets a worker thread of
its own, shared by all timeout policies and kept for as long as the caller
lives. A call is handed to the caller's worker and the caller waits for it
until the deadline. So:

- Callers never contend: the happy path takes no shared lock and touches no
  shared list, and a caller waiting within its deadline always has a
  worker, however many callers there are.
- A worker whose caller walked away (an ABANDONED call) leaves the caller's
  seat and counts against its policy's :class:`Bound` until the call
  returns; the caller takes an idle worker, or starts one, for its next
  call. A finished abandoned worker joins the idle ones, which the next
  caller in need takes (newest first) and which retire after
  :data:`IDLE_SECONDS` unused. A caller thread that ends leaves its worker
  to the idle ones too.

The hand-off is two thread switches through a pair of pipes per worker. A
pipe write is a "sync" wake-up that favours the writer's CPU; it measured
faster than a hand-off through :class:`threading.Lock` (a futex) from 1 to
64 callers (``benchmarks/bench_timeout.py``). On Linux the worker is also
kept on the CPU of its caller (``sched_setaffinity``, one system call only
when the caller moved): each wake-up that has to rouse another CPU makes a
call several times slower in a virtual machine.

While other callers are in a hand-off too, the signals that cannot block
(a write, a read of a ready pipe) keep the GIL (:class:`_Io`): under the
GIL each release is a wait for it again behind the other threads. From 8
threads that made the five-layer stack 30% faster; alone, a caller still
releases it, which lets its worker start the call at once.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import threading
import time
import weakref
from collections.abc import Callable
from contextvars import Context
from typing import Any, cast

from fluxus._db import call_in_worker
from fluxus._deadline import DEADLINE, keep_held, monotonic

#: Idle worker threads unused for longer than this are retired.
IDLE_SECONDS = 30.0

_GO, _STOP = b"g", b"s"

#: How many done signals one read takes: every stale one with the fresh one.
_DRAIN = 64

#: The longest single ``poll()`` (its timeout is a C int of milliseconds).
_MAX_POLL_MS = 2**31 - 1

Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Context, float, int]


class _Io:
    """Pipe signals that keep the GIL: libc's through ``ctypes.PyDLL``.

    ``os.write`` and ``os.read`` release the GIL around the system call.
    With one caller that is what a hand-off wants: the woken thread takes
    the free GIL at once. With many, every release hands the GIL to some
    other waiting thread and the releasing one queues to get it back, so
    a call pays for a GIL round trip per signal. A one-byte write to a
    non-blocking pipe, or a read of one that ``poll()`` found ready, never
    blocks: it may keep the GIL.
    """

    __slots__ = ("buffer", "read", "write")

    def __init__(self) -> None:
        import ctypes  # noqa: PLC0415 - only where libc is found

        libc = ctypes.PyDLL(None)
        self.write = libc.write
        self.write.restype = ctypes.c_ssize_t
        self.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        self.read = libc.read
        self.read.restype = ctypes.c_ssize_t
        self.read.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
        # Shared by every reader: what is read is dropped, only the count matters.
        self.buffer = ctypes.create_string_buffer(_DRAIN)


def _io() -> _Io | None:
    if os.name != "posix":  # pragma: no cover - pipes of another kind
        return None
    try:
        return _Io()
    except (ImportError, OSError, AttributeError):  # pragma: no cover
        return None


#: Signals that keep the GIL, or None where only ``os`` ones are available.
IO = _io()


def _cpu_probe() -> Callable[[], int] | None:
    """Return ``sched_getcpu`` where threads can be pinned (Linux), else None."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return None
    try:
        import ctypes  # noqa: PLC0415 - only where pinning is possible

        # PyDLL keeps the GIL: a vDSO call needs no release, and every
        # release is a wait for the GIL again when many threads call.
        probe = ctypes.PyDLL(None).sched_getcpu
    except (ImportError, OSError, AttributeError):  # pragma: no cover
        return None
    probe.restype = ctypes.c_int
    probe.argtypes = []
    return cast("Callable[[], int]", probe)


#: The CPU the calling thread runs on, or None where workers are not pinned.
cpu_of_caller = _cpu_probe()

#: ``Worker.cpu`` when the worker may run anywhere / is never pinned.
ANY_CPU, NEVER_PINNED = -1, -2


class Bound:
    """One policy's bound on the worker threads held by its abandoned calls.

    Attributes:
        max_threads: The bound.
        abandoned: How many of its calls outlived their deadline and still run.
    """

    __slots__ = ("__weakref__", "abandoned", "max_threads")

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.abandoned = 0
        _BOUNDS.add(self)


class Worker:
    """A daemon thread that runs the calls of one caller, fed through pipes.

    Between :meth:`start` and the caller reading :meth:`outcome` (or, once
    the caller walked away, until the call returns) the worker serves one
    call, so the call's outcome can live on the worker itself.

    Each call has a ticket, and the worker records the ticket of the call
    whose outcome it holds (:attr:`served`) before it signals. A caller
    trusts a done signal only when ``served`` is its own ticket. An
    exception can reach the caller between any two steps of the hand-off
    (``KeyboardInterrupt``, an enclosing ``"signal"`` timeout's interrupt,
    a ``RecursionError`` on a deep stack), leaving an unread done signal, a
    consumed one, or a call that runs with no one waiting: none of these
    can make a later call return another call's outcome, or wait for a
    signal that will not come.
    """

    __slots__ = (
        "__weakref__",
        "abandoned",
        "cpu",
        "cpus",
        "done_r",
        "done_w",
        "ended",
        "error",
        "go_r",
        "go_w",
        "hub",
        "idle_since",
        "job",
        "keep",
        "kept",
        "lock",
        "poller",
        "result",
        "retired",
        "running",
        "seat",
        "served",
        "thread_id",
        "tickets",
    )

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        #: Whether this call's signals keep the GIL (other callers are busy).
        self.keep = False
        self.job: Job | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.ended = 0.0
        #: The ticket of the call whose outcome the worker holds (0: none yet).
        self.served = 0
        self.tickets = itertools.count(1)
        self.abandoned: Bound | None = None
        #: What an abandoned call holds until it returns (bulkhead slots).
        self.kept: tuple[Callable[[], None], ...] = ()
        self.idle_since = 0.0
        #: The token of the one seat holding the worker, if any (:class:`_Seat`).
        self.seat: object = None
        #: Set (under the hub's lock) once it is told to stop: never parked again.
        self.retired = False
        #: Whether the thread runs its loop; None once it must not (see below).
        self.running: bool | None = False
        self.lock = threading.Lock()
        self.go_r, self.go_w = os.pipe()
        self.done_r, self.done_w = os.pipe()
        # A signal never blocks (the ends written to, and the one read only
        # once poll() found it ready), so it may be sent keeping the GIL.
        for fd in (self.go_w, self.done_r, self.done_w):
            os.set_blocking(fd, False)
        self.poller = select.poll()
        self.poller.register(self.done_r, select.POLLIN)
        # Daemon: a call that hangs forever must not keep the process alive.
        thread = threading.Thread(
            target=self._loop, args=(hub,), name="fluxus-timeout", daemon=True
        )
        try:
            thread.start()
        except BaseException:
            self._unborn()
            raise
        self.thread_id = thread.native_id or 0
        pinnable = cpu_of_caller is not None and self.thread_id
        self.cpu = ANY_CPU if pinnable else NEVER_PINNED
        # The CPUs it may run on when not following a caller (taken at its
        # first pinning). A thread starts with its creator's CPUs: one seated
        # by a call in another worker gets that worker's own, not the one CPU
        # it is pinned to now.
        creator: Worker | None = getattr(hub.local, "serving", None)
        self.cpus: set[int] = set(creator.cpus) if creator is not None else set()

    def _unborn(self) -> None:
        """Undo a start that failed, or was interrupted, before it returned.

        The thread may already run (``Thread.start`` is interrupted as it
        waits for the thread to start): then only the thread may close the
        pipes, and it is told to stop. Closing them under it would make its
        next read fail (``EBADF``), or read another file that took the number.
        """
        with self.lock:
            running, self.running = self.running, None
        if running:
            self.stop()
        else:
            self.close()

    def start(
        self,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        context: Context,
        deadline: float,
    ) -> int:
        """Hand a call to the thread (caller side); return the call's ticket."""
        # The workers in a hand-off now, this one included (wait() takes it
        # out). A set: add and discard are single steps under the GIL, and a
        # worker left in it by an interrupted call is taken out by its next.
        busy = self.hub.busy
        busy.add(self)
        self.keep = keep = IO is not None and len(busy) > 1
        if cpu_of_caller is not None and self.cpu != NEVER_PINNED:
            self._follow(cpu_of_caller())
        ticket = next(self.tickets)
        # One step: a GO signal makes the thread take whatever job is set.
        self.job = (func, args, kwargs, context, deadline, ticket)
        if not keep or IO.write(self.go_w, _GO, 1) != 1:  # type: ignore[union-attr]
            os.write(self.go_w, _GO)  # raises what went wrong, if anything
        return ticket

    def _follow(self, cpu: int) -> None:
        """Keep the worker on the caller's CPU (a system call only on a move)."""
        if cpu == self.cpu or cpu < 0:
            return
        try:
            if not self.cpus:
                self.cpus = os.sched_getaffinity(self.thread_id)
            os.sched_setaffinity(self.thread_id, {cpu})
        except OSError:  # a CPU outside the worker's cpuset: stop following
            self.cpu = NEVER_PINNED
        else:
            self.cpu = cpu

    def release(self) -> None:
        """Let an abandoned worker run on any of its CPUs again."""
        if self.cpu >= 0:
            self.cpu = ANY_CPU
            with contextlib.suppress(OSError):  # the thread may have exited
                os.sched_setaffinity(self.thread_id, self.cpus)

    def wait(self, ticket: int, now: float, deadline: float) -> bool:
        """Wait until call *ticket* is done or *deadline*; return whether it is.

        A done signal left unread by an earlier, interrupted caller (or that
        of a call nobody waits for) wakes the wait once and is dropped.
        """
        try:
            poll = self.poller.poll
            left = deadline - now
            while left > 0:
                if left >= 0.001:  # noqa: PLR2004 - poll() counts whole milliseconds
                    # Rounded down: poll() must never wait past the deadline.
                    ready = poll(min(int(left * 1000.0), _MAX_POLL_MS))
                else:
                    time.sleep(left)
                    ready = poll(0)
                if ready:
                    # Every signal there, stale ones too: never blocks, as poll()
                    # saw one. The ticket, not the signal, says whose call ended.
                    if self.keep:
                        IO.read(self.done_r, IO.buffer, _DRAIN)  # type: ignore[union-attr]
                    else:
                        os.read(self.done_r, _DRAIN)
                    if self.served == ticket:
                        return True
                left = deadline - monotonic()
            return self.served == ticket
        finally:
            self.hub.busy.discard(self)

    def outcome(self) -> tuple[Any, BaseException | None, float]:
        """Return and forget the call's result, exception and end time."""
        result, error = self.result, self.error
        self.result = self.error = None
        return result, error, self.ended

    def stop(self) -> None:
        """Ask the idle thread to exit; it closes the pipes.

        A worker whose pipes are closed already has no thread to ask (one
        retired at interpreter exit was seen so).
        """
        go_w = self.go_w
        if go_w >= 0:
            with contextlib.suppress(OSError):  # EPIPE: its thread is ending
                os.write(go_w, _STOP)

    def close(self) -> None:
        """Close the pipes, once: a second call closes nothing.

        The numbers are forgotten before they are closed. A closed number is
        soon another file's (a sink's, a socket): closing it again, as a
        forked child forgetting a worker whose thread had already ended
        would, closes that file. A fork between the two steps leaks the
        pipes in the child instead, which is harmless.
        """
        fds = (self.go_r, self.go_w, self.done_r, self.done_w)
        if fds[0] < 0:
            return
        self.go_r = self.go_w = self.done_r = self.done_w = -1
        for fd in fds:
            os.close(fd)

    def _loop(self, hub: Hub) -> None:
        with self.lock:
            if self.running is None:  # its start failed: the pipes are closed
                return
            self.running = True
        hub.local.serving = self  # what a worker it seats inherits (__init__)
        read, write, publish = os.read, os.write, DEADLINE.set
        while read(self.go_r, 1) == _GO:
            # Taken in one step: a start() interrupted before its GO left a
            # job a later start() replaced; that GO then finds none.
            job, self.job = self.job, None
            if job is None:
                continue
            func, args, kwargs, context, deadline, ticket = job
            del job
            try:
                # Inside the caller's copied context: the deadline never leaks.
                context.run(publish, deadline)
                # call_in_worker: the call's own database connections (_db.py).
                self.result = context.run(call_in_worker, func, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.error = exc
            self.ended = monotonic()
            del func, args, kwargs, context
            kept = hub.finish(self, ticket)
            if kept is None and (
                not self.keep or IO.write(self.done_w, _GO, 1) != 1  # type: ignore[union-attr]
            ):
                write(self.done_w, _GO)
            for give_back in kept or ():
                give_back()
        self.close()


class _Seat:
    """A caller thread's hold on its worker, given back when the thread ends.

    A worker is held by one owner at a time: one seat (``worker.seat``), its
    abandoned call, or the hub's idle list. The seat parks its worker when
    it dies only while it still is that worker's seat, so a worker is never
    idle twice, nor idle and seated at once; it never closes anything.
    """

    __slots__ = ("generation", "hub", "token", "worker")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.generation = hub.generation
        # What the worker holds: the seat itself would keep the seat alive.
        self.token = object()
        self.worker: Worker | None = None

    def __del__(self) -> None:
        worker = self.worker
        if (
            worker is not None
            and worker.seat is self.token
            and self.generation == self.hub.generation
        ):
            worker.seat = None
            self.hub.park(worker)


class Hub:
    """Every worker of the process: one seated per caller thread, the idle ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[Worker] = []
        self.local = threading.local()
        self.generation = 0
        self.workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        #: The workers whose callers are in a hand-off (see Worker.start).
        self.busy: set[Worker] = set()

    def take(self) -> Worker:
        """Return the calling thread's worker, seating one if it has none."""
        try:
            worker: Worker | None = self.local.seat.worker
        except AttributeError:
            worker = None
        if worker is None:
            worker = self._seat()
        return worker

    def _seat(self) -> Worker:
        with self.lock:
            worker = self.idle.pop() if self.idle else None
        if worker is None:
            worker = Worker(self)
            self.workers.add(worker)
        seat: _Seat | None = getattr(self.local, "seat", None)
        if seat is None:
            seat = self.local.seat = _Seat(self)
        worker.seat = seat.token
        seat.worker = worker
        return worker

    def abandon(self, worker: Worker, ticket: int, bound: Bound) -> bool:
        """Walk away from call *ticket*; ``False`` if it has just finished.

        The worker leaves the caller's seat and counts against *bound* until
        its call returns; what the call holds (bulkhead slots) stays held
        until then too. Should an exception interrupt this, the worker is
        out of the seat before it is marked abandoned: at worst it is then
        lost (its thread idles for good), never held by two owners.
        """
        kept = keep_held()
        with worker.lock:
            if worker.served == ticket:
                for give_back in kept:
                    give_back()
                return False
            # Out of the seat before the call may end and park the worker.
            worker.seat = self.local.seat.worker = None
            worker.kept = kept
            worker.abandoned = bound
            with self.lock:
                bound.abandoned += 1
        worker.release()
        return True

    def finish(
        self, worker: Worker, ticket: int
    ) -> tuple[Callable[[], None], ...] | None:
        """Record that call *ticket* returned (worker side).

        The worker of an abandoned call drops the outcome and goes idle.

        Returns:
            ``None`` when the caller waits for the outcome (signal it); for
            an abandoned call, what it held, to give back now.
        """
        with worker.lock:
            worker.served = ticket
            bound = worker.abandoned
            if bound is None:
                return None
            worker.abandoned = None
            worker.result = worker.error = None
            kept, worker.kept = worker.kept, ()
            with self.lock:
                bound.abandoned -= 1
        self.park(worker)
        return kept

    def park(self, worker: Worker) -> None:
        """Add *worker* to the idle ones and retire those idle too long."""
        now = monotonic()
        retired = []
        with self.lock:
            if worker.retired:  # pragma: no cover - owners never park it twice
                return
            worker.idle_since = now
            idle = self.idle
            while idle and now - idle[0].idle_since > IDLE_SECONDS:
                old = idle.pop(0)
                old.retired = True
                retired.append(old)
            idle.append(worker)
        for old in retired:
            old.stop()

    def forget(self) -> None:
        """Drop every worker: after a fork their threads no longer exist."""
        self.lock = threading.Lock()
        self.generation += 1
        self.local = threading.local()
        self.busy = set()
        self.idle = []
        for worker in list(self.workers):
            worker.close()
        self.workers = weakref.WeakSet()
        for bound in list(_BOUNDS):
            bound.abandoned = 0


_BOUNDS: weakref.WeakSet[Bound] = weakref.WeakSet()

#: The process's workers, shared by every thread-strategy timeout.
HUB = Hub()


def _forget_workers_after_fork() -> None:
    HUB.forget()


if hasattr(os, "register_at_fork"):  # pragma: no branch - absent on Windows
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
