"""fluxus.contrib.flask through Flask's test client and a real Werkzeug server."""

from __future__ import annotations

import runpy
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
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

from _web import Counter, Flaky, fetch, hammer

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


@pytest.fixture
def server() -> Iterator[tuple[str, Counter]]:
    counter = Counter(limit=3, retry_after=1.5)
    app = make_app()
    init_app(app)

    @app.get("/")
    def index() -> str:
        counter.admit()
        return "ok"

    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/", counter
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


def test_a_real_server_answers_concurrent_clients_with_429(server):
    url, counter = server
    answers = hammer(url, 12)
    statuses = sorted(status for status, _, _ in answers)
    assert [200] * 3 + [429] * 9 == statuses
    assert {"2"} == {retry for status, retry, _ in answers if status == 429}
    assert {b"ok"} == {body for status, _, body in answers if status == 200}
    assert 12 == counter.calls


def test_handle_rejection_reraises_what_it_does_not_answer(app):
    error = fluxus.FluxusError("not a rejection")
    with app.test_request_context("/"), pytest.raises(fluxus.FluxusError) as info:
        handle_rejection(error)
    assert error is info.value


def test_the_example_app(monkeypatch, instant):
    monkeypatch.syspath_prepend(str(EXAMPLES))
    example = runpy.run_path(str(EXAMPLES / "flask_app.py"))
    client = example["app"].test_client()
    answers = [client.get("/quote") for _ in range(6)]
    assert [200] * 5 + [429] == [answer.status_code for answer in answers]
    assert "10" == answers[-1].headers["Retry-After"]
    assert "127.0.0.1" == answers[0].json["client"]
    assert (503, "30") == (
        client.get("/maintenance").status_code,
        client.get("/maintenance").headers["Retry-After"],
    )


SHARED_SERVER = """
import sys

import flask
import redis
from werkzeug.serving import make_server

import fluxus
from fluxus.contrib.flask import init_app, storage_uri

app = flask.Flask("shared")
app.config["FLUXUS_STORAGE_URI"] = sys.argv[1]
init_app(app)
_client = None


def shared_counter():
    # Created on first use, in the serving process: nothing crosses a fork.
    global _client
    if _client is None:
        _client = redis.Redis.from_url(storage_uri(app))
    return _client


@app.get("/")
def index():
    calls = shared_counter().incr(sys.argv[2])
    if calls > 4:
        raise fluxus.RateLimitExceeded("shared", 2.5)
    return "ok"


server = make_server("127.0.0.1", 0, app, threaded=True)
print(server.server_port, flush=True)
server.serve_forever()
"""


@pytest.mark.redis
def test_two_server_processes_share_one_storage_uri(redis_url, tmp_path):
    script = tmp_path / "shared_server.py"
    script.write_text(SHARED_SERVER)
    counter_key = f"fluxus-test:{uuid.uuid4()}"
    servers = [
        subprocess.Popen(
            [sys.executable, str(script), redis_url, counter_key],
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
    assert {"3"} == {retry for status, retry, _ in answers if status == 429}
