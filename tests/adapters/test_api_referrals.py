"""The referrals JSON API (console.api_referrals) on SQLite and PostgreSQL (fixture `engine`):
token roles, object-level access for surgeon tokens, 201/400/403/404/409/422, the actor
"api:<token name>" in the events and the audit log, and the OpenAPI fragment."""
from __future__ import annotations

import json
from datetime import timezone

import pytest

from console.api_console import openapi_document
from db.models import NoticeRow, ReferralEventRow, ReferralRow
from db.referrals import ReferralStore
from db.tokens import TokenStore
from network.referrals import ReferralStatus as S
from tests.adapters.test_console_calls import NOW, audits, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, seed_people
from tests.support.db_helpers import count

UTC = timezone.utc
T0 = NOW.astimezone(UTC)
TOKENS = {"admin": ("admin", None), "sup": ("supervisor", None), "head": ("department_head", 9),
          "s1": ("surgeon", 1), "s3": ("surgeon", 3), "cal": ("calendar", None)}


@pytest.fixture
def seeded(engine):
    seed_people(engine)
    seed_calls(engine)
    return engine


@pytest.fixture
def store(seeded):
    return ReferralStore(seeded, clock=Clock(T0))


@pytest.fixture
def api(seeded):
    issued = {name: TokenStore(seeded).create(name, role, surgeon)[1]
              for name, (role, surgeon) in TOKENS.items()}
    client = console_app(seeded, clock=Clock(T0)).test_client()

    def call(method: str, path: str, token: str | None = "sup", body=None, raw: bytes | None = None):
        headers = {"Authorization": f"Bearer {issued[token]}"} if token else {}
        if raw is not None:
            return client.open(path, method=method, headers=headers, data=raw,
                               content_type="application/json")
        return client.open(path, method=method, headers=headers, json=body)

    return call


def written(engine) -> tuple[int, ...]:
    return tuple(count(engine, row) for row in (ReferralRow, ReferralEventRow, NoticeRow))


def test_make_read_and_advance_a_referral(api, seeded):
    made = api("POST", "/api/v1/referrals", body={
        "case_id": "C-1", "age": 45, "sex": "male", "injury": "右前臂离断",
        "injured_at": "2026-03-10T08:30", "note": "请求接收"})
    assert made.status_code == 201, made.json
    r = made.json["referral"]
    assert r["status"] == "requested" and r["status_zh"] == "已申请" and r["version"] == 1
    assert r["hospital"] == {"id": 1, "name": "长春市中心医院"}
    assert r["team"]["code"] == "facial" and r["surgeon"] is None
    assert r["patient"] == {"age": 45, "sex": "male", "injury": "右前臂离断",
                            "injured_at": "2026-03-10T08:30:00+08:00"}
    assert r["since_injury_s"] == 3.5 * 3600 and r["part"] == "limb"
    assert r["urgency"] == "urgent"  # an amputation named in the text: a replantation
    assert r["next"] == ["accepted", "declined", "cancelled"]
    assert r["events"] == [{"at": "2026-03-10T12:00:00+08:00", "status": "requested",
                            "actor": "api:sup", "note": "请求接收"}]

    rid = r["id"]
    version = 1
    for status in ("accepted", "en_route", "arrived", "admitted"):
        done = api("POST", f"/api/v1/referrals/{rid}/status",
                   body={"status": status, "version": version, "note": None})
        assert done.status_code == 200, done.json
        version = done.json["referral"]["version"]
    final = api("GET", f"/api/v1/referrals/{rid}").json["referral"]
    assert final["status"] == "admitted" and final["open"] is False and final["next"] == []
    assert final["urgency"] == "none" and version == 5
    assert [e["status"] for e in final["events"]] == [
        "requested", "accepted", "en_route", "arrived", "admitted"]
    entries = [a for a in audits(seeded) if a.subject == "referral"]
    assert [a.actor for a in entries] == ["api:sup"] * 5
    assert [json.loads(a.detail).get("to") for a in entries[1:]] == [
        "accepted", "en_route", "arrived", "admitted"]


def test_a_stale_version_is_409_and_writes_nothing(api, seeded, store):
    made = store.create("C-2", actor="user:sup")
    store.change_status(made.id, "accepted", seen_version=1, actor="user:sup")
    before = written(seeded)
    response = api("POST", f"/api/v1/referrals/{made.id}/status",
                   body={"status": "declined", "version": 1, "note": "满床"})
    assert response.status_code == 409
    assert response.json["error"] == "stale_version" and response.json["version"] == 2
    assert response.json["message_zh"]
    assert written(seeded) == before


@pytest.mark.parametrize("body,code,error", [
    ({"status": "arrived", "version": 1}, 422, "illegal_transition"),
    ({"status": "declined", "version": 1}, 422, "reason_required"),
    ({"status": "cancelled", "version": 1, "note": "\u202e"}, 422, "invalid_patient"),
    ({"status": "teleported", "version": 1}, 400, "invalid_request"),
    ({"status": "accepted"}, 400, "invalid_request"),
    ({"status": "accepted", "version": "1"}, 400, "invalid_request"),
    ({"status": "accepted", "version": 1, "by": 3}, 400, "invalid_request"),
])
def test_changes_the_machine_or_the_schema_refuses(api, seeded, store, body, code, error):
    made = store.create("C-2", actor="user:sup")
    before = written(seeded)
    response = api("POST", f"/api/v1/referrals/{made.id}/status", body=body)
    assert response.status_code == code, response.json
    assert response.json["error"] == error
    assert written(seeded) == before


