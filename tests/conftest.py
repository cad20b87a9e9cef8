"""Shared fixtures. `db_url` runs a test on SQLite and on PostgreSQL.

PostgreSQL: one fresh database per test session (dropped at the end), one fresh
schema per test. Unreachable PostgreSQL skips those tests, except under CI
(env CI set), where it fails them: CI must not go green without PostgreSQL.
"""
from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

from db.session import make_engine, migrate
from tests.support.db_helpers import pg_schema

PG_ADMIN_URL = os.environ.get(
    "HOTLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[URL]:
    """A new, uniquely named PostgreSQL database for this test session."""
    admin_url = make_url(PG_ADMIN_URL)
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        admin.dispose()
        where = admin_url.render_as_string(hide_password=True)
        reason = f"PostgreSQL unreachable at {where} ({type(exc.orig).__name__}); set HOTLINE_TEST_PG_URL"
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI requires PostgreSQL", pytrace=False)
        pytest.skip(reason)
    name = f"hotline_t_{secrets.token_hex(6)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema in the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hotline.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_database"), "t_") as url:
        yield url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated database's engine."""
    migrate(db_url)
    engine = make_engine(db_url)
    try:
        yield engine
    finally:
        engine.dispose()
