"""The block form: ``for attempt in policy.attempts(): with attempt: ...``."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from fluxus._core import block_name
from fluxus._deadline import DEADLINE, wait_async, wait_sync
from fluxus.exceptions import DeadlineExceeded
from fluxus.instrumentation._observe import WATCH, block_ended, block_started

from ._schedule import _Schedule

if TYPE_CHECKING:
    from types import FrameType

    import tenacity


class Attempt:
    """One attempt of a retried block; ``with attempt:`` goes around the body.

    Attributes:
        number: 1 for the first attempt, 2 for the first retry, and so on.
    """

    __slots__ = ("_attempts", "_observed", "number")

    def __init__(self, attempts: Attempts, number: int) -> None:
        self._attempts = attempts
        self.number: int = number
        self._observed: Any = None

    def __repr__(self) -> str:
        return f"<fluxus.retry attempt {self.number}>"

    def __enter__(self) -> Self:
        attempts = self._attempts
        if attempts._observed is not None and WATCH.attempts:  # noqa: SLF001
            self._observed = block_started(
                attempts._policy,  # noqa: SLF001
                attempts._function,  # noqa: SLF001
                self.number,
            )
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        """Swallow a failure that will be retried; let anything else through."""
        attempts = self._attempts
        if self._observed is not None:
            block_ended(self._observed, error)
        if error is None:
            if attempts._observed is not None:  # noqa: SLF001
                attempts._end(None)  # noqa: SLF001
            return False
        # The frame that runs the block: events name it as they name a
        # decorated function. Looked up only after a failure.
        block = sys._getframe(1)  # noqa: SLF001 - one frame up, no walk
        return attempts._failed(error, block)  # noqa: SLF001


class Attempts:
    """The attempts of one run of a retried block, from :meth:`Retry.attempts`.

    Iterate over it with ``for`` in sync code and ``async for`` in async
    code, and put ``with attempt:`` around the body. A failure that will be
    retried is swallowed by the ``with`` and the loop goes on after the
    backoff wait; a success ends the loop; giving up lets the last failure
    out of the ``with``, as itself.
    """

    __slots__ = (
        "_delay",
        "_error",
        "_function",
        "_number",
        "_observed",
        "_policy",
        "_state",
    )

    def __init__(self, policy: _Schedule) -> None:
        self._policy = policy
        self._number = 0
        self._delay: float | None = None
        #: The observers told about this run, while it runs (see :meth:`_end`).
        self._observed: Any = None
        # Set at the first failure, with the block's name and tenacity's state.
        self._function = ""
        self._state: tenacity.RetryCallState | None = None
        self._error: Exception | None = None

    def __repr__(self) -> str:
        return f"<fluxus.retry attempts of {self._policy.name!r} at {self._number}>"

    def __iter__(self) -> Attempts:
        return self

    def __next__(self) -> Attempt:
        if self._number:
            if self._delay is None:
                raise StopIteration
            wait_sync(self._delay)
        elif WATCH.observers:
            self._observe(sys._getframe(1))  # noqa: SLF001 - the loop's frame
        return self._next()

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if self._number:
            if self._delay is None:
                raise StopAsyncIteration
            await wait_async(self._delay)
        elif WATCH.observers:
            self._observe(sys._getframe(1))  # noqa: SLF001 - the loop's frame
        return self._next()

    def _observe(self, block: FrameType) -> None:
        """Tell the observers the run starts, as a decorated call's observe does."""
        self._function = block_name(block)
        self._observed = block_started(self._policy, self._function) or []

    def _end(self, error: BaseException | None) -> None:
        """Tell the observers the run ended (once), with the error leaving it."""
        observed, self._observed = self._observed, None
        block_ended(observed, error)

    def _next(self) -> Attempt:
        policy = self._policy
        if not self._number:
            next(policy._counters.calls)  # noqa: SLF001
            if DEADLINE.get() is not None:
                try:
                    policy._refuse_when_expired()  # noqa: SLF001
                except DeadlineExceeded as exc:
                    self._end(exc)
                    raise
            if policy.budget is not None:
                policy.budget.record_attempt()
        elif policy._late(self._state, self._error, self._function):  # type: ignore[arg-type]  # noqa: SLF001
            self._delay = None
            self._end(self._error)
            raise self._error  # type: ignore[misc]
        self._delay = None
        self._number += 1
        return Attempt(self, self._number)

    def _failed(self, error: BaseException, block: FrameType) -> bool:
        """Decide after attempt :attr:`_number` raised *error*: retry it or not."""
        try:
            retried = self._decide(error, block)
        except BaseException as exc:  # on_exhausted's replacement, a bad wait
            self._end(exc)
            raise
        if not retried:
            self._end(error)
        return retried

    def _decide(self, error: BaseException, block: FrameType) -> bool:
        policy = self._policy
        if not isinstance(error, Exception):
            return False
        if self._state is None:
            self._state = policy._state()  # noqa: SLF001
            if not self._function:
                self._function = block_name(block)
        if not policy._retryable(error):  # noqa: SLF001
            if self._number > 1:
                policy._refuse(self._state, error, self._function)  # noqa: SLF001
            else:
                next(policy._counters.failures)  # noqa: SLF001
            return False
        self._delay = policy._schedule(self._state, error, None, self._function)  # noqa: SLF001
        self._error = error
        return self._delay is not None
