"""``@fluxus.dead_letter``: the letter, its redaction, its capture, the policy.

- :mod:`._letter`: :class:`DeadLetter`, the :class:`Sink` protocol, handlers;
- :mod:`._redaction`: what a letter keeps of the arguments (checked when a
  function is decorated);
- :mod:`._capture`: the decision (is the exception kept, what the letter
  holds) made once, delivered by a sync and an async step;
- :mod:`._policy` and :mod:`._stack_gate`: the wrappers, the factory, and
  the gate ``fluxus.stack`` runs.
"""

from ._letter import REDACTED, DeadLetter, Handler, Sink
from ._policy import DeadLetterQueue, dead_letter

__all__ = [
    "REDACTED",
    "DeadLetter",
    "DeadLetterQueue",
    "Handler",
    "Sink",
    "dead_letter",
]
