"""``@fluxus.timeout``: give the caller control back at a deadline.

Every timeout publishes its deadline in :data:`fluxus._deadline.DEADLINE`
(nested deadlines only shrink), so inner layers and the function itself can
read :func:`fluxus.remaining`. How the deadline is enforced depends on the
kind of function:

- ``async def``: :func:`asyncio.timeout` cancels the awaited work.
- sync, ``strategy="thread"`` (the default): the call runs in a worker thread
  of a small per-policy pool; the caller waits for it until the deadline and
  then walks away. Works in every thread, whatever the function blocks in.
- sync, ``strategy="signal"``: ``SIGALRM`` interrupts the function in the
  main thread; no thread hop, but the main thread only.
- sync, ``strategy="cooperative"``: only publishes the deadline; the call is
  never interrupted, and a late result is replaced by the timeout error.

The happy path of ``"thread"`` is two thread switches. They are cheap when
the caller and the worker share a CPU and about four times dearer when each
wake-up has to rouse another CPU, so the pool hands work over through a pair
of pipes per worker (a pipe write is a "sync" wake-up that favours the
writer's CPU) and, on Linux, keeps each worker on the CPU of the thread that
hands it a call (``sched_setaffinity``), releasing it to all its CPUs again
once its caller walks away.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from contextvars import Context, copy_context
from datetime import timedelta
from types import FrameType
from typing import Any, ClassVar, Literal, NoReturn, cast

from ._core import (
    TIMEOUT,
    Policy,
    check_callable,
    positive_int,
    qualified_name,
    raise_replacement,
    to_seconds,
)
from ._db import call_in_worker, caller_in_transaction, warn_in_transaction
from ._deadline import DEADLINE, monotonic
from .exceptions import DeadlineExceeded, ThreadsExhausted
from .instrumentation._events import TimedOut
from .instrumentation._hooks import emit
from .instrumentation._observe import WATCH, observe_async, observe_sync, outside

Strategy = Literal["thread", "signal", "cooperative"]

STRATEGIES: tuple[str, ...] = ("thread", "signal", "cooperative")

#: Idle worker threads older than this are retired when a call returns.
IDLE_SECONDS = 30.0

_GO, _STOP = b"g", b"s"

#: The longest single ``poll()`` (its timeout is a C int of milliseconds).
_MAX_POLL_MS = 2**31 - 1

_LATE = "the deadline passed during the call"
_PASSED = "the enclosing deadline had passed before the call started"


def _cpu_probe() -> Callable[[], int] | None:
    """Return ``sched_getcpu`` where threads can be pinned (Linux), else None."""
    if not hasattr(os, "sched_setaffinity"):  # pragma: no cover - not Linux
        return None
    try:
        import ctypes  # noqa: PLC0415 - only where pinning is possible

        probe = ctypes.CDLL(None).sched_getcpu
    except (ImportError, OSError, AttributeError):  # pragma: no cover
        return None
    probe.restype = ctypes.c_int
    probe.argtypes = []
    return cast("Callable[[], int]", probe)


#: The CPU the calling thread runs on, or None where workers are not pinned.
_cpu_of_caller = _cpu_probe()

#: ``_Worker.cpu`` when the worker may run anywhere / is never pinned.
_ANY_CPU, _NEVER_PINNED = -1, -2

Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], Context, float]


class _Worker:
    """A daemon thread that runs one call at a time, fed through pipes.

    A worker serves one caller at a time, from :meth:`_ThreadPool.take` to
    :meth:`_ThreadPool.give_back` (or, once its caller walked away, until the
    call returns), so the call's outcome can live on the worker itself.
    """

    __slots__ = (
        "abandoned",
        "cpu",
        "cpus",
        "done_r",
        "done_w",
        "error",
        "finished",
        "go_r",
        "go_w",
        "idle_since",
        "job",
        "poller",
        "result",
        "thread_id",
    )

    def __init__(self, pool: _ThreadPool) -> None:
        self.job: Job | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self.finished = self.abandoned = False
        self.idle_since = 0.0
        self.go_r, self.go_w = os.pipe()
        self.done_r, self.done_w = os.pipe()
        self.poller = select.poll()
        self.poller.register(self.done_r, select.POLLIN)
        # Daemon: a call that hangs forever must not keep the process alive.
        thread = threading.Thread(
            target=self._loop, args=(pool,), name="fluxus-timeout", daemon=True
        )
        thread.start()
        self.thread_id = thread.native_id or 0
        pinnable = _cpu_of_caller is not None and self.thread_id
        self.cpu = _ANY_CPU if pinnable else _NEVER_PINNED
        self.cpus: set[int] = set()

    def start(self, job: Job) -> None:
        """Hand *job* to the thread (caller side)."""
        if _cpu_of_caller is not None and self.cpu != _NEVER_PINNED:
            self._follow(_cpu_of_caller())
        self.finished = False
        self.job = job
        os.write(self.go_w, _GO)

    def _follow(self, cpu: int) -> None:
        """Keep the worker on the caller's CPU.

        A hand-off is two wake-ups; when the kernel puts the worker on
        another CPU than the caller's, each one waits for an idle CPU to wake
        up, which makes a call about four times slower (measured in a
        virtual machine).
        """
        if cpu == self.cpu or cpu < 0:
            return
        try:
            if not self.cpus:
                self.cpus = os.sched_getaffinity(self.thread_id)
            os.sched_setaffinity(self.thread_id, {cpu})
        except OSError:  # a CPU outside the worker's cpuset: stop following
            self.cpu = _NEVER_PINNED
        else:
            self.cpu = cpu

    def release(self) -> None:
        """Let an abandoned worker run on any of its CPUs again."""
        if self.cpu >= 0:
            self.cpu = _ANY_CPU
            with contextlib.suppress(OSError):  # the thread may have exited
                os.sched_setaffinity(self.thread_id, self.cpus)

    def wait(self, now: float, deadline: float) -> bool:
        """Wait until the call is done or *deadline*; return whether it is done."""
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
                os.read(self.done_r, 1)
                return True
            left = deadline - monotonic()
        return False

    def outcome(self) -> tuple[Any, BaseException | None]:
        """Return and forget the call's result and exception (caller side)."""
        result, error = self.result, self.error
        self.result = self.error = None
        return result, error

    def consume(self) -> None:
        """Read the done signal of a call that finished as its caller gave up."""
        os.read(self.done_r, 1)

    def drain(self) -> bool:
        """Read a done signal that may be on its way; return whether one came."""
        if self.poller.poll(1000):
            os.read(self.done_r, 1)
            return True
        return False

    def stop(self) -> None:
        """Ask the idle thread to exit; it closes the pipes."""
        os.write(self.go_w, _STOP)

    def close(self) -> None:
        """Close the pipes."""
        for fd in (self.go_r, self.go_w, self.done_r, self.done_w):
            os.close(fd)

    def _loop(self, pool: _ThreadPool) -> None:
        read, write, publish = os.read, os.write, DEADLINE.set
        while read(self.go_r, 1) == _GO:
            job, self.job = self.job, None
            if job is None:  # pragma: no cover - start() always sets it
                continue
            func, args, kwargs, context, deadline = job
            del job
            try:
                # Inside the caller's copied context: the deadline never leaks.
                context.run(publish, deadline)
                # call_in_worker: the call's own database connections (_db.py).
                self.result = context.run(call_in_worker, func, *args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.error = exc
            del func, args, kwargs, context
            if pool.finish(self):
                write(self.done_w, _GO)
            elif pool.closed:
                break
        self.close()


class _ThreadPool:
    """A bounded, lazily grown set of worker threads for one timeout policy.

    The caller that hands a call to a worker gives the worker back when the
    call returns in time; a worker whose caller walked away gives itself
    back when the call finally returns. Workers are reused last in, first
    out, so the coldest ones can be retired.
    """

    def __init__(self, max_threads: int) -> None:
        self.max_threads = max_threads
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.threads = 0
        self.abandoned = 0
        self.closed = False
        _POOLS.add(self)

    def take(self) -> _Worker | None:
        """Return an idle or new worker, or ``None`` when the bound is reached."""
        with self.lock:
            if self.idle:
                return self.idle.pop()
            if self.threads >= self.max_threads:
                return None
            self.threads += 1
        try:
            return _Worker(self)
        except BaseException:
            with self.lock:
                self.threads -= 1
            raise

    def give_back(self, worker: _Worker, now: float) -> None:
        """Return a worker whose call returned in time (caller side)."""
        worker.idle_since = now
        idle = self.idle
        retired = None
        with self.lock:
            idle.append(worker)
            if len(idle) > 1 and now - idle[0].idle_since > IDLE_SECONDS:
                retired = idle.pop(0)
                self.threads -= 1
        if retired is not None:
            retired.stop()

    def abandon(self, worker: _Worker) -> bool:
        """Walk away from *worker*'s call; ``False`` if it has just finished."""
        with self.lock:
            if worker.finished:
                return False
            worker.abandoned = True
            self.abandoned += 1
            return True

    def finish(self, worker: _Worker) -> bool:
        """Record that the call returned (worker side); return whether to signal."""
        with self.lock:
            worker.finished = True
            if not worker.abandoned:
                return True
            worker.abandoned = False
            worker.result = worker.error = None
            self.abandoned -= 1
            if self.closed:  # the policy is gone: no caller will need it
                self.threads -= 1
            else:
                worker.idle_since = monotonic()
                self.idle.append(worker)
            return False

    def close(self) -> None:
        """Stop the idle workers, and the abandoned ones once they return.

        Called when the policy is garbage collected, so that policies made
        on the fly do not leave threads behind.
        """
        with self.lock:
            self.closed = True
            retired, self.idle = self.idle, []
            self.threads -= len(retired)
        for worker in retired:
            worker.stop()

    def forget(self) -> None:
        """Drop every worker: after a fork their threads no longer exist."""
        for worker in self.idle:
            worker.close()
        self.lock = threading.Lock()
        self.idle = []
        self.threads = self.abandoned = 0


_POOLS: weakref.WeakSet[_ThreadPool] = weakref.WeakSet()


def _forget_pools_after_fork() -> None:
    for pool in list(_POOLS):
        pool.forget()


os.register_at_fork(after_in_child=_forget_pools_after_fork)


class _Alarm(BaseException):
    """Raised by a signal timeout's ``SIGALRM`` handler inside the callee.

    A ``BaseException``, so that the callee's ``except Exception`` blocks do
    not swallow it.
    """

    def __init__(self, owner: object) -> None:
        super().__init__()
        self.owner = owner


def _late_failure(exc: Exception, deadline: float) -> bool:
    """Tell whether a cooperative call's failure is to become a timeout.

    A failure after the deadline is the deadline's doing (say, a client's
    read timeout fed from :func:`fluxus.remaining`), unless it already is an
    inner layer's :class:`~fluxus.DeadlineExceeded`.
    """
    return monotonic() >= deadline and not isinstance(exc, DeadlineExceeded)


class Timeout(Policy):
    """Give up on a call at its deadline; see :func:`timeout`."""

    _kind: ClassVar[str] = "timeout"
    _rank: ClassVar[int] = TIMEOUT

    def __init__(
        self,
        seconds: float | timedelta,
        *,
        strategy: Strategy = "thread",
        on_timeout: Callable[[DeadlineExceeded], BaseException | None] | None = None,
        max_threads: int = 32,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        budget = to_seconds(seconds, "seconds")
        if budget <= 0:
            msg = f"seconds must be > 0, got {seconds!r}"
            raise ValueError(msg)
        if strategy not in STRATEGIES:
            choices = ", ".join(map(repr, STRATEGIES))
            msg = f"strategy must be one of {choices}, got {strategy!r}"
            raise ValueError(msg)
        if strategy == "signal" and not hasattr(signal, "setitimer"):
            msg = "strategy='signal' needs signal.setitimer, missing on this platform"
            raise ValueError(msg)
        positive_int(max_threads, "max_threads")
        check_callable(on_timeout, "on_timeout")
        self.seconds = budget
        self.strategy: Strategy = strategy
        self.max_threads = max_threads
        self._on_timeout = on_timeout
        self._pool: _ThreadPool | None = None

    # -- decisions shared by every driver ------------------------------------

    def _start(self, now: float, function: str, strategy: str) -> float:
        """Return the deadline of a call starting *now*, or raise if it passed.

        Nested deadlines only shrink: the enclosing deadline wins when it is
        sooner, and a call whose enclosing deadline has passed never starts.
        """
        deadline = now + self.seconds
        outer = DEADLINE.get()
        if outer is not None and outer < deadline:
            if outer <= now:
                self._raise(function, strategy, 0.0, _PASSED)
            return outer
        return deadline

    def _budget(self, now: float, deadline: float) -> float:
        """Return the budget the call had: ours, or what an outer deadline left."""
        if deadline < now + self.seconds:
            return deadline - now
        return self.seconds

    def _raise(
        self,
        function: str,
        strategy: str,
        seconds: float,
        reason: str,
        *,
        cause: BaseException | None = None,
        error: DeadlineExceeded | None = None,
    ) -> NoReturn:
        """Emit the event, then raise the timeout error (or its replacement)."""
        if error is None:
            error = DeadlineExceeded(self.name, seconds)
        error.__cause__ = cause
        error.__suppress_context__ = True
        next(self._counters.timeouts)
        emit(
            TimedOut(
                policy=self.name,
                function=function,
                seconds=seconds,
                strategy=strategy,
                reason=reason,
            )
        )
        raise_replacement(self._on_timeout, error, "on_timeout")
        raise error

    # -- sync drivers ---------------------------------------------------------

    def _wrap_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        if self.strategy == "cooperative":
            return self._wrap_cooperative(func)
        if self.strategy == "signal":
            return self._wrap_signal(func)
        return self._wrap_thread(func)

    def _wrap_cooperative(self, func: Callable[..., Any]) -> Callable[..., Any]:
        function = qualified_name(func)
        start = self._start
        late = self._late

        calls = self._counters.calls

        def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(timeout_wrapper):
                return observe_sync(self, function, timeout_wrapper, args, kwargs)
            next(calls)
            now = monotonic()
            deadline = start(now, function, "cooperative")
            token = DEADLINE.set(deadline)
            try:
                result = func(*args, **kwargs)
            except Exception as exc:
                if _late_failure(exc, deadline):
                    late(function, now, deadline, exc)
                raise
            finally:
                DEADLINE.reset(token)
            if monotonic() >= deadline:
                late(function, now, deadline, None)
            return result

        return timeout_wrapper

    def _late(
        self,
        function: str,
        now: float,
        deadline: float,
        cause: BaseException | None,
        strategy: str = "cooperative",
    ) -> NoReturn:
        self._raise(function, strategy, self._budget(now, deadline), _LATE, cause=cause)

    def _wrap_signal(self, func: Callable[..., Any]) -> Callable[..., Any]:
        function = qualified_name(func)
        start = self._start
        late = self._late

        calls = self._counters.calls

        def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(timeout_wrapper):
                return observe_sync(self, function, timeout_wrapper, args, kwargs)
            next(calls)
            if threading.current_thread() is not threading.main_thread():
                msg = (
                    f"fluxus.timeout {self.name!r} uses strategy='signal', which "
                    "works only in the main thread (SIGALRM); "
                    f"{function} was called in {threading.current_thread().name!r}. "
                    "Use strategy='thread' (the default) instead"
                )
                raise ValueError(msg)
            now = monotonic()
            deadline = start(now, function, "signal")
            owner = object()

            def on_alarm(_signum: int, _frame: FrameType | None) -> None:
                raise _Alarm(owner)

            token = DEADLINE.set(deadline)
            previous_handler = signal.signal(signal.SIGALRM, on_alarm)
            previous_timer = signal.getitimer(signal.ITIMER_REAL)
            try:
                try:
                    signal.setitimer(signal.ITIMER_REAL, deadline - now)
                    return func(*args, **kwargs)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _Alarm as alarm:
                if alarm.owner is not owner:
                    raise
                late(function, now, deadline, None, "signal")
            finally:
                DEADLINE.reset(token)
                signal.signal(signal.SIGALRM, previous_handler)
                _rearm(previous_timer, monotonic() - now)

        return timeout_wrapper

    def _wrap_thread(self, func: Callable[..., Any]) -> Callable[..., Any]:  # noqa: C901 - one driver, its branches are the worker protocol
        function = qualified_name(func)
        start = self._start
        pool = self._pool
        if pool is None:
            pool = self._pool = _ThreadPool(self.max_threads)
            weakref.finalize(self, pool.close).atexit = False

        calls = self._counters.calls

        def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(timeout_wrapper):
                return observe_sync(self, function, timeout_wrapper, args, kwargs)
            next(calls)
            now = monotonic()
            deadline = start(now, function, "thread")
            if caller_in_transaction():  # stay in the caller's transaction (_db.py)
                return self._in_caller(func, function, now, deadline, args, kwargs)
            worker = pool.take()
            if worker is None:
                self._exhausted(function, now, deadline)
            # The caller's context variables (request context, structlog's
            # contextvars, the enclosing deadline) are visible in the callee.
            worker.start((func, args, kwargs, copy_context(), deadline))
            try:
                done = worker.wait(now, deadline)
            except BaseException:
                # Interrupted while waiting (KeyboardInterrupt): walk away.
                if pool.abandon(worker):
                    worker.release()
                elif worker.drain():
                    worker.outcome()
                    pool.give_back(worker, now)
                raise
            if not done:
                if pool.abandon(worker):
                    worker.release()
                    self._late(function, now, deadline, None, "thread")
                worker.consume()
            result, error = worker.outcome()
            pool.give_back(worker, now)
            if error is not None:
                try:
                    raise error
                finally:
                    del error
            return result

        return timeout_wrapper

    def _in_caller(  # noqa: PLR0917 - the thread driver's call, as it has it
        self,
        func: Callable[..., Any],
        function: str,
        now: float,
        deadline: float,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """Run a thread-strategy call in the calling thread, as "cooperative" does.

        The caller is inside a database transaction (see ``fluxus._db``).
        """
        warn_in_transaction(self.name, function)
        token = DEADLINE.set(deadline)
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            if _late_failure(exc, deadline):
                self._late(function, now, deadline, exc)
            raise
        finally:
            DEADLINE.reset(token)
        if monotonic() >= deadline:
            self._late(function, now, deadline, None)
        return result

    def _exhausted(self, function: str, now: float, deadline: float) -> NoReturn:
        seconds = self._budget(now, deadline)
        self._raise(
            function,
            "thread",
            seconds,
            f"all {self.max_threads} worker threads are busy",
            error=ThreadsExhausted(self.name, seconds, self.max_threads),
        )

    # -- async driver ---------------------------------------------------------

    def _wrap_async(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        if self.strategy == "cooperative":
            return self._wrap_async_cooperative(func)
        function = qualified_name(func)
        seconds = self.seconds
        start = self._start
        late = self._late

        calls = self._counters.calls

        async def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(timeout_wrapper):
                return await observe_async(
                    self, function, timeout_wrapper, args, kwargs
                )
            next(calls)
            now = monotonic()
            deadline = now + seconds
            outer = DEADLINE.get()
            if outer is not None and outer < deadline:
                # Shrunk by an enclosing deadline: the rare, slower path.
                deadline = start(now, function, "asyncio")
            token = DEADLINE.set(deadline)
            scope = asyncio.timeout(deadline - now)
            try:
                async with scope:
                    return await func(*args, **kwargs)
            except TimeoutError as exc:
                if not scope.expired():
                    raise  # the function's own TimeoutError
                late(function, now, deadline, exc.__cause__ or exc, "asyncio")
            finally:
                DEADLINE.reset(token)

        return timeout_wrapper

    def _wrap_async_cooperative(
        self, func: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        function = qualified_name(func)
        start = self._start
        late = self._late

        calls = self._counters.calls

        async def timeout_wrapper(*args: Any, **kwargs: Any) -> Any:
            if WATCH.observers and outside(timeout_wrapper):
                return await observe_async(
                    self, function, timeout_wrapper, args, kwargs
                )
            next(calls)
            now = monotonic()
            deadline = start(now, function, "cooperative")
            token = DEADLINE.set(deadline)
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if _late_failure(exc, deadline):
                    late(function, now, deadline, exc)
                raise
            finally:
                DEADLINE.reset(token)
            if monotonic() >= deadline:
                late(function, now, deadline, None)
            return result

        return timeout_wrapper


def _rearm(previous: tuple[float, float], elapsed: float) -> None:
    """Restore the interval timer an enclosing signal timeout had set."""
    delay, interval = previous
    if delay > 0:
        # A timer that would have fired already fires now.
        signal.setitimer(signal.ITIMER_REAL, max(delay - elapsed, 1e-6), interval)


def timeout(
    seconds: float | timedelta,
    *,
    strategy: Strategy = "thread",
    on_timeout: Callable[[DeadlineExceeded], BaseException | None] | None = None,
    max_threads: int = 32,
    name: str | None = None,
) -> Timeout:
    """Return a policy that gives the caller control back after *seconds*.

    Args:
        seconds: The time budget of each call (a float or a timedelta, > 0).
            An enclosing fluxus deadline that ends sooner wins.
        strategy: How a sync call is bounded: ``"thread"`` (run it in a
            worker thread and walk away at the deadline; works everywhere),
            ``"signal"`` (interrupt it with ``SIGALRM``; main thread only) or
            ``"cooperative"`` (only publish the deadline; a late call raises
            once it returns). ``async def`` functions are always cancelled
            through :func:`asyncio.timeout`, except with ``"cooperative"``.
        on_timeout: Called with the :class:`~fluxus.DeadlineExceeded`; an
            exception it returns is raised ``from`` it instead.
        max_threads: The most worker threads the ``"thread"`` strategy keeps
            for this policy, abandoned calls included.
        name: The name in events and errors; by default the first decorated
            function's.

    Returns:
        A :class:`Timeout` policy; decorate functions with it.

    Raises:
        TypeError: If a parameter has the wrong type.
        ValueError: If *seconds* is not above 0, *strategy* is unknown, or
            *max_threads* is below 1.

    A call abandoned by the ``"thread"`` strategy keeps running in its
    worker thread until it returns, holding that thread and whatever the
    function holds; its result is dropped. Only walk away from calls that are
    safe to abandon (idempotent, or that honour :func:`fluxus.remaining`).
    When all *max_threads* threads are busy a call fails at once with
    :class:`~fluxus.ThreadsExhausted` (a :class:`~fluxus.DeadlineExceeded`).
    """
    return Timeout(
        seconds,
        strategy=strategy,
        on_timeout=on_timeout,
        max_threads=max_threads,
        name=name,
    )
