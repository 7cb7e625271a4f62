"""What a bulkhead store offers, and its signal that shared storage is down."""

from __future__ import annotations

from typing import Protocol


class Unreachable(Exception):  # a signal from a store, never raised to users
    """The shared storage is unreachable and the bulkhead fails closed.

    Attributes:
        storage: The storage, its password masked.
    """

    def __init__(self, storage: str) -> None:
        super().__init__(storage)
        self.storage = storage


class Compartment(Protocol):
    """What a bulkhead store offers: slots taken and given back.

    A token names the slot taken (a Redis lease); ``None`` means no slot.
    """

    remote: bool

    @property
    def in_use(self) -> int:
        """Slots taken (in Redis: by every process)."""

    @property
    def waiting(self) -> int:
        """Callers of this process waiting for a slot."""

    def take(self, budget: float) -> object | None:
        """Take a slot, waiting up to *budget* seconds; ``None`` if none came."""

    async def take_async(self, budget: float) -> object | None:
        """Take a slot without blocking the loop."""

    def give_back(self, token: object) -> None:
        """Give the slot of *token* back."""

    async def give_back_async(self, token: object) -> None:
        """Give the slot of *token* back without blocking the loop."""
