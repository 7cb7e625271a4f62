"""fluxus.contrib.django through Django's Client and AsyncClient.

Django is configured once per process, by ``_django_project``; this
module's URLs are its ``ROOT_URLCONF``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fluxus
import pytest
from asgiref.sync import iscoroutinefunction
from django.conf import settings

import _django_project  # noqa: F401 - configures Django first

# isort: split

from django.http import HttpRequest, HttpResponse
from django.test import AsyncClient, Client, RequestFactory
from django.test.utils import override_settings
from django.urls import path
from django.utils.asyncio import async_unsafe
from django.utils.decorators import sync_and_async_middleware
from django.utils.functional import SimpleLazyObject
from django.views import View
from fluxus.contrib.django import (
    FluxusMiddleware,
    client_ip,
    rejection_response,
    storage_uri,
    user_key,
)

from _web import (
    Flaky,
    default_storage_restored,  # noqa: F401 - an autouse fixture
    new_address,
)

pytestmark = pytest.mark.timeout(30)


class FakeUser:
    def __init__(self, pk: int | None) -> None:
        self.pk = pk
        self.is_authenticated = pk is not None


@sync_and_async_middleware
def fake_auth_middleware(get_response: Any) -> Any:
    """Stand in for AuthenticationMiddleware without a database.

    ``X-User: 7`` logs user 7 in; ``request.user`` is lazy and, like
    Django's, refuses to load from an event loop; ``request.auser()`` loads
    it asynchronously.
    """

    def authenticate(request: HttpRequest) -> None:
        raw = request.headers.get("X-User")
        user = FakeUser(int(raw) if raw else None)
        request.user = SimpleLazyObject(async_unsafe(lambda: user))

        async def auser() -> FakeUser:
            return user

        request.auser = auser

    if iscoroutinefunction(get_response):

        async def async_middleware(request: HttpRequest) -> Any:
            authenticate(request)
            return await get_response(request)

        return async_middleware

    def middleware(request: HttpRequest) -> Any:
        authenticate(request)
        return get_response(request)

    return middleware


REJECTIONS = {
    "limited": fluxus.RateLimitExceeded("api", 1.2),
    "open": fluxus.CircuitOpenError("db", 0.3),
    "late": fluxus.DeadlineExceeded("slow", 2.0),
    "other": ValueError("not a rejection"),
}


def sync_reject(request: HttpRequest, what: str) -> HttpResponse:
    raise REJECTIONS[what]


async def async_reject(request: HttpRequest, what: str) -> HttpResponse:
    await asyncio.sleep(0)
    raise REJECTIONS[what]


flaky = Flaky()


@fluxus.retry(3)
def sync_retry(request: HttpRequest) -> HttpResponse:
    return HttpResponse(flaky("sync"))


@fluxus.retry(3)
async def async_retry(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse(flaky("async"))


class SyncItemView(View):
    @fluxus.retry(3)
    def get(self, request: HttpRequest, item: str) -> HttpResponse:
        return HttpResponse(f"{flaky('sync-method')} {item} {user_key(self, request)}")


@fluxus.retry(3)
class AsyncItemView(View):
    async def get(self, request: HttpRequest, item: str) -> HttpResponse:
        return HttpResponse(f"{flaky('async-method')} {item} {client_ip(request)}")


def keys(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{client_ip(request)} {user_key(request=request)}")


async def async_keys(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"{client_ip(request)} {user_key(request)}")


#: One budget per client address, shared by a sync and an async view.
per_ip = fluxus.rate_limit("2/minute", key=client_ip)
#: One budget per user (or address), shared by two view methods.
per_user = fluxus.rate_limit("2/minute", key=user_key)


@per_ip
def ip_limited(request: HttpRequest) -> HttpResponse:
    return HttpResponse(client_ip(request))


@per_ip
async def async_ip_limited(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse(client_ip(request))


class UserLimitedView(View):
    @per_user
    def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(user_key(self, request))


class AsyncUserLimitedView(View):
    @per_user
    async def get(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(user_key(self, request))


now = [0.0]
upstream = Flaky()
upstream_breaker = fluxus.circuit_breaker(2, 30.0, clock=lambda: now[0])
release = threading.Event()


@upstream_breaker
def call_upstream(request: HttpRequest) -> HttpResponse:
    return HttpResponse(upstream("down"))


@upstream_breaker
async def async_call_upstream(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(0)
    return HttpResponse(upstream("down"))


@fluxus.timeout(0.05)
def slow(request: HttpRequest) -> HttpResponse:
    release.wait(5)
    return HttpResponse("late")


@fluxus.timeout(0.05)
async def async_slow(request: HttpRequest) -> HttpResponse:
    await asyncio.sleep(5)
    return HttpResponse("late")


#: Names the limiter and breaker that follow FLUXUS_STORAGE_URI into Redis.
RUN = uuid.uuid4().hex
shared_limit = fluxus.rate_limit("2/minute", name=f"django-{RUN}")
shared_breaker = fluxus.circuit_breaker(1, 30.0, name=f"django-{RUN}")


@shared_limit
async def shared_limited(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok")


@shared_breaker
def shared_broken(request: HttpRequest) -> HttpResponse:
    raise ConnectionError


urlpatterns = [
    path("limited/ip/sync", ip_limited),
    path("limited/ip/async", async_ip_limited),
    path("limited/user/sync", UserLimitedView.as_view()),
    path("limited/user/async", AsyncUserLimitedView.as_view()),
    path("upstream/sync", call_upstream),
    path("upstream/async", async_call_upstream),
    path("slow/sync", slow),
    path("slow/async", async_slow),
    path("shared/limited", shared_limited),
    path("shared/broken", shared_broken),
    path("sync/<str:what>", sync_reject),
    path("async/<str:what>", async_reject),
    path("retry/sync", sync_retry),
    path("retry/async", async_retry),
    path("items/sync/<str:item>", SyncItemView.as_view()),
    path("items/async/<str:item>", AsyncItemView.as_view()),
    path("keys/sync", keys),
    path("keys/async", async_keys),
]


class PeerAsyncClient(AsyncClient):
    """An AsyncClient whose requests come from *peer* (the ASGI ``client``)."""

    def __init__(self, peer: str, *, raise_request_exception: bool = True) -> None:
        super().__init__(raise_request_exception=raise_request_exception)
        self.peer = peer

    def _base_scope(self, **request: Any) -> dict[str, Any]:
        scope: dict[str, Any] = super()._base_scope(**request)
        scope["client"] = [self.peer, 0]
        return scope


def get(
    client_kind: str,
    url: str,
    peer: str = "127.0.0.1",
    *,
    raise_request_exception: bool = True,
    **headers: str,
) -> Any:
    """GET *url* through Django's Client or AsyncClient (sync and async stacks).

    Header names are given with underscores for dashes (``X_User="5"``).
    """
    named = {name.replace("_", "-"): value for name, value in headers.items()}
    if client_kind == "sync":
        client = Client(raise_request_exception=raise_request_exception)
        return client.get(url, headers=named, REMOTE_ADDR=peer)

    async def fetch() -> Any:
        client = PeerAsyncClient(peer, raise_request_exception=raise_request_exception)
        return await client.get(url, headers=named)

    return asyncio.run(fetch())


@pytest.fixture(params=["sync", "async"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.parametrize("view", ["sync", "async"])
@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("limited", (429, "2", "slow down 2: Too many requests. Try again in 2 s")),
        ("open", (503, "1", "<h1>Service Unavailable (503)</h1><p>The service is")),
        ("late", (504, None, "<h1>Gateway Timeout (504)</h1><p>The server did not")),
    ],
)
def test_rejections_become_error_pages(client_kind, view, what, expected):
    status, retry_after, body = expected
    response = get(client_kind, f"/{view}/{what}")
    assert (status, retry_after) == (
        response.status_code,
        response.headers.get("Retry-After"),
    )
    assert body in response.content.decode()


def test_other_exceptions_are_left_to_django(client_kind):
    with pytest.raises(ValueError, match="not a rejection"):
        get(client_kind, "/sync/other")


def test_the_middleware_follows_the_mode_of_the_stack():
    async def async_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse("async")

    def sync_next(request: HttpRequest) -> HttpResponse:
        return HttpResponse("sync")

    assert (True, True) == (
        FluxusMiddleware.sync_capable,
        FluxusMiddleware.async_capable,
    )
    assert iscoroutinefunction(FluxusMiddleware(async_next))
    assert not iscoroutinefunction(FluxusMiddleware(sync_next))
    request = RequestFactory().get("/")
    assert b"sync" == FluxusMiddleware(sync_next)(request).content
    assert b"async" == asyncio.run(FluxusMiddleware(async_next)(request)).content


@pytest.mark.parametrize(
    ("setting", "value", "error"),
    [
        ("FLUXUS_STORAGE_URI", "redis", ValueError),
        ("FLUXUS_STORAGE_URI", 6379, TypeError),
        ("FLUXUS_TRUSTED_PROXIES", ["10.0.0.1/8"], ValueError),
    ],
)
def test_bad_settings_fail_when_the_middleware_is_built(setting, value, error):
    with override_settings(**{setting: value}), pytest.raises(error, match=setting):
        FluxusMiddleware(lambda request: HttpResponse())


def test_storage_uri_comes_from_the_settings():
    assert "memory://" == storage_uri()
    with override_settings(FLUXUS_STORAGE_URI="redis://10.0.0.5:6379/0"):
        assert "redis://10.0.0.5:6379/0" == storage_uri()


def test_retry_protects_function_views_and_view_methods(client_kind):
    flaky.update({"sync": 2, "async": 2, "sync-method": 2, "async-method": 2})
    bodies = [
        get(client_kind, url, X_User="5").content.decode()
        for url in (
            "/retry/sync",
            "/retry/async",
            "/items/sync/pen",
            "/items/async/ink",
        )
    ]
    assert [
        "sync",
        "async",
        "sync-method pen user:5",
        "async-method ink 127.0.0.1",
    ] == (bodies)
    assert {0} == set(flaky.values())


def test_decorated_views_keep_their_mode_for_django():
    assert iscoroutinefunction(async_retry)
    assert not iscoroutinefunction(sync_retry)
    assert AsyncItemView.view_is_async
    assert not SyncItemView.view_is_async


def test_keys_without_proxies_ignore_the_header(client_kind):
    response = get(
        client_kind, "/keys/sync", X_Forwarded_For="1.2.3.4", peer="10.0.0.2"
    )
    assert "10.0.0.2 ip:10.0.0.2" == response.content.decode()


def test_keys_behind_trusted_proxies(client_kind):
    with override_settings(FLUXUS_TRUSTED_PROXIES=["10.0.0.0/8"]):
        trusted = get(
            client_kind,
            "/keys/sync",
            X_Forwarded_For="6.6.6.6, 198.51.100.4, 10.0.0.9",
            peer="10.0.0.2",
            X_User="3",
        )
        untrusted = get(
            client_kind,
            "/keys/sync",
            X_Forwarded_For="198.51.100.4",
            peer="203.0.113.8",
        )
    assert ["198.51.100.4 user:3", "203.0.113.8 ip:203.0.113.8"] == [
        trusted.content.decode(),
        untrusted.content.decode(),
    ]


def test_the_parsed_proxies_follow_the_setting():
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.4"
    )
    proxies = ["192.0.2.1"]
    with override_settings(FLUXUS_TRUSTED_PROXIES=proxies):
        before = client_ip(request)
        proxies.append("10.0.0.0/8")
        after = client_ip(request)
        again = client_ip(request)
    assert ["10.0.0.2", "198.51.100.4", "198.51.100.4"] == [before, after, again]


def test_key_functions_find_the_request_of_a_view_method():
    request = RequestFactory().get("/", REMOTE_ADDR="192.0.2.44")
    view = View()
    view.setup(request)
    assert ["192.0.2.44"] * 2 == [client_ip(view, request), client_ip(view)]
    with pytest.raises(TypeError, match="HttpRequest"):
        client_ip("not a request")


def test_user_key_in_an_async_view_needs_the_user_resolved():
    with pytest.raises(RuntimeError, match="FLUXUS_RESOLVE_USER = True") as info:
        get("async", "/keys/async", X_User="9")
    assert "SynchronousOnlyOperation" == type(info.value.__cause__).__name__


def test_resolve_user_loads_the_user_before_async_views(client_kind):
    with override_settings(FLUXUS_RESOLVE_USER=True):
        response = get(client_kind, "/keys/async", X_User="9")
        anonymous = get(client_kind, "/keys/async")
    assert ["127.0.0.1 user:9", "127.0.0.1 ip:127.0.0.1"] == [
        response.content.decode(),
        anonymous.content.decode(),
    ]


def test_rejection_response_answers_only_rejections():
    request = RequestFactory().get("/")
    response = rejection_response(request, fluxus.CircuitOpenError("db", 61.0))
    assert response is not None
    assert (503, "61") == (response.status_code, response["Retry-After"])
    assert None is rejection_response(request, KeyError("x"))


def test_the_example_project_in_its_own_process():
    # The example configures Django for itself, so it runs in a process of its own.
    code = (
        "import django_app; from django.test import Client; client = Client(); "
        "answers = [client.get(p) for p in ['/quote'] * 3 + ['/aquote'] * 3]; "
        "print([a.status_code for a in answers], answers[-1].get('Retry-After'))"
    )
    examples = Path(__file__).parent.parent / "examples"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=examples,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    statuses, retry_after = result.stdout.splitlines()[-1].rsplit(" ", 1)
    assert ("[200, 200, 200, 200, 200, 429]", True) == (
        statuses,
        retry_after in {"9", "10"},
    )


def test_key_client_ip_gives_each_client_one_budget_across_views(client_kind):
    a, b = new_address(), new_address()
    requests = [("sync", a), ("async", a), ("async", b), ("sync", a), ("sync", b)]
    answers = [
        get(client_kind, f"/limited/ip/{view}", peer=ip) for view, ip in requests
    ]
    assert [200, 200, 200, 429, 200] == [r.status_code for r in answers]
    assert [a, a, b, b] == [r.content.decode() for r in answers if r.status_code == 200]
    assert 0 < int(answers[3]["Retry-After"]) <= 60
    assert "slow down" in answers[3].content.decode()  # the project's 429.html


def test_key_user_key_counts_a_user_across_addresses(client_kind):
    user, a, b = str(next(USERS)), new_address(), new_address()
    requests = [
        ("sync", user, a),
        ("async", user, b),
        ("sync", user, a),
        ("async", "", a),
        ("sync", "", a),
        ("async", "", a),
    ]
    with override_settings(FLUXUS_RESOLVE_USER=True):
        answers = [
            get(client_kind, f"/limited/user/{view}", peer=ip, X_User=who)
            for view, who, ip in requests
        ]
    assert [200, 200, 429, 200, 200, 429] == [r.status_code for r in answers]
    assert [f"user:{user}", f"user:{user}", f"ip:{a}", f"ip:{a}"] == [
        r.content.decode() for r in answers if r.status_code == 200
    ]


USERS = iter(range(1000, 10**6))


@pytest.fixture
def released() -> Iterator[None]:
    """Let the abandoned sync call of ``slow`` return at the end of the test."""
    release.clear()
    yield
    release.set()


def test_an_open_circuit_and_a_timeout_answer_503_and_504(client_kind, released):
    upstream_breaker.reset()
    upstream["down"] = 2
    now[0] = 100.0

    def answer(url: str) -> tuple[int, str | None]:
        response = get(client_kind, url, raise_request_exception=False)
        return response.status_code, response.get("Retry-After")

    opened = [answer(f"/upstream/{view}") for view in ("sync", "async", "sync")]
    now[0] += 12.4
    later = answer("/upstream/async")
    now[0] += 17.6
    recovered = answer("/upstream/async")
    assert [(500, None), (500, None), (503, "30")] == opened
    assert [(503, "18"), (200, None)] == [later, recovered]
    assert fluxus.CircuitState.CLOSED == upstream_breaker.state
    assert [(504, None)] * 2 == [answer("/slow/sync"), answer("/slow/async")]


@pytest.mark.redis
def test_the_storage_setting_reaches_policies_decorated_at_import(redis_url):
    import redis

    with override_settings(FLUXUS_STORAGE_URI=redis_url):
        # Django builds the middleware for each client: it sets the storage.
        statuses = [
            get(kind, "/shared/limited").status_code
            for kind in ("sync", "async", "sync")
        ]
        statuses += [
            get(kind, "/shared/broken", raise_request_exception=False).status_code
            for kind in ("async", "sync")
        ]
    assert [200, 200, 429, 500, 503] == statuses
    store = redis.Redis.from_url(redis_url)
    name = f"django-{RUN}"
    assert b"open" == store.hget(f"fluxus:breaker:{{{name}}}:state", "state")
    assert 1 == len(store.keys(f"*{name}/*"))


class Hops:
    """Counts Django's process_exception path (a thread hop in async stacks)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from django.core.handlers.base import BaseHandler

        self.calls = 0
        original = BaseHandler.process_exception_by_middleware

        def counted(handler: Any, exception: Exception, request: Any) -> Any:
            self.calls += 1
            return original(handler, exception, request)

        monkeypatch.setattr(BaseHandler, "process_exception_by_middleware", counted)


