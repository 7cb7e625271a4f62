"""The ``"thread"`` timeout and Flask-SQLAlchemy on a real PostgreSQL.

Flask-SQLAlchemy scopes its ``Session`` to the application context, which a
worker thread shares with the caller through the copied context. Each
check is reproduced with fluxus's database handling switched off, then
shown gone with it on: no ``Session`` used by two threads, connections back
in the pool, a write inside the request's transaction rolled back with it.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import flask
import fluxus
import fluxus._timeout._pool
import fluxus._timeout._strategies
import psycopg
import pytest
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

pytestmark = [pytest.mark.timeout(60), pytest.mark.postgres]


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Note(db.Model):  # type: ignore[name-defined,misc]
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str]


@pytest.fixture(scope="module")
def database_uri(postgres: dict[str, Any]) -> str:
    with psycopg.connect(
        host=postgres["HOST"],
        port=postgres["PORT"],
        user=postgres["USER"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute("DROP DATABASE IF EXISTS flask_notes")
        conn.execute("CREATE DATABASE flask_notes")
    return (
        f"postgresql+psycopg://{postgres['USER']}@{postgres['HOST']}:"
        f"{postgres['PORT']}/flask_notes"
    )


@pytest.fixture
def app(database_uri: str) -> Iterator[flask.Flask]:
    """A new app per test (its routes are the test's), on one database."""
    app = flask.Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_uri
    db.init_app(app)
    with app.app_context():
        db.create_all()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(params=["unfixed", "fixed"])
def fixed(
    request: pytest.FixtureRequest, app: flask.Flask, monkeypatch: pytest.MonkeyPatch
) -> Iterator[bool]:
    is_fixed = request.param == "fixed"
    if not is_fixed:
        monkeypatch.setattr(
            fluxus._timeout._strategies, "caller_in_transaction", lambda: False
        )
        monkeypatch.setattr(
            fluxus._timeout._pool, "call_in_worker", lambda func, *a, **k: func(*a, **k)
        )
    with app.app_context():
        db.session.query(Note).delete()
        db.session.commit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fluxus.TransactionWarning)
        yield is_fixed


def checked_out(app: flask.Flask) -> int:
    with app.app_context():
        return int(db.engine.pool.checkedout())


def test_a_session_is_never_used_by_two_threads(app: flask.Flask, fixed: bool) -> None:
    seen: dict[str, Any] = {}
    done, request_over = threading.Event(), threading.Event()

    @fluxus.timeout(0.1)
    def lookup() -> None:
        try:
            seen["worker"] = db.session()
            # The caller walks away meanwhile, and its request ends.
            request_over.wait(10)
            db.session.execute(db.text("SELECT 1"))
        finally:
            done.set()

    @app.get("/lookup")
    def view() -> str:
        try:
            lookup()
        except fluxus.DeadlineExceeded:
            seen["caller"] = db.session()
            db.session.execute(db.text("SELECT 1"))
        return "ok"

    assert app.test_client().get("/lookup").status_code == 200
    request_over.set()
    assert done.wait(10)
    assert (seen["worker"] is seen["caller"]) is not fixed
    if not fixed:
        # Unfixed, the worker used the caller's session; whether its
        # connection is still checked out then depends on timing.
        seen["worker"].close()
        return
    deadline = time.monotonic() + 5  # given back as the call ends
    while checked_out(app) != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert checked_out(app) == 0


def test_connections_go_back_to_the_pool(app: flask.Flask, fixed: bool) -> None:
    @fluxus.timeout(5.0)
    def count() -> int:
        return int(db.session.query(Note).count())

    @app.get("/count")
    def view() -> str:
        return str(count())

    client = app.test_client()
    for _ in range(5):
        assert client.get("/count").text == "0"
    assert checked_out(app) == 0


def test_a_write_stays_in_the_request_s_transaction(
    app: flask.Flask, fixed: bool
) -> None:
    threads: list[str] = []

    @fluxus.timeout(5.0)
    def add_note(text: str) -> None:
        threads.append(threading.current_thread().name)
        db.session.add(Note(text=text))
        db.session.flush()

    @app.post("/notes")
    def view() -> str:
        db.session.add(Note(text="by the view"))
        db.session.flush()  # the request's transaction has begun
        add_note("by the timed function")
        msg = "the view fails after both writes"
        raise RuntimeError(msg)

    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert app.test_client().post("/notes").status_code == 500
    with app.app_context():
        assert db.session.query(Note).count() == 0
    # Fixed, the call ran in the request's thread, in its transaction.
    assert (threads == [threading.current_thread().name]) is fixed


def test_without_a_transaction_the_worker_has_a_session_of_its_own(
    app: flask.Flask,
) -> None:
    @fluxus.timeout(5.0)
    def write() -> tuple[Any, str | None]:
        db.session.add(Note(text="own"))
        db.session.commit()
        return db.session(), flask.g.get("user")

    with app.app_context():
        flask.g.user = "ada"
        mine = db.session()
        theirs, user = write()
        assert theirs is not mine
        assert user == "ada"  # g is copied into the worker's app context
        assert db.session.query(Note).filter_by(text="own").count() == 1
        db.session.query(Note).delete()
        db.session.commit()
    assert checked_out(app) == 0
