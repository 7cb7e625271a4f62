"""The framework-free core of fluxus.contrib: HTTP answers and proxy rules."""

from __future__ import annotations

import ipaddress
import math
import subprocess
import sys

import fluxus
import pytest
from fluxus.contrib._http import (
    TrustedProxies,
    check_storage_uri,
    rejection_for,
    retry_after_header,
    user_or_ip,
)
from hypothesis import given
from hypothesis import strategies as st


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.0, 1), (0.001, 1), (1.0, 1), (1.0001, 2), (29.5, 30), (-3.0, 1)],
)
def test_retry_after_is_rounded_up_to_at_least_one_second(seconds, expected):
    assert expected == retry_after_header(seconds)


@pytest.mark.parametrize("seconds", [math.inf, math.nan])
def test_retry_after_is_unknown_for_an_endless_wait(seconds):
    assert None is retry_after_header(seconds)


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_retry_after_never_promises_less_than_the_wait(seconds):
    header = retry_after_header(seconds)
    assert header is not None
    assert header >= seconds
    assert header - seconds < 1 or header == 1


def test_each_rejection_has_its_status_and_retry_after():
    answers = [
        rejection_for(error)
        for error in (
            fluxus.RateLimitExceeded("api", 0.25),
            fluxus.CircuitOpenError("db", 12.2),
            fluxus.DeadlineExceeded("slow", 2.0),
        )
    ]
    assert [(429, 1), (503, 13), (504, None)] == [
        (a.status, a.retry_after) for a in answers if a is not None
    ]
    assert [{"Retry-After": "1"}, {"Retry-After": "13"}, {}] == [
        a.headers for a in answers if a is not None
    ]


def test_details_say_when_to_come_back_without_naming_the_policy():
    detail = rejection_for(fluxus.RateLimitExceeded("app.views.secret", 3.0))
    forced = rejection_for(fluxus.CircuitOpenError("db", math.inf))
    assert detail is not None
    assert forced is not None
    assert "Too many requests. Try again in 3 seconds." == detail.detail
    assert "secret" not in detail.detail
    assert (None, "The service is temporarily unavailable. Try again later.") == (
        forced.retry_after,
        forced.detail,
    )


def test_other_exceptions_are_not_rejections():
    assert None is rejection_for(ValueError("nope"))
    assert None is rejection_for(TimeoutError())


def test_storage_uri_is_checked():
    assert "redis://127.0.0.1:6379/0" == check_storage_uri(
        "redis://127.0.0.1:6379/0", "FLUXUS_STORAGE_URI"
    )
    with pytest.raises(ValueError, match=r"FLUXUS_STORAGE_URI.*'localhost'"):
        check_storage_uri("localhost", "FLUXUS_STORAGE_URI")
    with pytest.raises(TypeError, match=r"storage_uri.*None"):
        check_storage_uri(None, "storage_uri")


def test_user_keys_and_address_keys_never_collide():
    assert ["ip:10.0.0.1", "ip:10.0.0.1", "user:10.0.0.1", "user:0"] == [
        user_or_ip(None, "10.0.0.1"),
        user_or_ip("", "10.0.0.1"),
        user_or_ip("10.0.0.1", "10.0.0.1"),
        user_or_ip(0, "10.0.0.1"),
    ]


# --- trusted proxies ---------------------------------------------------------


def test_the_header_is_ignored_by_default():
    assert "203.0.113.9" == TrustedProxies().client_address(
        "203.0.113.9", ["198.51.100.1"]
    )
    assert not TrustedProxies()


def test_the_header_is_ignored_when_the_peer_is_not_a_trusted_proxy():
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert "203.0.113.9" == trusted.client_address("203.0.113.9", ["1.2.3.4"])


def test_the_walk_skips_trusted_hops_from_the_right():
    trusted = TrustedProxies(["10.0.0.0/8", "192.0.2.7"])
    header = ["6.6.6.6, 198.51.100.23, 192.0.2.7", "10.1.1.1"]
    assert "198.51.100.23" == trusted.client_address("10.0.0.2", header)


def test_a_chain_of_trusted_hops_gives_the_leftmost():
    trusted = TrustedProxies("10.0.0.0/8, ::1")
    assert "10.9.9.9" == trusted.client_address("::1", ["10.9.9.9, 10.0.0.3"])


