"""Engines and migrations. SQLite gets WAL and foreign keys; PostgreSQL pre-ping.

`postgresql://` URLs are read as `postgresql+psycopg://` (psycopg 3 is the
driver the project ships; SQLAlchemy's default would be psycopg2).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 5000


def make_engine(url: str | URL, **kwargs: Any) -> Engine:
    """An engine for `url`, configured for the hotline's two databases."""
    url = make_url(url)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() == "sqlite":
        database = url.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # A host that does not answer would otherwise hold a writer for minutes.
        kwargs.setdefault("connect_args", {}).setdefault("connect_timeout", 5)
    return create_engine(url, **kwargs)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Per connection, outside any transaction (PRAGMA foreign_keys is a no-op
    # inside one). WAL lets the console read while a call is being written.
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching a new file to WAL takes a lock that a
        # second connection opening at the same moment must wait for.
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def alembic_config() -> Config:
    """Alembic settings for the migrations shipped inside this package (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def downgrade(target: str | URL | Engine, revision: str) -> None:
    """Downgrade the database to `revision` (for operators undoing a release, and tests)."""
    _run_alembic(target, command.downgrade, revision)


def migrate(target: str | URL | Engine, revision: str = "head") -> None:
    """Upgrade the database to `revision` (default: the newest), programmatically.

    The connection goes to env.py through `config.attributes`, never through
    the ini option, so a URL with '%' or a password is never interpolated.
    """
    _run_alembic(target, command.upgrade, revision)


def _run_alembic(target: str | URL | Engine, action: Any, revision: str) -> None:
    engine = target if isinstance(target, Engine) else make_engine(target)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config, revision)
    finally:
        if engine is not target:
            engine.dispose()
