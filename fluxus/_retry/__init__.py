"""``@fluxus.retry``: one decision after a failed attempt, three drivers.

- :mod:`._options`: the checks made when a policy is built (backoff, ``on``,
  attempts) and the adapters tenacity's stop and wait strategies need;
- :mod:`._schedule`: the decision after a failed attempt (attempts left,
  the wait, the deadline, the budget), then the retry or the give-up;
- :mod:`._drivers`: the wrappers of decorated functions, sync and async;
- :mod:`._block`: ``policy.attempts()``, the block form, sync and async;
- :mod:`._policy`: the class and its factory.
"""

from ._policy import Retry, retry

__all__ = ["Retry", "retry"]
