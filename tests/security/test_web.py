"""Issue 9 part 5: the console's and the API's own defences, one test per attack.

CSRF on every form (enumerated from the url_map), the API refusing a browser's
cookie, the session cookie's flags and its death at sign-out, security headers
on every page and every error page, sign-in rate limits, API tokens hashed at
rest and revocable, and no stack trace, path, SQL or DSN in any answer -- each
asserting the attack failed and nothing changed (the watched tables and the
audit log). On SQLite and PostgreSQL (fixture `engine`). Object-level
authorisation is in test_web_access.py, the hostile-input battery against the
real console process in test_web_hostile.py.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import zlib
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from console import CSP, create_app
from db.models import ApiTokenRow, AuditRow, ConsoleSessionRow
from db.tokens import TokenStore, hash_token
from hotline.config import load_config
from tests.security.web_world import (World, audit_actions_since, audit_count, build_world, clock,
                                      last_audit_id, snapshot)
from tests.support.console import PASSWORD, console_app, csrf_token, seed_people, sign_in
from tests.support.tcp_proxy import TcpProxy

# What a page must never show: a traceback, our source paths, SQL, a DSN.
LEAKS = (b"Traceback", b"File \"", b"/work/", b".py", b"site-packages", b"SELECT ", b"INSERT ",
         b"sqlalchemy", b"psycopg", b"postgresql", b"sqlite:", b"s3cret")


@pytest.fixture
def world(engine, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    world = build_world(engine, recordings)
    app = console_app(engine, clock=clock(), RECORDINGS_DIR=str(recordings))
    return world, app, engine


def _path(rule, world: World) -> str:
    """A real URL for a rule: its parameters filled with things that exist."""
    values = {"case_id": world.own_case, "task_id": world.own_task,
              "referral_id": world.other_referral, "trade_id": world.other_trade,
              "hospital_id": 1, "leave_id": world.other_leave, "override_id": 1,
              "rotation_id": 1, "team": "facial", "surgeon_id": 2, "code": "en",
              "filename": "console.css", "token": "A" * 24, "photo_id": 1, "link_id": 1}
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: str(values[m.group(1)]), rule.rule)


def _signed_in(app, who: str = "admin"):
    client = app.test_client()
    sign_in(client, who)
    return client


def _assert_clean(body: bytes) -> None:
    for leak in LEAKS:
        assert leak not in body, f"{leak!r} in the answer: {body[:400]!r}"


# --------------------------------------------------------------------------- CSRF


def _form_rules(app):
    # The caller's photo upload (/u/<token>) has no session and no CSRF token by
    # design: the unguessable token in its URL is the capability (console/photos.py).
    return [r for r in app.url_map.iter_rules()
            if "POST" in r.methods and not r.rule.startswith("/api/")
            and r.endpoint != "photos.upload"]


@pytest.mark.parametrize("forged", ["missing", "wrong", "another_session"])
def test_every_form_post_without_its_own_csrf_token_is_refused(world, forged):
    world, app, engine = world
    client = _signed_in(app)
    other = _signed_in(app, "sup")
    tokens = {"missing": None, "wrong": "IjQyIg.forged.token",
              "another_session": csrf_token(other, "/calls/")}
    rules = _form_rules(app)
    assert len(rules) >= 20, [r.rule for r in rules]  # the enumeration found the forms
    before = snapshot(engine)
    for rule in rules:
        mark = last_audit_id(engine)
        data = {"note": "x", "text": "x", "reason": "x", "number": "13912345678",
                "status": "accepted", "version": "1"}
        if tokens[forged] is not None:
            data["csrf_token"] = tokens[forged]
        answer = client.post(_path(rule, world), data=data)
        assert answer.status_code == 400, (rule.rule, answer.status_code)
        assert audit_actions_since(engine, mark) == ["csrf_refused"], rule.rule
        _assert_clean(answer.get_data())
    assert snapshot(engine) == before
    assert client.get("/audit/").status_code == 200  # /logout without a token signed no one out


def test_sign_in_without_a_csrf_token_is_refused(world):
    _, app, engine = world
    client = app.test_client()
    answer = client.post("/login", data={"username": "admin", "password": PASSWORD})
    assert answer.status_code == 400 and "hotline_session" not in answer.headers.get("Set-Cookie", "")
    assert client.get("/audit/").status_code == 302
    assert audit_count(engine, "sign_in") == 0


def test_the_api_refuses_a_browser_session_cookie(world):
    """A signed-in browser (cookie, even with a valid CSRF token) cannot call a
    state-changing /api/v1 route: the API knows only bearer tokens."""
    world, app, engine = world
    client = _signed_in(app)
    token = csrf_token(client, "/calls/")
    before = snapshot(engine)
    changing = [(r, m) for r in app.url_map.iter_rules() if r.rule.startswith("/api/")
                for m in r.methods & {"POST", "DELETE", "PUT", "PATCH"}]
    assert len(changing) >= 15
    for rule, method in changing:
        for headers in ({}, {"X-CSRFToken": token}):
            answer = client.open(_path(rule, world), method=method, headers=headers,
                                 json={"note": "x", "case_id": world.own_case})
            assert answer.status_code == 401, (method, rule.rule, answer.status_code)
            assert answer.get_json()["error"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    # Reads too: a page's cookie is not an API credential.
    assert client.get("/api/v1/calls").status_code == 401
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- cookies


def _cookie_payload(value: str) -> dict:
    """What a Flask session cookie carries: its first part, base64 (zlib if it starts with '.')."""
    compressed = value.startswith(".")
    data = value.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
    return json.loads(zlib.decompress(raw) if compressed else raw)


def test_the_session_cookie_is_hardened_and_holds_no_secret(world):
    world, app, engine = world
    client = app.test_client()
    answer = sign_in(client, "doc1")
    cookie = answer.headers["Set-Cookie"]
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in flags and "secure" in flags and flags["samesite"] == "SameSite=Lax"
    assert flags["path"] == "Path=/" and "domain" not in flags
    value = client.get_cookie("hotline_session").value
    payload = _cookie_payload(value)
    assert set(payload) <= {"uid", "sid", "lang", "csrf_token", "_permanent", "_fresh"}, payload
    for secret in (PASSWORD, "test-only", "pbkdf2", "scrypt"):
        assert secret not in json.dumps(payload) and secret not in value
    # The database keeps only the session id's hash: a database reader cannot
    # forge a cookie from it.
    with engine.connect() as conn:
        stored = [r.sid for r in conn.execute(select(ConsoleSessionRow))]
    assert payload["sid"] not in stored
    assert hashlib.sha256(payload["sid"].encode()).hexdigest() in stored


def test_insecure_cookies_only_when_configured(engine, tmp_path):
    seed_people(engine)
    env = {"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_INSTANCE": "webtest"}
    for insecure, secure in (("0", True), ("1", False)):
        config = load_config(env={**env, "HOTLINE_CONSOLE_INSECURE_COOKIES": insecure})
        app = create_app(config, engine=engine)
        cookie = sign_in(app.test_client(), "sup").headers["Set-Cookie"]
        assert ("Secure" in cookie) is secure and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_a_copied_cookie_dies_at_sign_out(world):
    world, app, engine = world
    client = _signed_in(app, "sup")
    stolen = client.get_cookie("hotline_session").value
    thief = app.test_client()
    thief.set_cookie("hotline_session", stolen)
    assert thief.get(f"/cases/{world.other_case}").status_code == 200  # the copy works ...
    token = csrf_token(client, "/calls/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    before = snapshot(engine)
    for path in (f"/cases/{world.other_case}", "/calls/", "/callbacks/", "/live/calls.json"):
        answer = thief.get(path)  # ... until the owner signs out
        assert answer.status_code == 302 and "/login" in answer.headers["Location"], path
    with engine.connect() as conn:
        assert all(r.revoked_at is not None for r in conn.execute(select(ConsoleSessionRow))
                   if r.user_id == 2)  # sup's one session
    assert snapshot(engine) == before


# --------------------------------------------------------------------------- headers


def _assert_headers(answer, path: str) -> None:
    csp = answer.headers.get("Content-Security-Policy", "")
    assert csp == CSP, path
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "frame-ancestors 'none'" in csp
    assert answer.headers.get("X-Frame-Options") == "DENY", path
    assert answer.headers.get("X-Content-Type-Options") == "nosniff", path
    assert answer.headers.get("Referrer-Policy") == "same-origin", path
    # Static files and the public OpenAPI document may be cached; nothing else.
    if not path.startswith(("/static/", "/api/v1/openapi.json")):
        assert "no-store" in answer.headers.get("Cache-Control", ""), path


def test_security_headers_on_every_page(world):
    world, app, _ = world
    client = _signed_in(app)
    seen = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        path = _path(rule, world)
        answer = client.get(path)
        answer.close()  # file responses (recordings, exports)
        _assert_headers(answer, path)
        seen += 1
        if answer.status_code == 200 and answer.mimetype == "text/html":
            page = answer.get_data(as_text=True)
            # The CSP forbids inline script and style: the pages must not need them.
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page), path
            assert not re.search(r"<style\b|\sstyle=\"|\son[a-z]+=\"", page), path
    assert seen >= 30


def test_security_headers_on_error_pages(world, monkeypatch):
    world, app, _ = world
    client = _signed_in(app)
    doc1 = _signed_in(app, "doc1")
    errors = {
        "404 page": client.get("/no/such/page"),
        "404 api": client.get("/api/v1/nope"),
        "405": client.get("/logout"),
        "403": doc1.get("/audit/"),
        "400 csrf": client.post("/incidents/on", data={}),
        "401 api": client.get("/api/v1/calls"),
        "413": client.post("/hospitals/import", data=b"x" * (3 * 1024 * 1024),
                           content_type="application/octet-stream"),
    }
    monkeypatch.setattr("console.calls.list_calls", _explode)
    errors["500 page"] = client.get("/calls/")
    for name, answer in errors.items():
        assert answer.status_code == int(name.split()[0]), (name, answer.status_code)
        _assert_headers(answer, name)
        _assert_clean(answer.get_data())


# --------------------------------------------------------------------------- sign-in rate limits


def _from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _try(client, username: str, password: str):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})


def test_sign_in_is_throttled_per_address_even_with_the_right_password(engine):
    seed_people(engine)
    app = console_app(engine, ratelimit=True)
    client = _from(app, "198.51.100.7")
    codes = [_try(client, f"guess{i}", "wrong").status_code for i in range(10)]
    assert codes == [401] * 10
    answer = _try(client, "admin", PASSWORD)  # the 11th in a minute, with the right password
    assert answer.status_code == 429 and "hotline_session" not in answer.headers.get("Set-Cookie", "")
    assert client.get("/audit/").status_code == 302
    with engine.connect() as conn:
        throttled = conn.execute(select(AuditRow).where(AuditRow.action == "sign_in_throttled")).all()
    assert [(r.subject_id, r.ip) for r in throttled] == [("admin", "198.51.100.7")]
    assert audit_count(engine, "sign_in") == 0
    elsewhere = _from(app, "198.51.100.8")
    assert _try(elsewhere, "admin", PASSWORD).status_code == 302  # another address is not blocked


def test_sign_in_is_throttled_per_username_across_addresses(engine):
    seed_people(engine)
    app = console_app(engine, ratelimit=True)
    for i in range(5):  # a distributed guesser: one attempt from each of five addresses
        guesser = _from(app, f"203.0.113.{i + 1}")
        assert _try(guesser, "doc1", f"guess-{i}").status_code == 401
    owner = _from(app, "192.0.2.50")
    answer = _try(owner, "doc1", PASSWORD)
    assert answer.status_code == 429 and "hotline_session" not in answer.headers.get("Set-Cookie", "")
    assert owner.get("/calls/").status_code == 302
    assert audit_count(engine, "sign_in_throttled") == 1 and audit_count(engine, "sign_in") == 0
    assert _try(owner, "doc2", PASSWORD).status_code == 302  # only that username is held back


# --------------------------------------------------------------------------- API tokens


def test_api_tokens_are_hashed_at_rest(world, tmp_path):
    world, app, engine = world
    secrets = list(world.tokens.values())
    with engine.connect() as conn:
        rows = conn.execute(select(ApiTokenRow)).all()
        audit = conn.execute(select(AuditRow)).all()
    stored = {r.token_hash for r in rows}
    assert {hash_token(s) for s in secrets} <= stored
    everything = repr([tuple(r) for r in rows]) + repr([tuple(r) for r in audit])
    for secret in secrets:
        assert secret not in everything and secret[3:] not in everything
    # Using a token writes nothing that holds it either.
    answer = app.test_client().get("/api/v1/calls", headers={
        "Authorization": f"Bearer {world.tokens['admin']}"})
    assert answer.status_code == 200
    if engine.dialect.name == "sqlite":
        # The whole database file, bytes and all: no token anywhere.
        engine.dispose()
        raw = Path(engine.url.database).read_bytes()
        assert not any(s.encode() in raw for s in secrets)


def test_a_revoked_token_is_refused_at_once(world):
    world, app, engine = world
    client = app.test_client()
    store = TokenStore(engine, clock=clock())
    _, secret = store.create("web-revoke-me", "supervisor")
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/calls", headers=bearer).status_code == 200
    store.revoke("web-revoke-me")
    before = snapshot(engine)
    for method, path, body in (("GET", "/api/v1/calls", None),
                               ("GET", f"/api/v1/cases/{world.other_case}", None),
                               ("POST", f"/api/v1/callbacks/{world.own_task}/close", {"note": "x"}),
                               ("POST", "/api/v1/incidents", {"on": True, "reason": "x"})):
        answer = client.open(path, method=method, headers=bearer, json=body)
        assert answer.status_code == 401, (path, answer.status_code)
        assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
        assert answer.get_json()["error"] == "unauthorized"
    assert snapshot(engine) == before
    # Near misses of a live token are refused too (no prefix match, no case folding).
    live = world.tokens["admin"]
    for near in (live[:-1], live + "x", live.upper(), live.swapcase(), live.replace("_", "-", 1),
                 hash_token(live), "hl_" + "A" * 43):
        answer = client.get("/api/v1/calls", headers={"Authorization": f"Bearer {near}"})
        assert answer.status_code == 401, near


# --------------------------------------------------------------------------- no stack traces


class _Boom(RuntimeError):
    pass


def _explode(*args, **kwargs):
    raise _Boom("SELECT * FROM cases WHERE x = 'postgresql://hotline:s3cret@db/hotline' "
                "File \"/work/main/db/calls_query.py\", line 42")


def test_an_exception_in_a_page_shows_no_trace(world, monkeypatch, caplog):
    world, app, engine = world
    client = _signed_in(app)
    monkeypatch.setattr("console.calls.list_calls", _explode)
    before = snapshot(engine)
    answer = client.get("/calls/")
    assert answer.status_code == 500 and answer.mimetype == "text/html"
    assert "服务器内部错误" in answer.get_data(as_text=True)
    _assert_clean(answer.get_data())
    assert snapshot(engine) == before
    assert any("unhandled error" in r.getMessage() for r in caplog.records)  # the log has it
    assert client.get("/callbacks/").status_code == 200  # and the console goes on


def test_an_exception_in_the_api_shows_no_trace(world, monkeypatch):
    world, app, engine = world
    monkeypatch.setattr("console.api_console.list_calls", _explode)
    answer = app.test_client().get("/api/v1/calls", headers={
        "Authorization": f"Bearer {world.tokens['admin']}"})
    assert answer.status_code == 500 and answer.is_json
    assert answer.get_json()["error"] == "internal_error"
    _assert_clean(answer.get_data())


def test_a_database_outage_is_a_clean_503_without_the_dsn(world):
    world, app, engine = world
    dead = create_engine("postgresql+psycopg://hotline:s3cret@127.0.0.1:9/hotline",
                         connect_args={"connect_timeout": 2}, pool_pre_ping=False)
    try:
        down = console_app(dead)
        client = down.test_client()
        token = csrf_token(client, "/login")  # the sign-in page needs no database
        answers = [client.post("/login", data={"username": "admin", "password": PASSWORD,
                                               "csrf_token": token}),
                   client.get("/api/v1/calls", headers={
                       "Authorization": f"Bearer {world.tokens['admin']}"})]
    finally:
        dead.dispose()
    page, api = answers
    assert page.status_code == 503 and api.status_code == 503
    assert page.headers["Retry-After"] and api.headers["Retry-After"]
    assert page.mimetype == "text/html" and "数据库暂不可用" in page.get_data(as_text=True)
    assert api.get_json()["error"] == "database_unavailable"
    for answer in answers:
        _assert_clean(answer.get_data())
        assert b"127.0.0.1:9" not in answer.get_data() and b"hotline:" not in answer.get_data()


def test_a_database_lost_mid_session_is_a_clean_503(engine):
    """PostgreSQL through a proxy that is cut while a user is signed in."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the cut proxy stands for a PostgreSQL server going away")
    url = engine.url
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    proxied = create_engine(url.set(host="127.0.0.1", port=proxy.port),
                            connect_args={"connect_timeout": 2})
    try:
        seed_people(proxied)
        app = console_app(proxied)
        client = _signed_in(app, "sup")
        assert client.get("/calls/").status_code == 200
        proxy.cut()
        for path in ("/calls/", "/callbacks/", "/cases/C-1"):
            answer = client.get(path)
            assert answer.status_code == 503, (path, answer.status_code)
            _assert_clean(answer.get_data())
            assert str(proxy.port).encode() not in answer.get_data()
        proxy.restore()
        assert client.get("/calls/").status_code == 200  # back without a restart
    finally:
        proxied.dispose()
        proxy.close()


