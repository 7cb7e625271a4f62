"""fluxus.contrib.flask through Flask's test client, Werkzeug and gunicorn."""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import flask
import fluxus
import pytest
from flask.views import MethodView
from fluxus.contrib.flask import (
    Fluxus,
    client_ip,
    handle_rejection,
    init_app,
    storage_uri,
    user_key,
)
from werkzeug.serving import make_server

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

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).parent.parent / "examples"


def make_app(**config: object) -> flask.Flask:
    app = flask.Flask(__name__)
    app.config.update(config)
    return app


def add_raising_views(app: flask.Flask) -> None:
    @app.get("/limited")
    def limited() -> str:
        raise fluxus.RateLimitExceeded("api", 1.2)

    @app.get("/open")
    def circuit_open() -> str:
        raise fluxus.CircuitOpenError("db", 0.3)

    @app.get("/forced-open")
    def forced_open() -> str:
        raise fluxus.CircuitOpenError("db", float("inf"))

    @app.get("/late")
    def late() -> str:
        raise fluxus.DeadlineExceeded("slow", 2.0)


@pytest.fixture
def app() -> flask.Flask:
    app = make_app()
    add_raising_views(app)
    init_app(app)
    return app


@pytest.mark.parametrize(
    ("path", "status", "retry_after", "title"),
    [
        ("/limited", 429, "2", b"Too Many Requests"),
        ("/open", 503, "1", b"Service Unavailable"),
        ("/forced-open", 503, None, b"Service Unavailable"),
        ("/late", 504, None, b"Gateway Timeout"),
    ],
)
def test_rejections_become_error_pages(app, path, status, retry_after, title):
    response = app.test_client().get(path)
    assert (status, retry_after) == (
        response.status_code,
        response.headers.get("Retry-After"),
    )
    assert "text/html; charset=utf-8" == response.content_type
    assert title in response.data


def test_the_apps_own_error_handler_renders_the_page(app):
    @app.errorhandler(429)
    def too_many(error):
        return {"error": error.description, "by": type(error.__cause__).__name__}, 429

    response = app.test_client().get("/limited")
    assert (429, "2") == (response.status_code, response.headers["Retry-After"])
    assert {
        "error": "Too many requests. Try again in 2 seconds.",
        "by": "RateLimitExceeded",
    } == response.json


def test_extension_object_and_factory_style():
    extension = Fluxus()
    app = make_app(FLUXUS_STORAGE_URI="redis://10.0.0.5:6379/1")
    add_raising_views(app)
    extension.init_app(app)
    assert extension is app.extensions["fluxus"].extension
    assert 504 == app.test_client().get("/late").status_code
    assert "redis://10.0.0.5:6379/1" == storage_uri(app)
    with app.app_context():
        assert "redis://10.0.0.5:6379/1" == storage_uri()
    assert "memory://" == storage_uri(make_app())


def test_other_errors_are_left_to_flask(app):
    @app.get("/boom")
    def boom() -> str:
        raise fluxus.FluxusError("not a rejection")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert 500 == app.test_client().get("/boom").status_code


@pytest.mark.parametrize(
    ("key", "value", "error", "match"),
    [
        ("FLUXUS_STORAGE_URI", "localhost", ValueError, "FLUXUS_STORAGE_URI"),
        ("FLUXUS_TRUSTED_PROXIES", ["proxy"], ValueError, "FLUXUS_TRUSTED_PROXIES"),
        ("FLUXUS_TRUSTED_PROXIES", 3, TypeError, "FLUXUS_TRUSTED_PROXIES"),
    ],
)
def test_bad_config_fails_at_init_app(key, value, error, match):
    with pytest.raises(error, match=match):
        init_app(make_app(**{key: value}))


def test_bad_current_user_hook_fails_at_once():
    with pytest.raises(TypeError, match=r"current_user.*'g\.user'"):
        Fluxus(current_user="g.user")  # type: ignore[arg-type]


def test_retry_protects_sync_async_and_method_views(app):
    flaky = Flaky(sync=2, method=2)
    flaky["async"] = 2

    @app.get("/sync/<int:number>")
    @fluxus.retry(3)
    def sync_view(number: int) -> str:
        return f"{flaky('sync')} {number}"

    @app.get("/async")
    @fluxus.retry(3)
    async def async_view() -> str:
        return flaky("async")

    class ItemView(MethodView):
        @fluxus.retry(3)
        def get(self, item: str) -> str:
            return f"{flaky('method')} {item}"

    app.add_url_rule("/items/<item>", view_func=ItemView.as_view("items"))
    client = app.test_client()
    assert ["sync 7", "async", "method pen"] == [
        client.get(path).text for path in ("/sync/7", "/async", "/items/pen")
    ]
    assert {"sync": 0, "async": 0, "method": 0} == flaky


