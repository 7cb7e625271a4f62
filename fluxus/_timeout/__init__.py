"""``@fluxus.timeout``: give the caller control back at a deadline.

Every timeout publishes its deadline in :data:`fluxus._deadline.DEADLINE`
(nested deadlines only shrink), so inner layers and the function itself can
read :func:`fluxus.remaining`. How the deadline is enforced depends on the
strategy and the kind of function (:mod:`._strategies`); what a call that
ends late gets is decided once for all of them (:mod:`._verdicts`). The
``"thread"`` strategy's workers live in :mod:`._pool`.

- ``_policy``: the :class:`Timeout` policy and :func:`timeout`.
- ``_verdicts``: when a call may start, and the rule for a late call.
- ``_strategies``: one small driver per strategy, sync and async.
- ``_pool``: a hot worker thread per caller, and the bound on abandoned ones.
"""

from __future__ import annotations

from ._policy import STRATEGIES, Strategy, Timeout, timeout

__all__ = ["STRATEGIES", "Strategy", "Timeout", "timeout"]