def test_bad_bodies_unknown_things_and_a_second_referral(api, seeded, store):
    assert api("POST", "/api/v1/referrals", raw=b"{not json").status_code == 400
    assert api("POST", "/api/v1/referrals", body=["C-1"]).status_code == 400
    assert api("POST", "/api/v1/referrals", body={"case_id": "C-1;drop"}).status_code == 400
    assert api("POST", "/api/v1/referrals", body={"case_id": "C-404"}).status_code == 404
    bad_age = api("POST", "/api/v1/referrals", body={"case_id": "C-1", "age": 130})
    assert bad_age.status_code == 422 and bad_age.json["field"] == "age"
    future = api("POST", "/api/v1/referrals",
                 body={"case_id": "C-1", "injured_at": "2026-03-10T13:00+08:00"})
    assert future.status_code == 422 and future.json["field"] == "injured_at"
    assert api("POST", "/api/v1/referrals", body={"case_id": "C-1", "injured_at": "soon"}
               ).status_code == 400
    assert written(seeded)[0] == 0
    made = store.create("C-1", actor="user:sup")
    again = api("POST", "/api/v1/referrals", body={"case_id": "C-1"})
    assert again.status_code == 409 and again.json["referral_id"] == made.id
    assert api("GET", "/api/v1/referrals/999999").status_code == 404
    assert api("POST", "/api/v1/referrals/999999/status",
               body={"status": "accepted", "version": 1}).status_code == 404


def test_tokens_roles_and_a_surgeon_token_on_another_surgeons_referral(api, seeded, store):
    mine = store.create("C-1", actor="user:sup")  # surgeon 1 took part
    theirs = store.create("C-2", actor="user:sup")  # surgeon 3's
    assert api("GET", "/api/v1/referrals", token=None).status_code == 401
    assert api("GET", "/api/v1/referrals", token="cal").status_code == 403
    for token in ("admin", "sup", "head"):
        listed = api("GET", "/api/v1/referrals", token=token).json["referrals"]
        assert {r["id"] for r in listed} == {mine.id, theirs.id}
    listed = api("GET", "/api/v1/referrals", token="s1").json["referrals"]
    assert [r["id"] for r in listed] == [mine.id]

    before = written(seeded)
    assert api("GET", f"/api/v1/referrals/{theirs.id}", token="s1").status_code == 403
    refused = api("POST", f"/api/v1/referrals/{theirs.id}/status", token="s1",
                  body={"status": "accepted", "version": 1})
    assert refused.status_code == 403
    assert api("POST", "/api/v1/referrals", token="s1", body={"case_id": "C-2"}
               ).status_code == 403
    assert written(seeded) == before
    denied = [a for a in audits(seeded, "denied") if a.actor == "api:s1"]
    assert len(denied) == 3

    # Surgeon 3's token accepts its own: it becomes the receiving surgeon.
    accepted = api("POST", f"/api/v1/referrals/{theirs.id}/status", token="s3",
                   body={"status": "accepted", "version": 1, "note": "可以接收"})
    assert accepted.status_code == 200
    assert accepted.json["referral"]["surgeon"] == {"id": 3, "name": "张伟"}
    assert accepted.json["referral"]["events"][-1]["actor"] == "api:s3"
    keys = {n for n in _notice_keys(seeded)}
    assert f"referral:{theirs.id}:v2:3" in keys and f"referral:{theirs.id}:v2:desk" in keys


def _notice_keys(engine) -> list[str]:
    from sqlalchemy import select
    with engine.connect() as conn:
        return list(conn.execute(select(NoticeRow.key)).scalars())


def test_list_filters(api, store):
    a = store.create("C-1", actor="user:sup")
    b = store.create("C-2", actor="user:sup")
    store.change_status(b.id, "declined", seen_version=1, actor="user:sup", note="不需要")

    def ids(query: str) -> list[int]:
        response = api("GET", "/api/v1/referrals" + query)
        assert response.status_code == 200, response.json
        return [r["id"] for r in response.json["referrals"]]

    assert ids("") == [a.id, b.id]
    assert ids("?open=1") == [a.id]
    assert ids("?status=declined") == [b.id]
    assert ids("?hospital=1") == [a.id]
    assert ids("?team=replant") == [b.id]
    assert ids("?limit=1") == [a.id]
    for bad in ("?status=nope", "?open=yes", "?hospital=x", "?team=%3Cb%3E", "?limit=0"):
        assert api("GET", "/api/v1/referrals" + bad).status_code == 400, bad


def test_the_openapi_document_describes_every_referral_route(seeded):
    document = openapi_document()
    paths = document["paths"]
    assert set(paths["/api/v1/referrals"]) == {"get", "post"}
    assert set(paths["/api/v1/referrals/{referral_id}"]) == {"get"}
    status = paths["/api/v1/referrals/{referral_id}/status"]["post"]
    assert {"200", "400", "401", "403", "404", "409", "422"} <= set(status["responses"])
    assert status["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "status", "version"]
    assert "Referral" in document["components"]["schemas"]
    assert set(document["components"]["schemas"]["Referral"]["properties"]["status"]["enum"]) == {
        s.value for s in S}
    app = console_app(seeded)
    routes = {rule.rule for rule in app.url_map.iter_rules() if rule.rule.startswith("/api/v1/referrals")}
    as_openapi = {r.replace("<int:referral_id>", "{referral_id}") for r in routes}
    assert as_openapi <= set(paths)