def test_rejections_are_not_retried_and_still_answered(app):
    calls = []

    @app.get("/rejected")
    @fluxus.retry(5)
    def rejected() -> str:
        calls.append(1)
        raise fluxus.CircuitOpenError("db", 4.5)

    response = app.test_client().get("/rejected")
    assert (503, "5", 1) == (
        response.status_code,
        response.headers["Retry-After"],
        len(calls),
    )


def key_app(**config: object) -> flask.Flask:
    app = make_app(**config)

    @app.get("/ip")
    def ip() -> str:
        return client_ip()

    @app.get("/key/<name>")
    def key(name: str) -> str:
        return user_key(name=name)

    return app


def test_client_ip_ignores_the_header_by_default():
    app = key_app()
    init_app(app)
    response = app.test_client().get(
        "/ip",
        headers={"X-Forwarded-For": "1.2.3.4"},
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    assert "10.0.0.2" == response.text


@pytest.mark.parametrize("set_up", [True, False])
def test_client_ip_walks_the_header_behind_trusted_proxies(set_up):
    app = key_app(FLUXUS_TRUSTED_PROXIES=["10.0.0.0/8"])
    if set_up:
        init_app(app)
    client = app.test_client()
    trusted = client.get(
        "/ip",
        headers=[
            ("X-Forwarded-For", "6.6.6.6, 198.51.100.4"),
            ("X-Forwarded-For", "10.0.0.9"),
        ],
        environ_base={"REMOTE_ADDR": "10.0.0.2"},
    )
    untrusted = client.get(
        "/ip",
        headers={"X-Forwarded-For": "198.51.100.4"},
        environ_base={"REMOTE_ADDR": "203.0.113.1"},
    )
    assert ["198.51.100.4", "203.0.113.1"] == [trusted.text, untrusted.text]


class LoginUser:
    def __init__(self, user_id: str, *, authenticated: bool = True) -> None:
        self.user_id = user_id
        self.is_authenticated = authenticated

    def get_id(self) -> str:
        return self.user_id


class PlainUser:
    id = 42


def test_user_key_reads_g_user():
    app = key_app()
    init_app(app)
    users = iter([LoginUser("ada"), LoginUser("x", authenticated=False), PlainUser()])

    @app.before_request
    def load_user() -> None:
        flask.g.user = next(users)

    client = app.test_client()
    keys = [
        client.get("/key/a", environ_base={"REMOTE_ADDR": "10.1.1.1"}).text
        for _ in range(3)
    ]
    keys.append(key_app().test_client().get("/key/a").text)
    assert ["user:ada", "ip:10.1.1.1", "user:42", "ip:127.0.0.1"] == keys


def test_user_key_takes_a_current_user_hook():
    app = key_app()
    Fluxus(app, current_user=lambda: "grace")
    assert "user:grace" == app.test_client().get("/key/a").text


def test_key_client_ip_gives_each_client_its_own_budget():
    app = make_app()
    init_app(app)

    @app.get("/")
    @fluxus.rate_limit("2/minute", key=client_ip)
    def index() -> str:
        return client_ip()

    client = app.test_client()
    a, b = new_address(), new_address()
    answers = [
        client.get("/", environ_base={"REMOTE_ADDR": address})
        for address in (a, a, b, a, b, b)
    ]
    assert [200, 200, 200, 429, 200, 429] == [r.status_code for r in answers]
    assert [a, a, b, b] == [r.text for r in answers if r.status_code == 200]
    assert all(0 < int(r.headers["Retry-After"]) <= 60 for r in answers[3::2])


def test_key_user_key_counts_a_user_across_addresses():
    app = make_app()
    init_app(app)

    @app.before_request
    def load_user() -> None:
        name = flask.request.headers.get("X-User")
        flask.g.user = LoginUser(name) if name else None

    @app.get("/")
    @fluxus.rate_limit("2/minute", key=user_key)
    def index() -> str:
        return user_key()

    client = app.test_client()
    ada, a, b = f"ada-{uuid.uuid4()}", new_address(), new_address()
    requests = [(ada, a), (ada, b), (ada, a), ("", a), ("", a), ("", b), ("", a)]
    answers = [
        client.get("/", headers={"X-User": user}, environ_base={"REMOTE_ADDR": ip})
        for user, ip in requests
    ]
    assert [200, 200, 429, 200, 200, 200, 429] == [r.status_code for r in answers]
    assert [f"user:{ada}", f"ip:{a}", f"ip:{b}"] == [answers[i].text for i in (0, 3, 5)]


def guarded_app(now: list[float], release: threading.Event) -> flask.Flask:
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    init_app(app)
    add_guarded_views(app, now, release)
    return app


def test_an_open_circuit_and_a_timeout_through_the_test_client(release):
    now = [100.0]
    app = guarded_app(now, release)
    breaker = fluxus.layers(app.view_functions["call_upstream"])[0]
    client = app.test_client()

    def answer(path: str) -> tuple[int, str | None]:
        response = client.get(path)
        return response.status_code, response.headers.get("Retry-After")

    assert GUARDED_ANSWERS == walk_guarded_views(answer, now)
    assert fluxus.CircuitState.CLOSED == breaker.state


@pytest.fixture
def serve() -> Iterator[Callable[[flask.Flask], str]]:
    """Serve apps under a threaded Werkzeug server on 127.0.0.1."""
    servers = []

    def start(app: flask.Flask) -> str:
        httpd = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        servers.append((httpd, thread))
        return f"http://127.0.0.1:{httpd.server_port}"

    yield start
    for httpd, thread in servers:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def test_a_real_server_answers_concurrent_clients_with_429(serve):
    app = make_app(FLUXUS_TRUSTED_PROXIES=["127.0.0.1"])
    init_app(app)
    admitted: list[str] = []

    @app.get("/")
    @fluxus.rate_limit(0.1, burst=3, key=client_ip)  # 3 at once, then 1 per 10 s
    def index() -> str:
        admitted.append(client_ip())
        return "ok"

    a, b = new_address(), new_address()
    answers = hammer(
        f"{serve(app)}/", 16, [{"X-Forwarded-For": a}, {"X-Forwarded-For": b}]
    )
    by_client = [sorted(status for status, _, _ in answers[i::2]) for i in (0, 1)]
    assert [[200] * 3 + [429] * 5] * 2 == by_client
    assert [a] * 3 + [b] * 3 == sorted(admitted)
    # The next token is 10 s away; a slow machine may have used up 1 s of it.
    assert {"9", "10"} >= {retry for status, retry, _ in answers if status == 429}
    assert {b"ok"} == {body for status, _, body in answers if status == 200}


def test_a_real_server_answers_an_open_circuit_and_a_timeout(serve, release):
    url = serve(guarded_app([0.0], release))
    answers = [fetch(f"{url}/upstream")[:2] for _ in range(3)]
    assert [(500, ""), (500, ""), (503, "30")] == answers
    assert [(504, "")] * 2 == [
        fetch(f"{url}{path}")[:2] for path in ("/slow", "/aslow")
    ]


@pytest.mark.redis
def test_storage_uri_reaches_policies_decorated_before_init_app(redis_url):
    import redis

    name = f"flask-{uuid.uuid4()}"
    app = make_app(FLUXUS_STORAGE_URI=redis_url)
    limiter = fluxus.rate_limit("2/minute", name=name)
    breaker = fluxus.circuit_breaker(1, 30.0, name=name)
    local = fluxus.rate_limit("1/minute", name=name, storage="memory://")

    @app.get("/limited")
    @limiter
    def limited() -> str:
        return "ok"

    @app.get("/local")
    @local
    def local_view() -> str:
        return "ok"

    @app.get("/broken")
    @breaker
    def broken() -> str:
        raise ConnectionError

    app.config["PROPAGATE_EXCEPTIONS"] = False
    init_app(app)  # after the decorators, as with blueprints and app factories
    client = app.test_client()
    statuses = [client.get(path).status_code for path in ["/limited"] * 3]
    statuses += [client.get(path).status_code for path in ["/broken"] * 2]
    statuses += [client.get(path).status_code for path in ["/local"] * 2]
    assert [200, 200, 429, 500, 503, 200, 429] == statuses
    store = redis.Redis.from_url(redis_url)
    assert b"open" == store.hget(f"fluxus:breaker:{{{name}}}:state", "state")
    assert 1 == len(store.keys(f"*{name}/*"))  # the Redis limiter; not the local
    assert [redis_url, redis_url, "memory://"] == [
        limiter.storage,
        storage_uri(app),
        local.storage,
    ]


def test_handle_rejection_reraises_what_it_does_not_answer(app):
    error = fluxus.FluxusError("not a rejection")
    with app.test_request_context("/"), pytest.raises(fluxus.FluxusError) as info:
        handle_rejection(error)
    assert error is info.value


def test_the_example_app(monkeypatch, instant):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = runpy.run_path(str(EXAMPLES / "flask_app.py"))
    client = example["app"].test_client()
    address = new_address()
    answers = [
        client.get("/quote", environ_base={"REMOTE_ADDR": address}) for _ in range(6)
    ]
    assert [200] * 5 + [429] == [answer.status_code for answer in answers]
    assert answers[-1].headers["Retry-After"] in {"9", "10"}
    assert address == answers[0].json["client"]
    fluxus.layers(example["fetch_status"])[0].reset()  # shared by the examples
    status = [client.get("/status") for _ in range(3)]
    assert [(502, None), (502, None), (503, "30")] == [
        (answer.status_code, answer.headers.get("Retry-After")) for answer in status
    ]


SHARED_SERVER = """
import sys

import flask
from werkzeug.serving import make_server

import fluxus
from fluxus.contrib.flask import client_ip, init_app

redis_url, name = sys.argv[1:3]
app = flask.Flask("shared")


@app.get("/")
@fluxus.rate_limit("4/minute", name=name, key=client_ip)
def index():
    return "ok"


# Configured after the views were decorated; the limiter, built without
# storage=, looks the storage up on its first call.
app.config["FLUXUS_STORAGE_URI"] = redis_url
init_app(app)
server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.mark.redis
def test_two_server_processes_share_one_storage_uri(redis_url, tmp_path):
    script = tmp_path / "shared_server.py"
    script.write_text(SHARED_SERVER)
    name = f"shared-{uuid.uuid4()}"
    servers = [
        subprocess.Popen(
            [sys.executable, str(script), redis_url, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        urls = [f"http://127.0.0.1:{int(s.stdout.readline())}/" for s in servers]
        answers = [fetch(urls[i % 2]) for i in range(10)]
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=10)
            server.stdout.close()
    assert [200] * 4 + [429] * 6 == [status for status, _, _ in answers]
    # Both processes refuse, each with the wait until the shared window ends.
    waits = [int(retry) for status, retry, _ in answers if status == 429]
    assert all(55 <= wait <= 60 for wait in waits)
    assert sorted(waits, reverse=True) == waits


PRELOADED_APP = """
import os

import flask
import fluxus
from fluxus.contrib.flask import init_app

app = flask.Flask("preloaded")
limiter = fluxus.rate_limit(0.01, burst=4, name=os.environ["LIMIT_NAME"])


@app.get("/")
@limiter
def index():
    return "ok"


@app.get("/connection")
def connection():
    limiter.allow()  # builds this worker's storage, if it has none yet
    return str(limiter._plan.store._client().client_id())


app.config["FLUXUS_STORAGE_URI"] = os.environ["FLUXUS_STORAGE_URI"]
init_app(app)
# The master uses the limiter before it forks its workers: a Redis client
# and its connection exist in the master from here on.
limiter.allow()
print(limiter._plan.store._client().client_id(), flush=True)
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.redis
def test_gunicorn_workers_forked_from_a_preloaded_app_share_a_redis_limit(
    redis_url, tmp_path
):
    pytest.importorskip("gunicorn")
    (tmp_path / "preloaded.py").write_text(PRELOADED_APP)
    port = free_port()
    env = {
        **os.environ,
        "FLUXUS_STORAGE_URI": redis_url,
        "LIMIT_NAME": f"gunicorn-{uuid.uuid4()}",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            *("-m", "gunicorn", "--preload", "--workers", "2", "--threads", "4"),
            *("--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path)),
            "preloaded:app",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        master = int(server.stdout.readline())
        deadline = time.monotonic() + 20
        while True:
            try:
                fetch(f"http://127.0.0.1:{port}/connection")
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.05)
        answers = hammer(f"http://127.0.0.1:{port}/", 10)
        workers = {
            int(fetch(f"http://127.0.0.1:{port}/connection")[2]) for _ in range(8)
        }
    finally:
        server.terminate()
        server.wait(timeout=20)
        server.stdout.close()
    assert [200] * 4 + [429] * 6 == sorted(status for status, _, _ in answers)
    # The next token is 100 s away; a slow machine may have used up 1 s of it.
    assert {"99", "100"} >= {retry for status, retry, _ in answers if status == 429}
    assert master not in workers
