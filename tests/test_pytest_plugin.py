from __future__ import annotations

PLUGIN_TESTS = """
import fluxus


def failing_once():
    state = {"n": 0}

    def fn():
        state["n"] += 1
        if state["n"] == 1:
            raise OSError("once")
        return "ok"

    return fn


def test_events_are_captured(fluxus_testing, fluxus_events):
    fn = fluxus.retry(2, backoff=fluxus.backoff.constant(60))(failing_once())
    assert "ok" == fn()
    assert ["retry_scheduled"] == [e.kind for e in fluxus_events]


def test_testing_mode_is_on(fluxus_testing):
    assert fluxus.testing.is_testing()


def test_testing_mode_is_off_again():
    assert not fluxus.testing.is_testing()
"""


def test_the_fixtures_reach_a_users_suite_through_the_entry_point(pytester):
    pytester.makepyfile(test_user=PLUGIN_TESTS)

    # A subprocess: only the installed entry point can bring the fixtures.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=3)


def test_the_fixtures(pytester):
    pytester.makepyfile(test_user=PLUGIN_TESTS)

    # In this process, so that coverage sees the plugin run.
    result = pytester.runpytest("-p", "no:cacheprovider", "-q")

    result.assert_outcomes(passed=3)


def test_the_plugin_is_registered_under_pytest11():
    from importlib.metadata import entry_points

    (plugin,) = entry_points(group="pytest11", name="fluxus")

    assert "fluxus._pytest_plugin" == plugin.value
