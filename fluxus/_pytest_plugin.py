"""The pytest plugin installed with fluxus: ``fluxus_testing``, ``fluxus_events``.

pytest loads it through the ``pytest11`` entry point, so any suite gets the
fixtures by installing fluxus::

    def test_fetch_retries(fluxus_testing, fluxus_events):
        client.fetch()
        assert ["retry_scheduled"] == [e.kind for e in fluxus_events]
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .instrumentation._events import Event
from .testing import capture_events, testing


@pytest.fixture
def fluxus_testing() -> Iterator[None]:
    """Turn testing mode on for a test: backoff and rate-limit waits are instant."""
    with testing():
        yield


@pytest.fixture
def fluxus_events() -> Iterator[list[Event]]:
    """Collect the fluxus events the test emits, from any thread, in order."""
    with capture_events() as events:
        yield events