# --------------------------------------------------------------------------- NUL


def test_a_nul_is_refused_cleanly_and_the_attempt_still_audited(world):
    """PostgreSQL cannot store a NUL in text: a NUL in a user name once failed the
    sign-in's own audit write (a 500, and the failed sign-in went unaudited); a NUL
    in a callback note or an API query was a 500 too."""
    world, app, engine = world
    client = app.test_client()
    token = csrf_token(client, "/login")
    answer = client.post("/login", data={"username": "admin\x00", "password": "x",
                                         "csrf_token": token})
    assert answer.status_code == 401
    with engine.connect() as conn:
        failed = conn.execute(select(AuditRow).where(AuditRow.action == "sign_in_failed")).all()
    assert [r.subject_id for r in failed] == ["admin\ufffd"]
    before = snapshot(engine)
    doc1 = _signed_in(app, "doc1")
    refused = doc1.post(f"/callbacks/{world.own_task}/close",
                        data={"csrf_token": csrf_token(doc1, "/callbacks/"), "note": "a\x00b"})
    assert refused.status_code == 400
    bearer = {"Authorization": f"Bearer {world.tokens['admin']}"}
    api = app.test_client()
    closed = api.post(f"/api/v1/callbacks/{world.own_task}/close", headers=bearer,
                      json={"note": "a\x00b"})
    assert closed.status_code == 400 and closed.get_json()["error"] == "invalid_request"
    queried = api.get("/api/v1/roster/audit?subject_id=a%00b", headers=bearer)
    assert queried.status_code in (200, 400) and queried.is_json
    for answer in (refused, closed, queried):
        _assert_clean(answer.get_data())
    assert snapshot(engine) == before
