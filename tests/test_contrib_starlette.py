"""fluxus.contrib.starlette through TestClient and a real uvicorn server."""

from __future__ import annotations

import inspect
import runpy
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
import fluxus
import httpx
import pytest
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.testclient import TestClient
from fluxus.contrib.starlette import (
    client_ip,
    handle_rejection,
    install,
    storage_uri,
    user_key,
)
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    BaseUser,
    SimpleUser,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from _web import (
    GUARDED_ANSWERS,
    Flaky,
    add_guarded_views,
    default_storage_restored,  # noqa: F401 - an autouse fixture
    fetch,
    hammer,
    new_address,
    release_fixture,  # noqa: F401 - the release fixture
    walk_guarded_views,
)

if TYPE_CHECKING:
    from starlette.requests import HTTPConnection
    from starlette.responses import PlainTextResponse

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).parent.parent / "examples"

#: Starlette runs on anyio: the apps are served under both of its backends.
BACKENDS = ["asyncio", "trio"]


async def limited(request: Request) -> PlainTextResponse:
    raise fluxus.RateLimitExceeded("api", 1.2)


def circuit_open(request: Request) -> PlainTextResponse:
    raise fluxus.CircuitOpenError("db", 0.3)


async def late(request: Request) -> PlainTextResponse:
    raise fluxus.DeadlineExceeded("slow", 2.0)


async def refused_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    raise fluxus.RateLimitExceeded("ws", 3.0)


def starlette_app(**options: object) -> Starlette:
    app = Starlette(
        routes=[
            Route("/limited", limited),
            Route("/open", circuit_open),
            Route("/late", late),
            WebSocketRoute("/ws", refused_socket),
        ]
    )
    install(app, **options)  # type: ignore[arg-type]
    return app


@pytest.mark.parametrize(
    ("path", "status", "retry_after", "detail"),
    [
        ("/limited", 429, "2", "Too many requests. Try again in 2 seconds."),
        (
            "/open",
            503,
            "1",
            "The service is temporarily unavailable. Try again in 1 second.",
        ),
        ("/late", 504, None, "The server did not get an answer in time."),
    ],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_rejections_become_json_answers(path, status, retry_after, detail, backend):
    response = TestClient(starlette_app(), backend=backend).get(path)
    assert (status, retry_after, {"detail": detail}) == (
        response.status_code,
        response.headers.get("Retry-After"),
        response.json(),
    )


def test_a_refused_websocket_is_closed_with_try_again_later():
    with (
        TestClient(starlette_app()).websocket_connect("/ws") as websocket,
        pytest.raises(WebSocketDisconnect) as info,
    ):
        websocket.receive_text()
    assert (1013, "Too many requests. Try again in 3 seconds.") == (
        info.value.code,
        info.value.reason,
    )


def test_the_handler_leaves_other_exceptions_alone():
    with pytest.raises(KeyError):
        import asyncio

        asyncio.run(handle_rejection(None, KeyError("x")))  # type: ignore[arg-type]


def test_storage_uri_from_install_then_environment_then_default(monkeypatch):
    monkeypatch.delenv("FLUXUS_STORAGE_URI", raising=False)
    assert "memory://" == storage_uri(Starlette())
    assert "memory://" == storage_uri(starlette_app())
    assert "redis://10.0.0.5:6379/0" == storage_uri(
        starlette_app(storage_uri="redis://10.0.0.5:6379/0")
    )
    monkeypatch.setenv("FLUXUS_STORAGE_URI", "redis://10.0.0.6:6379/0")
    assert ["redis://10.0.0.6:6379/0"] * 2 == [
        storage_uri(starlette_app()),
        storage_uri(object()),
    ]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"storage_uri": "redis"}, ValueError, "storage_uri"),
        ({"trusted_proxies": ["10.0.0.1/8"]}, ValueError, "trusted_proxies"),
        ({"trusted_proxies": 8}, TypeError, "trusted_proxies"),
    ],
)
def test_bad_settings_fail_at_install(options, error, match):
    with pytest.raises(error, match=match):
        starlette_app(**options)


def test_a_bad_environment_fails_at_install(monkeypatch):
    monkeypatch.setenv("FLUXUS_TRUSTED_PROXIES", "10.0.0.0/8, proxy")
    with pytest.raises(ValueError, match="FLUXUS_TRUSTED_PROXIES"):
        starlette_app()


# --- FastAPI: endpoints keep their signature for dependency injection ---------


class Settings:
    greeting = "hello"


def get_settings() -> Settings:
    return Settings()


flaky = Flaky()


