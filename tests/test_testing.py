from __future__ import annotations

import threading
import time

import fluxus
import pytest
from fluxus.testing import capture_events, is_testing, set_testing, testing


def always_failing():
    def fn():
        raise OSError("down")

    return fn


def test_testing_makes_backoff_instant(mode):
    fn = fluxus.retry(3, backoff=fluxus.backoff.constant(60))(
        mode.make(always_failing())
    )

    start = time.monotonic()
    with testing(), pytest.raises(OSError):
        mode.run(fn)
    assert time.monotonic() - start < 5


def test_set_testing_switches_and_restores():
    assert not is_testing()
    with set_testing(True):
        assert is_testing()
        with set_testing(False):
            assert not is_testing()
        assert is_testing()
    assert not is_testing()


def test_set_testing_without_with_stays_on():
    set_testing(True)
    try:
        assert is_testing()
    finally:
        set_testing(False)


@pytest.mark.parametrize(
    ("attempts", "error"), [(0, ValueError), ("1", TypeError), (True, TypeError)]
)
def test_set_testing_attempts_validated(attempts, error):
    with pytest.raises(error, match="attempts"):
        set_testing(True, attempts=attempts)


def test_capture_events_sees_other_threads(instant):
    fn = fluxus.retry(2)(always_failing())

    with capture_events() as events:

        def call():
            with pytest.raises(OSError):
                fn()

        thread = threading.Thread(target=call)
        thread.start()
        thread.join(10)

    assert ["retry_scheduled", "retries_exhausted"] == [e.kind for e in events]


def test_capture_events_stops_at_the_end_of_the_block(instant):
    fn = fluxus.retry(2)(always_failing())
    with capture_events() as events:
        pass
    with pytest.raises(OSError):
        fn()
    assert [] == events
