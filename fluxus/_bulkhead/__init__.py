"""The bulkhead: a pure decision core, a memory and a Redis store, one policy."""

from __future__ import annotations

from ._policy import Bulkhead, bulkhead

__all__ = ["Bulkhead", "bulkhead"]