def fastapi_app(**options: object) -> FastAPI:
    app = FastAPI()
    install(app, **options)  # type: ignore[arg-type]

    @app.get("/items/{item_id}")
    @fluxus.retry(3)
    async def read_item(
        item_id: int,
        settings: Annotated[Settings, Depends(get_settings)],
        q: str | None = None,
    ) -> dict[str, object]:
        return {"item": item_id, "q": q, "hi": settings.greeting, "by": flaky("async")}

    @app.get("/sync/{name}")
    @fluxus.retry(3)
    def read_sync(name: str, request: Request) -> dict[str, str]:
        return {"name": name, "by": flaky("sync"), "ip": client_ip(request)}

    @app.get("/keys")
    async def keys(request: Request) -> dict[str, str]:
        return {"ip": client_ip(request=request), "key": user_key(request)}

    @app.get("/refused")
    @fluxus.retry(4)
    async def refused() -> None:
        flaky["refused"] = flaky.get("refused", 0) + 1
        raise fluxus.CircuitOpenError("db", 29.01)

    return app


def test_dependency_injection_and_validation_survive_the_decorator():
    flaky.update({"async": 2, "sync": 2})
    client = TestClient(fastapi_app())
    assert {"item": 5, "q": "x", "hi": "hello", "by": "async"} == client.get(
        "/items/5", params={"q": "x"}
    ).json()
    assert {"name": "ada", "by": "sync", "ip": "testclient"} == client.get(
        "/sync/ada"
    ).json()
    assert 422 == client.get("/items/not-a-number").status_code
    assert {0} == set(flaky.values())


def test_the_openapi_schema_sees_the_original_parameters():
    schema = TestClient(fastapi_app()).get("/openapi.json").json()
    parameters = schema["paths"]["/items/{item_id}"]["get"]["parameters"]
    assert [("item_id", "path"), ("q", "query")] == [
        (p["name"], p["in"]) for p in parameters
    ]


def test_decorated_endpoints_keep_signature_and_mode():
    @fluxus.retry(2)
    async def endpoint(item_id: int, request: Request) -> dict[str, int]:
        return {"item": item_id}

    assert inspect.iscoroutinefunction(endpoint)
    assert ["item_id", "request"] == list(inspect.signature(endpoint).parameters)


def test_rejections_from_endpoints_are_not_retried():
    flaky["refused"] = 0
    response = TestClient(fastapi_app()).get("/refused")
    assert (503, "30", 1) == (
        response.status_code,
        response.headers["Retry-After"],
        flaky["refused"],
    )


def test_client_ip_ignores_the_header_by_default(monkeypatch):
    monkeypatch.delenv("FLUXUS_TRUSTED_PROXIES", raising=False)
    client = TestClient(fastapi_app(), client=("10.0.0.2", 5000))
    answer = client.get("/keys", headers={"X-Forwarded-For": "1.2.3.4"}).json()
    assert {"ip": "10.0.0.2", "key": "ip:10.0.0.2"} == answer


def test_client_ip_walks_the_header_behind_trusted_proxies():
    app = fastapi_app(trusted_proxies=["10.0.0.0/8"])
    behind = TestClient(app, client=("10.0.0.2", 5000)).get(
        "/keys", headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 10.0.0.7"}
    )
    direct = TestClient(app, client=("203.0.113.5", 5000)).get(
        "/keys", headers={"X-Forwarded-For": "198.51.100.4"}
    )
    assert ["198.51.100.4", "203.0.113.5"] == [
        behind.json()["ip"],
        direct.json()["ip"],
    ]


def test_without_install_the_environment_names_the_trusted_proxies(monkeypatch):
    monkeypatch.setenv("FLUXUS_TRUSTED_PROXIES", "10.0.0.0/8")
    app = FastAPI()

    @app.get("/ip")
    async def ip(request: Request) -> str:
        return client_ip(request)

    response = TestClient(app, client=("10.0.0.2", 1)).get(
        "/ip", headers={"X-Forwarded-For": "198.51.100.9"}
    )
    assert "198.51.100.9" == response.json()


def test_key_functions_need_the_request():
    with pytest.raises(TypeError, match="request: Request"):
        client_ip(3, name="x")


class HeaderAuth(AuthenticationBackend):
    async def authenticate(
        self, conn: HTTPConnection
    ) -> tuple[AuthCredentials, BaseUser] | None:
        name = conn.headers.get("X-User")
        if name is None:
            return None
        user: BaseUser = SimpleUser(name) if name != "legacy" else LegacyUser()
        return AuthCredentials(["authenticated"]), user


class LegacyUser(BaseUser):
    """A user class written before ``identity`` existed."""

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return "old-timer"


