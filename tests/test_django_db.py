"""The ``"thread"`` timeout and Django's ORM on a real PostgreSQL.

Each trap is first reproduced with fluxus's database handling switched off
(the thread driver as it was: the call always moves to a worker thread,
which keeps its connection), then shown gone with it on: the row rolled
back, the abandoned write not committed, no idle or stale connection left
by a worker (``pg_stat_activity``), ``TestCase`` isolation and test
database teardown intact.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import fluxus
import fluxus._timeout._pool
import fluxus._timeout._strategies
import psycopg
import pytest

import _django_project
from _django_project import use_postgres

# isort: split
from django.db import OperationalError, connections, transaction
from django.test import Client, TestCase, TransactionTestCase
from django.test.utils import override_settings, setup_databases, teardown_databases
from django.urls import path

from notes_app.models import Note

if TYPE_CHECKING:
    from django.http import HttpRequest, HttpResponse

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.postgres,
]


@pytest.fixture(scope="module")
def pg(postgres: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The ``pg`` alias's test database, created and (cleanly) destroyed."""
    use_postgres(postgres)
    old = setup_databases(
        verbosity=0, interactive=False, aliases={"pg"}, serialized_aliases=set()
    )
    try:
        yield postgres
    finally:
        # Fails ("being accessed by other users") if a connection was left open.
        teardown_databases(old, verbosity=0)


def _server(pg: dict[str, Any]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=pg["HOST"], port=pg["PORT"], user=pg["USER"], dbname="postgres"
    )


def others(pg: dict[str, Any], database: str) -> int:
    """Count the server's connections to *database*."""
    with _server(pg) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate(pg: dict[str, Any], database: str) -> None:
    """End every server connection to *database* (a restart, a failover)."""
    with _server(pg) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
    deadline = time.monotonic() + 10
    while others(pg, database) and time.monotonic() < deadline:
        time.sleep(0.02)


def settle(pg: dict[str, Any], database: str, expected: int) -> int:
    """Wait (bounded) for the count of connections to reach *expected*."""
    deadline = time.monotonic() + 5
    count = others(pg, database)
    while count != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        count = others(pg, database)
    return count