def test_async_rejections_are_answered_without_process_exception(monkeypatch):
    hops = Hops(monkeypatch)
    response = get("async", "/async/limited")
    assert response.status_code == 429
    assert response["Retry-After"] == "2"
    assert hops.calls == 0
    # A sync view in the async stack runs in Django's thread: Django's path.
    assert get("async", "/sync/limited").status_code == 429
    assert hops.calls == 1
    # Other errors are still Django's to answer.
    other = get("async", "/async/other", raise_request_exception=False)
    assert other.status_code == 500


class ReportingMiddleware:
    sync_capable = async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            from asgiref.sync import markcoroutinefunction

            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> None:
        return None


def test_another_process_exception_keeps_django_s_path(monkeypatch):
    hops = Hops(monkeypatch)
    with override_settings(
        MIDDLEWARE=[f"{__name__}.ReportingMiddleware", *settings.MIDDLEWARE]
    ):
        assert get("async", "/async/limited").status_code == 429
    assert hops.calls == 1


calls_of_none_view = [0]


async def async_none(request: HttpRequest) -> None:
    calls_of_none_view[0] += 1


urlpatterns.append(path("none", async_none))


def test_an_async_view_returning_none_is_called_once_and_refused():
    response = get("async", "/none", raise_request_exception=False)
    assert response.status_code == 500
    assert calls_of_none_view == [1]