def test_user_key_reads_the_authenticated_user():
    app = FastAPI(
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())]
    )
    install(app)

    @app.get("/key")
    async def key(request: Request) -> str:
        return user_key(request)

    client = TestClient(app, client=("192.0.2.4", 1))
    assert ["user:ada", "user:old-timer", "ip:192.0.2.4"] == [
        client.get("/key", headers={"X-User": "ada"}).json(),
        client.get("/key", headers={"X-User": "legacy"}).json(),
        client.get("/key").json(),
    ]


# --- the real policies on endpoints ----------------------------------------


def test_key_client_ip_gives_each_client_its_own_budget():
    app = FastAPI()
    install(app)

    @app.get("/")
    @fluxus.rate_limit("2/minute", key=client_ip)
    async def index(request: Request) -> str:
        return client_ip(request)

    a, b = new_address(), new_address()
    clients = {ip: TestClient(app, client=(ip, 1)) for ip in (a, b)}
    answers = [clients[ip].get("/") for ip in (a, a, b, a, b, b)]
    assert [200, 200, 200, 429, 200, 429] == [r.status_code for r in answers]
    assert [a, a, b, b] == [r.json() for r in answers if r.status_code == 200]
    assert all(0 < int(r.headers["Retry-After"]) <= 60 for r in answers[3::2])


def test_key_user_key_counts_a_user_across_addresses():
    app = FastAPI(
        middleware=[Middleware(AuthenticationMiddleware, backend=HeaderAuth())]
    )
    install(app)

    @app.get("/")
    @fluxus.rate_limit("2/minute", key=user_key)
    def index(request: Request) -> str:
        return user_key(request)

    ada, a, b = f"ada-{uuid.uuid4()}", new_address(), new_address()
    clients = {ip: TestClient(app, client=(ip, 1)) for ip in (a, b)}
    requests = [(ada, a), (ada, b), (ada, a), ("", a), ("", a), ("", b), ("", a)]
    answers = [
        clients[ip].get("/", headers={"X-User": user} if user else {})
        for user, ip in requests
    ]
    assert [200, 200, 429, 200, 200, 200, 429] == [r.status_code for r in answers]
    assert [f"user:{ada}", f"ip:{a}", f"ip:{b}"] == [
        answers[i].json() for i in (0, 3, 5)
    ]


def guarded_app(now: list[float], release: threading.Event) -> FastAPI:
    app = FastAPI()
    install(app)
    add_guarded_views(app, now, release)
    return app


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_open_circuit_and_a_timeout_through_the_test_client(release, backend):
    now = [100.0]
    client = TestClient(
        guarded_app(now, release), raise_server_exceptions=False, backend=backend
    )

    def answer(path: str) -> tuple[int, str | None]:
        response = client.get(path)
        return response.status_code, response.headers.get("Retry-After")

    assert GUARDED_ANSWERS == walk_guarded_views(answer, now)


BUSY = "The service is temporarily unavailable. Try again later."


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulkhead_and_hedge_endpoints_under_either_library(backend):
    # Concurrent requests through httpx's ASGI transport, in one run of
    # the backend: one holds the bulkhead's slot, one waits for it, the
    # third finds the waiting place taken and gets 503 without Retry-After.
    app = FastAPI()
    install(app)
    gate = fluxus.bulkhead(1, max_waiting=1, timeout=10, name=f"web-{uuid.uuid4()}")
    opened: list[anyio.Event] = []
    ended: list[str] = []

    @app.get("/one")
    @gate
    async def one() -> str:
        await opened[0].wait()
        return "done"

    async def answer(n: int) -> str:
        try:
            await anyio.sleep(10 if n == 0 else 0)
            return str(n)
        finally:
            ended.append(f"{n}: {'cancelled' if n == 0 else 'returned'}")

    calls = iter(range(10))

    @app.get("/hedged")
    @fluxus.hedge(0.02)
    async def hedged() -> str:
        return await answer(next(calls))

    async def main() -> list[tuple[int, str | None, object]]:
        opened.append(anyio.Event())
        transport = httpx.ASGITransport(app=app)
        got: dict[int, httpx.Response] = {}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t"
        ) as client:

            async def get(i: int) -> None:
                got[i] = await client.get("/one")

            async with anyio.create_task_group() as group:
                group.start_soon(get, 0)
                while gate.in_use < 1:  # noqa: ASYNC110 - polling the policy
                    await anyio.sleep(0.001)
                group.start_soon(get, 1)
                while gate.waiting < 1:  # noqa: ASYNC110 - polling the policy
                    await anyio.sleep(0.001)
                await get(2)  # refused at once
                opened[0].set()
            got[3] = await client.get("/hedged")
        return [
            (r.status_code, r.headers.get("Retry-After"), r.json())
            for _, r in sorted(got.items())
        ]

    answers = anyio.run(main, backend=backend)
    assert [
        (200, None, "done"),
        (200, None, "done"),
        (
            503,
            None,
            {"detail": "The service is temporarily unavailable. Try again later."},
        ),
        (200, None, "1"),
    ] == answers
    assert (0, 0) == (gate.in_use, gate.waiting)
    assert ["1: returned", "0: cancelled"] == ended