@pytest.fixture(params=["unfixed", "fixed"])
def fixed(
    request: pytest.FixtureRequest, pg: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[bool]:
    """Run the test without fluxus's database handling, then with it."""
    is_fixed = request.param == "fixed"
    left_open: list[Any] = []

    def call_and_keep(func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        finally:  # kept open, as before; noted to be closed after the test
            left_open.extend(connections.all(initialized_only=True))

    if not is_fixed:
        monkeypatch.setattr(
            fluxus._timeout._strategies, "caller_in_transaction", lambda: False
        )
        monkeypatch.setattr(fluxus._timeout._pool, "call_in_worker", call_and_keep)
    Note.objects.using("pg").all().delete()
    connections["pg"].close()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fluxus.TransactionWarning)
        yield is_fixed
    deadline = time.monotonic() + 10  # abandoned calls end (and note theirs)
    while time.monotonic() < deadline and any(
        policy._bound.abandoned for policy in policies
    ):
        time.sleep(0.02)
    for wrapper in left_open:  # the workers' connections, closed from here
        wrapper.inc_thread_sharing()
        try:
            wrapper.close()
        except Exception:
            wrapper.connection = None  # killed by the server: dropped
        finally:
            wrapper.dec_thread_sharing()
    connections["pg"].close()
    terminate(pg, connections["pg"].settings_dict["NAME"])


def texts() -> list[str]:
    return sorted(Note.objects.using("pg").values_list("text", flat=True))


# -- 1. a row written inside a timeout survives the rollback ------------------


def write_note(text: str, alias: str = "pg") -> None:
    Note.objects.using(alias).create(text=text)


def count_notes() -> int:
    return Note.objects.using("pg").count()


#: The timed functions of the running test: each test decorates its own, so
#: that no worker thread (and its connection) outlives the test.
timed: dict[str, Any] = {}


policies: list[fluxus.Timeout] = []


def make_timed(seconds: float, func: Any) -> Any:
    policy = fluxus.timeout(seconds)
    policies.append(policy)
    return policy(func)


@pytest.fixture(autouse=True)
def fresh_policies() -> Iterator[None]:
    timed["create_note"] = make_timed(5.0, write_note)
    timed["count_notes"] = make_timed(5.0, count_notes)
    yield
    timed.clear()
    policies.clear()


def atomic_view(request: HttpRequest) -> HttpResponse:
    with transaction.atomic(using="pg"):
        timed["create_note"]("written by the view")
        msg = "the view fails after the write"
        raise RuntimeError(msg)


def plain_view(request: HttpRequest) -> HttpResponse:
    timed["create_note"]("written by the view")
    msg = "the view fails after the write"
    raise RuntimeError(msg)


urlpatterns = [path("atomic", atomic_view), path("plain", plain_view)]


@pytest.mark.parametrize("how", ["atomic", "ATOMIC_REQUESTS"])
def test_a_write_in_a_timeout_is_rolled_back_with_the_view(
    fixed: bool, how: str
) -> None:
    pg_settings = connections.settings["pg"]
    pg_settings["ATOMIC_REQUESTS"] = how == "ATOMIC_REQUESTS"
    try:
        with override_settings(ROOT_URLCONF=__name__):
            response = Client(raise_request_exception=False).get(
                "/atomic" if how == "atomic" else "/plain"
            )
    finally:
        pg_settings["ATOMIC_REQUESTS"] = False
    assert response.status_code == 500
    assert texts() == ([] if fixed else ["written by the view"])


# -- 2. a write that "timed out" commits later --------------------------------


def test_a_timed_out_write_never_commits_after_the_rollback(fixed: bool) -> None:
    def update(pk: int) -> None:
        Note.objects.using("pg").filter(pk=pk).update(text="renamed late")
        time.sleep(0.35)  # slower than the deadline in any case

    rename = make_timed(0.3, update)

    note = Note.objects.using("pg").create(text="before")
    with (
        pytest.raises(fluxus.DeadlineExceeded),
        transaction.atomic(using="pg"),
    ):
        Note.objects.using("pg").select_for_update().get(pk=note.pk)
        rename(note.pk)
    if not fixed:
        # The abandoned worker was waiting for the row lock; it has it now.
        deadline = time.monotonic() + 10
        while texts() == ["before"] and time.monotonic() < deadline:
            time.sleep(0.02)
    assert texts() == (["before"] if fixed else ["renamed late"])


# -- 3. worker threads' connections are never closed --------------------------


def test_workers_close_their_connections(fixed: bool, pg: dict[str, Any]) -> None:
    gate = threading.Barrier(4)

    def caller() -> None:
        gate.wait(5)
        for _ in range(3):
            timed["count_notes"]()

    callers = [threading.Thread(target=caller) for _ in range(4)]
    for thread in callers:
        thread.start()
    for thread in callers:
        thread.join(20)
    connections["pg"].close()
    database = connections["pg"].settings_dict["NAME"]
    if fixed:
        assert settle(pg, database, 0) == 0
    else:
        assert others(pg, database) >= 1  # idle connections of idle workers


# -- 4. stale connections stay broken -----------------------------------------


def test_a_connection_killed_by_the_server_is_not_reused(
    fixed: bool, pg: dict[str, Any]
) -> None:
    assert timed["count_notes"]() == 0
    terminate(pg, connections["pg"].settings_dict["NAME"])
    failures = 0
    for _ in range(5):
        try:
            timed["count_notes"]()
        except OperationalError:
            failures += 1
    assert failures == (0 if fixed else 5)


# -- 5. tests break ----------------------------------------------------------


class IsolatedCase(TestCase):
    """Two tests in order: the first writes through a timeout."""

    __test__ = False
    databases = frozenset({"pg"})

    def test_1_writes(self) -> None:
        timed["create_note"]("from test 1")
        assert texts() == ["from test 1"]

    def test_2_starts_clean(self) -> None:
        assert texts() == []


def run_case(case: type[unittest.TestCase]) -> unittest.TestResult:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    return unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)


def test_testcase_rolls_back_what_a_timeout_wrote(fixed: bool) -> None:
    result = run_case(IsolatedCase)
    assert not result.errors
    assert len(result.failures) == (0 if fixed else 1)
    assert texts() == ([] if fixed else ["from test 1"])


class OtherDatabaseCase(TransactionTestCase):
    __test__ = False
    databases = frozenset({"pg_other"})

    def test_writes(self) -> None:
        timed["create_note"]("from a transaction test case", "pg_other")
        assert Note.objects.using("pg_other").count() == 1


