"""Signing in to the console: passwords, sessions, cookies, CSRF, rate limits, audit."""
from __future__ import annotations

import pytest

from db.models import AuditRow, UserRow
from db.users import UserError, UserRole, UserStore
from tests.support.console import PASSWORD, console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import count


@pytest.fixture
def app(engine):
    seed_people(engine)
    return console_app(engine)


def actions(engine) -> list[str]:
    from sqlalchemy import select
    with engine.connect() as conn:
        return [a for (a,) in conn.execute(select(AuditRow.action).order_by(AuditRow.id))]


def test_passwords_are_hashed_and_checked(engine):
    seed_people(engine)
    users = UserStore(engine)
    users.create("real", PASSWORD, UserRole.SUPERVISOR)  # the production method
    from sqlalchemy import select
    with engine.connect() as conn:
        hashes = dict(conn.execute(select(UserRow.username, UserRow.password_hash)).all())
    assert hashes["real"].startswith("scrypt:")
    assert all(PASSWORD not in h for h in hashes.values())
    assert users.authenticate("real", PASSWORD) is not None
    assert users.authenticate("sup", PASSWORD).role is UserRole.SUPERVISOR
    assert users.authenticate("sup", PASSWORD + "x") is None
    assert users.authenticate("nobody", PASSWORD) is None
    assert users.authenticate("bad name!", PASSWORD) is None
    users.set_disabled("sup", True)
    assert users.authenticate("sup", PASSWORD) is None
    with pytest.raises(UserError):
        users.create("short", "123", UserRole.ADMIN)
    with pytest.raises(UserError):
        users.create("doc9", PASSWORD, UserRole.SURGEON)  # a surgeon's account names the surgeon
    with pytest.raises(UserError):
        users.create("sup", PASSWORD, UserRole.SUPERVISOR)  # taken


def test_sign_in_sets_a_hardened_cookie_and_is_audited(app, engine):
    client = app.test_client()
    response = sign_in(client, "sup")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie
    assert actions(engine) == ["sign_in"]
    page = client.get("/audit/")
    assert page.status_code == 403  # a supervisor is not an admin
    assert actions(engine) == ["sign_in", "denied"]


def test_plain_http_development_can_drop_secure(engine):
    seed_people(engine)
    app = console_app(engine, SESSION_COOKIE_SECURE=False)
    assert "Secure" not in sign_in(app.test_client(), "sup").headers["Set-Cookie"]


def test_wrong_password_is_refused_and_audited(app, engine):
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login", data={"username": "sup", "password": "nope",
                                           "csrf_token": token})
    assert response.status_code == 401
    assert "用户名或密码错误" in response.get_data(as_text=True)
    assert actions(engine) == ["sign_in_failed"]


def test_a_form_without_its_csrf_token_is_refused(app, engine):
    client = app.test_client()
    response = client.post("/login", data={"username": "sup", "password": PASSWORD})
    assert response.status_code == 400
    assert "csrf_refused" in actions(engine)
    sign_in(client, "sup")
    assert client.post("/logout").status_code == 400  # no token: still signed in
    assert client.get("/audit/").status_code == 403


def test_sign_in_is_rate_limited_per_user(engine):
    seed_people(engine)
    app = console_app(engine, ratelimit=True)
    client = app.test_client()
    token = csrf_token(client, "/login")
    codes = [client.post("/login", data={"username": "head", "password": "wrong",
                                         "csrf_token": token}).status_code for _ in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
    assert "sign_in_throttled" in actions(engine)


def test_pages_need_a_signed_in_user_and_the_right_role(app, engine):
    client = app.test_client()
    response = client.get("/audit/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    sign_in(client, "admin")
    page = client.get("/audit/")
    assert page.status_code == 200 and "审计日志" in page.get_data(as_text=True)
    assert client.get("/lang/en?next=/audit/").status_code == 302
    assert "Audit log" in client.get("/audit/").get_data(as_text=True)


def test_an_open_redirect_after_sign_in_is_not_followed(app):
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=//evil.example/x", data={
        "username": "sup", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302 and "evil" not in response.headers["Location"]


def test_a_disabled_account_is_signed_out_on_its_next_request(app, engine):
    client = app.test_client()
    sign_in(client, "admin")
    UserStore(engine).set_disabled("admin", True)
    assert client.get("/audit/").status_code == 302


def test_security_headers_on_every_page(app):
    client = app.test_client()
    page = client.get("/login")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Cache-Control"] == "no-store"


def test_sign_out_ends_the_session_even_for_a_copied_cookie(app, engine):
    client = app.test_client()
    sign_in(client, "admin")
    stolen = client.get_cookie("hotline_session").value
    token = csrf_token(client, "/audit/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/audit/").status_code == 302
    assert actions(engine)[-1] == "sign_out"
    assert count(engine, AuditRow) >= 2
    replay = app.test_client()
    replay.set_cookie("hotline_session", stolen)
    assert replay.get("/audit/").status_code == 302  # the copy died with the session


def test_password_role_and_disable_end_only_that_accounts_sessions(engine):
    from datetime import timedelta
    seed_people(engine)
    users = UserStore(engine, hash_method="pbkdf2:sha256:1000")
    day = timedelta(hours=8)
    uid = {name: users.by_username(name).id for name in ("head", "sup")}

    def live(name: str, sid: str) -> bool:
        return users.session_user(sid, day) == uid[name]

    heads = [users.start_session(uid["head"]) for _ in range(2)]
    sup = users.start_session(uid["sup"])
    assert users.set_password("head", PASSWORD + "-new") == 2
    assert not any(live("head", sid) for sid in heads) and live("sup", sup)
    again = users.start_session(uid["head"])
    assert users.set_role("head", UserRole.SUPERVISOR) == 1 and not live("head", again)
    assert users.get(uid["head"]).role is UserRole.SUPERVISOR
    with pytest.raises(UserError):
        users.set_role("sup", UserRole.SURGEON)  # a surgeon's account names the surgeon
    with pytest.raises(UserError):
        users.set_role("nobody", UserRole.ADMIN)
    assert live("sup", sup)  # refused changes end nothing
    later = users.start_session(uid["head"])
    assert users.set_disabled("head", True) == 1 and users.set_disabled("head", False) == 0
    assert not live("head", later) and live("sup", sup)