@pytest.mark.redis
def test_install_storage_uri_reaches_policies_decorated_before(redis_url):
    import redis

    name = f"starlette-{uuid.uuid4()}"
    app = FastAPI()

    @app.get("/limited")
    @fluxus.rate_limit("2/minute", name=name)
    async def limited() -> str:
        return "ok"

    @app.get("/broken")
    @fluxus.circuit_breaker(1, 30.0, name=name)
    async def broken() -> str:
        raise ConnectionError

    install(app, storage_uri=redis_url)
    client = TestClient(app, raise_server_exceptions=False)
    statuses = [client.get(path).status_code for path in ["/limited"] * 3]
    statuses += [client.get(path).status_code for path in ["/broken"] * 2]
    assert [200, 200, 429, 500, 503] == statuses
    store = redis.Redis.from_url(redis_url)
    assert b"open" == store.hget(f"fluxus:breaker:{{{name}}}:state", "state")
    assert 1 == len(store.keys(f"*{name}/*"))


def test_the_environment_names_the_default_storage(monkeypatch):
    monkeypatch.setenv("FLUXUS_STORAGE_URI", "memcached://127.0.0.1:9")
    limiter = fluxus.rate_limit(5, name=f"env-{uuid.uuid4()}")
    install(FastAPI())
    assert "memcached://127.0.0.1:9" == limiter.storage
    with pytest.raises(ValueError, match=r"the default storage must be .*token-bucket"):
        limiter.acquire()


# --- a real server ----------------------------------------------------------


@pytest.fixture
def serve() -> Iterator[Callable[[FastAPI], str]]:
    """Serve apps under uvicorn on 127.0.0.1, each in a thread."""
    servers = []

    def start(app: FastAPI) -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_level="critical", lifespan="off")
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, daemon=True
        )
        thread.start()
        servers.append((server, thread, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield start
    for server, thread, sock in servers:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_a_real_server_answers_concurrent_clients_with_429(serve):
    app = FastAPI()
    install(app, trusted_proxies=["127.0.0.1"])
    admitted: list[str] = []

    @app.get("/")
    @fluxus.rate_limit(0.1, burst=3, key=client_ip)  # 3 at once, then 1 per 10 s
    async def index(request: Request) -> dict[str, str]:
        admitted.append(client_ip(request))
        return {"ok": "yes"}

    a, b = new_address(), new_address()
    answers = hammer(
        f"{serve(app)}/", 16, [{"X-Forwarded-For": a}, {"X-Forwarded-For": b}]
    )
    by_client = [sorted(status for status, _, _ in answers[i::2]) for i in (0, 1)]
    assert [[200] * 3 + [429] * 5] * 2 == by_client
    assert [a] * 3 + [b] * 3 == sorted(admitted)
    # The next token is 10 s away; a slow machine may have used up 1 s of it.
    refusals = {(retry, body) for status, retry, body in answers if status == 429}
    assert {
        ("10", b'{"detail":"Too many requests. Try again in 10 seconds."}'),
        ("9", b'{"detail":"Too many requests. Try again in 9 seconds."}'),
    } >= refusals


def test_a_real_server_answers_an_open_circuit_and_a_timeout(serve, release):
    url = serve(guarded_app([0.0], release))
    answers = [fetch(f"{url}/upstream")[:2] for _ in range(3)]
    assert [(500, ""), (500, ""), (503, "30")] == answers
    assert [(504, "")] * 2 == [
        fetch(f"{url}{path}")[:2] for path in ("/slow", "/aslow")
    ]


def test_the_example_app(monkeypatch, instant):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = runpy.run_path(str(EXAMPLES / "fastapi_app.py"))
    client = TestClient(example["app"], client=(new_address(), 1))
    answers = [client.get("/quotes/7") for _ in range(6)]
    assert [200] * 5 + [429] == [answer.status_code for answer in answers]
    assert answers[-1].headers["Retry-After"] in {"9", "10"}
    assert {"quote": "Quote #7: now is better than never.", "lang": "en"} == (
        answers[0].json()
    )
    assert 504 == client.get("/slow").status_code