def test_no_header_behind_a_trusted_proxy_gives_the_proxy():
    trusted = TrustedProxies(["127.0.0.1"])
    assert "127.0.0.1" == trusted.client_address("127.0.0.1", [])


def test_garbage_written_by_a_trusted_proxy_stops_at_the_last_known_hop():
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert "10.0.0.4" == trusted.client_address(
        "10.0.0.2", ["1.1.1.1, unknown, 10.0.0.4"]
    )


def test_ports_brackets_and_mapped_addresses_are_understood():
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert "198.51.100.2" == trusted.client_address(
        "::ffff:10.0.0.2", ["198.51.100.2:5123 , , 10.0.0.9"]
    )
    assert "2001:db8::1" == trusted.client_address("10.0.0.2", ["[2001:db8::1]:443"])
    assert "127.0.0.1" in TrustedProxies(["127.0.0.0/8"])
    assert object() not in TrustedProxies(["127.0.0.0/8"])


def test_a_peer_that_is_not_an_address_is_returned_as_is():
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert "testclient" == trusted.client_address("testclient", ["1.2.3.4"])


def test_trusted_proxies_accept_address_and_network_objects():
    trusted = TrustedProxies(
        [ipaddress.ip_address("192.0.2.1"), ipaddress.ip_network("10.0.0.0/8")]
    )
    assert "TrustedProxies(['192.0.2.1/32', '10.0.0.0/8'])" == repr(trusted)
    assert "TrustedProxies(['10.0.0.0/8'])" == repr(
        TrustedProxies(ipaddress.ip_network("10.0.0.0/8"))
    )


@pytest.mark.parametrize(
    ("proxies", "error", "message"),
    [
        (["10.0.0.1/8"], ValueError, r"FLUXUS_TRUSTED_PROXIES.*'10\.0\.0\.1/8'"),
        (["proxy.internal"], ValueError, "FLUXUS_TRUSTED_PROXIES.*'proxy.internal'"),
        ([10], TypeError, "FLUXUS_TRUSTED_PROXIES entries.*10"),
        (42, TypeError, "FLUXUS_TRUSTED_PROXIES must be a list.*42"),
    ],
)
def test_bad_trusted_proxies_name_the_setting(proxies, error, message):
    with pytest.raises(error, match=message):
        TrustedProxies(proxies, "FLUXUS_TRUSTED_PROXIES")


ipv4 = st.ip_addresses(v=4).map(str)


@given(remote=ipv4, header=st.lists(st.text(max_size=20), max_size=4))
def test_without_trusted_proxies_the_peer_is_the_client(remote, header):
    assert remote == TrustedProxies().client_address(remote, header)


@given(
    client=st.ip_addresses(v=4, network="198.51.100.0/24").map(str),
    forged=st.lists(
        st.one_of(ipv4, st.text(alphabet="0123456789.:abc[] ", max_size=12)),
        max_size=4,
    ),
    hops=st.lists(st.ip_addresses(v=4, network="10.0.0.0/8").map(str), max_size=3),
    proxy=st.ip_addresses(v=4, network="10.0.0.0/8").map(str),
    split=st.booleans(),
)
def test_what_the_client_forges_left_of_itself_never_counts(
    client, forged, hops, proxy, split
):
    entries = [*forged, client, *hops]
    header = [", ".join(entries)]
    if split and len(entries) > 1:
        header = [", ".join(entries[:1]), ", ".join(entries[1:])]
    trusted = TrustedProxies(["10.0.0.0/8"])
    assert client == trusted.client_address(proxy, header)


def test_import_fluxus_never_imports_the_web_frameworks():
    code = (
        "import sys, fluxus; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'flask', 'django', 'starlette', 'fastapi', 'werkzeug'} "
        "or m.startswith('fluxus.contrib')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_each_contrib_module_exports_a_sorted_all():
    import importlib

    for name in ("flask", "django", "starlette"):
        module = importlib.import_module(f"fluxus.contrib.{name}")
        assert sorted(module.__all__) == module.__all__
        for export in module.__all__:
            assert getattr(module, export) is not None


def test_bulkhead_full_and_threads_exhausted_are_503_without_retry_after():
    from fluxus.contrib._http import rejection_for

    for exc in (fluxus.BulkheadFull("pool", 4), fluxus.ThreadsExhausted("s", 1, 2)):
        answer = rejection_for(exc)
        assert answer is not None
        assert (503, {}) == (answer.status, answer.headers)
