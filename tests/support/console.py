"""Helpers for console tests: an app on a real database, users of every role, signing in.

    app = console_app(engine)                 # CSRF on, as in production
    client = app.test_client()
    sign_in(client, "sup")                    # a supervisor
    token = csrf_token(client, "/calls/")     # for a POST from that page

Users (password PASSWORD): admin, sup (supervisor), head (department head,
surgeon 9), doc1 (surgeon 1), doc2 (surgeon 2). Surgeons 1, 2, 3 and 9 exist
in teams facial and replant.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timezone

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from console import create_app
from db.repo import write_roster
from db.users import UserRole, UserStore
from oncall.model import Rank, Surgeon, Team

PASSWORD = "correct horse battery"
TEAMS = (Team("facial", "颌面部创伤", "Facial trauma", requires_approval=True, department_head=9),
         Team("replant", "断肢(指)再植", "Replantation"))
SURGEONS = (Surgeon(1, "王建国", "13800000001", Rank.ATTENDING),
            Surgeon(2, "李明", "13800000002", Rank.RESIDENT),
            Surgeon(3, "张伟", "13800000003", Rank.ATTENDING),
            Surgeon(9, "赵主任", "13800000009", Rank.CHIEF))
USERS = (("admin", UserRole.ADMIN, None), ("sup", UserRole.SUPERVISOR, None),
         ("head", UserRole.DEPARTMENT_HEAD, 9), ("doc1", UserRole.SURGEON, 1),
         ("doc2", UserRole.SURGEON, 2))
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def seed_people(engine: Engine) -> None:
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, ())
    # A cheap hash for test users only (scrypt costs ~0.1 s a user, every test);
    # the app checks whatever method a stored hash names.
    users = UserStore(engine, hash_method="pbkdf2:sha256:1000")
    for name, role, surgeon in USERS:
        users.create(name, PASSWORD, role, surgeon_id=surgeon, display_name=name)


def console_app(engine: Engine, clock: Callable[[], datetime] | None = None, **config) -> Flask:
    return create_app(engine=engine, clock=clock or (lambda: datetime.now(timezone.utc)),
                      test_config={"TESTING": True, "SECRET_KEY": "test-only",
                                   "RATELIMIT_ENABLED": config.pop("ratelimit", False), **config})


def csrf_token(client: FlaskClient, path: str) -> str:
    page = client.get(path)
    found = _CSRF.search(page.get_data(as_text=True))
    assert found, f"no CSRF token on {path} ({page.status_code})"
    return found.group(1)


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD):
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"username": username, "password": password,
                                           "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response
