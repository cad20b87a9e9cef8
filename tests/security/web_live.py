"""The web attack tests' real console: `hotline console` as its own process (waitress,
real HTTP) over a database holding the attack world (web_world.py), on SQLite
and on PostgreSQL.

    @pytest.fixture(scope="module")
    def live(database, tmp_path_factory):
        with world_console(database, tmp_path_factory, "mytest", PORTS) as found:
            yield found

`database` is a module-scoped fixture (import it into the test module): a
SQLite file, or a fresh schema of the test PostgreSQL dropped afterwards.
"""
from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from sqlalchemy import Engine

from db.session import make_engine, migrate
from tests.integration.browser_support import Console, start_console
from tests.security.web_world import World, build_world
from tests.support.db_helpers import pg_schema
from tests.support.console import PASSWORD


@dataclass
class LiveConsole:
    console: Console
    engine: Engine
    world: World
    sessions: dict[str, requests.Session]
    log: Path
    env: dict[str, str] = field(default_factory=dict)  # the console's, for `hotline` CLI runs
    recordings: Path | None = None

    @property
    def url(self) -> str:
        return self.console.base_url


def free_port(ports: range) -> int:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {ports}")


def port_range(offset: int, size: int = 40) -> range:
    """Ports at HOTLINE_TEST_PORT_BASE + offset (15000 if unset), so engineers' runs
    on one machine do not meet."""
    base = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000")) + offset
    return range(base, base + size)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request, tmp_path_factory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('webdb') / 'hotline.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_database"), "w_") as url:
        yield url


def signed_in(base: str, username: str, password: str = PASSWORD) -> requests.Session:
    session = requests.Session()
    page = session.get(base + "/login", timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    answer = session.post(base + "/login", data={"username": username, "password": password,
                                                 "csrf_token": token},
                          allow_redirects=False, timeout=30)
    assert answer.status_code == 302, answer.text[:300]
    return session


@contextmanager
def world_console(database: str, tmp_path_factory, instance: str, ports: range,
                  extra_env: dict[str, str] | None = None,
                  users: tuple[str, ...] = ("admin", "head", "doc1")) -> Iterator[LiveConsole]:
    """The attack world migrated into `database` and a console process serving it,
    with `users` signed in; stopped on exit."""
    var = tmp_path_factory.mktemp("webvar")
    recordings = var / "recordings" / instance
    recordings.mkdir(parents=True)
    migrate(database)
    engine = make_engine(database)
    world = build_world(engine, recordings)
    env = {key: value for key, value in os.environ.items()
           if key not in ("HOTLINE_CONFIG", "HOTLINE_DATABASE_URL")}
    env.update({"HOTLINE_VAR_DIR": str(var), "HOTLINE_INSTANCE": instance,
                "HOTLINE_DATABASE_URL": database, "HOTLINE_CONSOLE_INSECURE_COOKIES": "1",
                "HOTLINE_LOG_LEVEL": "INFO", **(extra_env or {})})
    log = var / "console.log"
    console = start_console(env, free_port(ports), log)
    try:
        sessions = {who: signed_in(console.base_url, who) for who in users}
        yield LiveConsole(console, engine, world, sessions, log, env, recordings)
    finally:
        console.stop()
        engine.dispose()
