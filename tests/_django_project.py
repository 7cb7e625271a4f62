"""The one Django configuration of the test process.

Django is configured once per process; the Django test modules import this
module first. ``default`` is SQLite in memory (no test touches it unless it
says so); ``pg`` and ``pg_other`` point at the throwaway PostgreSQL of the
``postgres`` fixture, whose port :func:`use_postgres` fills in.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

PG_ALIASES = ("pg", "pg_other")


def _pg(name: str) -> dict[str, Any]:
    return {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": "127.0.0.1",
        "PORT": "1",  # filled in by use_postgres()
        "USER": "fluxus",
        "NAME": "postgres",
        "CONN_MAX_AGE": 0,
        "TEST": {"NAME": f"test_fluxus_{name}", "DEPENDENCIES": []},
    }


if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="fluxus-tests",
        ALLOWED_HOSTS=["testserver"],
        ROOT_URLCONF="test_contrib_django",
        INSTALLED_APPS=["fluxus.contrib.django", "notes_app"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"},
            **{alias: _pg(alias) for alias in PG_ALIASES},
        },
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        MIDDLEWARE=[
            "test_contrib_django.fake_auth_middleware",
            "fluxus.contrib.django.FluxusMiddleware",
        ],
        TEMPLATES=[
            {
                "BACKEND": "django.template.backends.django.DjangoTemplates",
                "OPTIONS": {
                    "loaders": [
                        (
                            "django.template.loaders.locmem.Loader",
                            {"429.html": "slow down {{ retry_after }}: {{ detail }}"},
                        )
                    ]
                },
            }
        ],
    )
    django.setup()


def use_postgres(server: dict[str, Any]) -> None:
    """Point the ``pg`` aliases at *server* (the ``postgres`` fixture's)."""
    from django.db import connections

    for alias in PG_ALIASES:
        connections.settings[alias].update(
            HOST=server["HOST"], PORT=server["PORT"], USER=server["USER"]
        )