def test_test_database_teardown_is_clean(fixed: bool, pg: dict[str, Any]) -> None:
    creation = connections["pg_other"].creation
    old_name = connections["pg_other"].settings_dict["NAME"]
    test_name = creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    try:
        result = run_case(OtherDatabaseCase)
        assert result.wasSuccessful(), result.errors + result.failures
        connections["pg_other"].close()
        if fixed:
            creation.destroy_test_db(old_name, verbosity=0)
            return
        with pytest.raises(OperationalError, match="accessed by other users"):
            creation.destroy_test_db(old_name, verbosity=0)
    finally:
        if connections["pg_other"].settings_dict["NAME"] == test_name:
            terminate(pg, test_name)
            creation.destroy_test_db(old_name, verbosity=0)


# -- the rule itself ----------------------------------------------------------


def test_the_warning_names_the_function_once() -> None:
    @fluxus.timeout(5.0)
    def in_transaction() -> str:
        return threading.current_thread().name

    with transaction.atomic():  # "default": SQLite; any alias counts
        with pytest.warns(fluxus.TransactionWarning, match="in_transaction"):
            assert in_transaction() == threading.current_thread().name
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert in_transaction() == threading.current_thread().name
    assert in_transaction() == "fluxus-timeout"


def test_in_the_caller_the_deadline_is_published_and_a_late_call_raises() -> None:
    @fluxus.timeout(0.05)
    def slow() -> float | None:
        left = fluxus.remaining()
        time.sleep(0.08)
        return left

    @fluxus.timeout(5.0)
    def quick() -> float | None:
        return fluxus.remaining()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", fluxus.TransactionWarning)
        with transaction.atomic():
            left = quick()
            assert left is not None
            assert 0 < left <= 5.0
            with pytest.raises(fluxus.DeadlineExceeded):
                slow()


def test_no_framework_is_imported_to_look_for_a_transaction() -> None:
    code = (
        "import sys, fluxus, fluxus._db as db\n"
        "@fluxus.timeout(5.0)\n"
        "def f(): return 1\n"
        "assert f() == 1 and not db.caller_in_transaction()\n"
        "assert not {'django', 'flask', 'sqlalchemy'} & set(sys.modules), sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_the_project_module_is_the_one_configuration() -> None:
    assert _django_project.PG_ALIASES == ("pg", "pg_other")


# -- the same under gunicorn's threads ------------------------------------------

GTHREAD_PROJECT = """
import os

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="gthread",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["fluxus.contrib.django"],
    MIDDLEWARE=["fluxus.contrib.django.FluxusMiddleware"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": os.environ["PG_HOST"],
            "PORT": os.environ["PG_PORT"],
            "USER": os.environ["PG_USER"],
            "NAME": "gthread",
            "CONN_MAX_AGE": 0,
        }
    },
)
django.setup()

import fluxus
import fluxus._timeout._pool
import fluxus._timeout._strategies
from django.core.wsgi import get_wsgi_application
from django.db import connection
from django.http import HttpResponse
from django.urls import path

if os.environ.get("FLUXUS_UNFIXED"):
    fluxus._timeout._strategies.caller_in_transaction = lambda: False
    fluxus._timeout._pool.call_in_worker = lambda func, *a, **k: func(*a, **k)


@fluxus.timeout(5.0)
def query():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return cursor.fetchone()[0]


def view(request):
    return HttpResponse(str(query()))


urlpatterns = [path("", view)]
application = get_wsgi_application()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("mode", ["unfixed", "fixed"])
def test_gunicorn_gthread_leaves_no_connection_open(
    pg: dict[str, Any], tmp_path: Any, mode: str
) -> None:
    pytest.importorskip("gunicorn")
    with psycopg.connect(
        host=pg["HOST"],
        port=pg["PORT"],
        user=pg["USER"],
        dbname="postgres",
        autocommit=True,
    ) as conn:
        conn.execute("DROP DATABASE IF EXISTS gthread WITH (FORCE)")
        conn.execute("CREATE DATABASE gthread")
    (tmp_path / "gthread_project.py").write_text(GTHREAD_PROJECT)
    port = free_port()
    env = {
        **os.environ,
        "PG_HOST": pg["HOST"],
        "PG_PORT": pg["PORT"],
        "PG_USER": pg["USER"],
        **({"FLUXUS_UNFIXED": "1"} if mode == "unfixed" else {}),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            *("-m", "gunicorn", "-k", "gthread", "--workers", "1", "--threads", "4"),
            *("--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path)),
            "gthread_project:application",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"

    def fetch(_: int) -> str:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                fetch(0)
                break
            except OSError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.05)
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(fetch, range(20))) == {"1"}
        if mode == "fixed":
            assert settle(pg, "gthread", 0) == 0
        else:
            assert others(pg, "gthread") >= 1  # the workers' idle connections
    finally:
        server.terminate()
        server.wait(timeout=20)
