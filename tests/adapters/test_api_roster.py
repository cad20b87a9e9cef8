"""The roster JSON API (/api/v1/roster) against a real migrated database with a
seeded roster, on SQLite and on PostgreSQL (fixture `engine`): every endpoint,
every token role, hostile input, and one request over real HTTP."""
from __future__ import annotations

import io
import json
import logging
import threading
import urllib.error
import urllib.request
from datetime import date, datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from werkzeug.serving import make_server

from console import create_app
from db.models import Base, LeaveRow, OverrideRow, RosterAuditRow, ShiftRow, TradeRow
from db.repo import write_roster
from db.roster_store import RosterStore
from db.tokens import TokenStore
from oncall.model import Rank, Role, Surgeon, Team
from oncall.rotation import Rotation
from tests.support.clock import Clock
from tests.support.db_helpers import count

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
API = "/api/v1/roster"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=SH)
TEAMS = (
    Team("facial", "颌面部创伤", "Facial trauma", requires_approval=True, department_head=9),
    Team("replant", "断肢(指)再植", "Replantation"),
    Team("skin", "皮肤软组织缺损", "Skin & soft tissue"),
)
SURGEONS = tuple(Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in range(1, 10))
# name: (role, bound surgeon)
TOKENS = {
    "admin": ("admin", None),
    "sup": ("supervisor", None),
    "head": ("department_head", 9),
    "s1": ("surgeon", 1),
    "s2": ("surgeon", 2),
    "cal": ("calendar", None),
    "gone": ("supervisor", None),
}


def sh(d: int, h: int = 0, month: int = 3) -> str:
    """An ISO time in Shanghai, as a client would send it."""
    return datetime(2026, month, d, h, tzinfo=SH).isoformat()


@pytest.fixture
def seeded(engine):
    """Facial (approval by surgeon 9): primary daily 1, 2, 3 from Feb 27 (so 1 holds
    Mar 2 08:00 -> Mar 3 08:00, 2 holds Mar 3), backup weekly 4, 5.
    Replant (no approval): primary daily 6, 7. Skin: nobody."""
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, ())
    store = RosterStore(engine, clock=lambda: NOW)
    store.add_rotation(Rotation.daily("facial", Role.PRIMARY, [1, 2, 3], date(2026, 2, 27)),
                       actor="cli:test")
    store.add_rotation(Rotation.weekly("facial", Role.BACKUP, [4, 5], date(2026, 2, 2)),
                       actor="cli:test")
    store.add_rotation(Rotation.daily("replant", Role.PRIMARY, [6, 7], date(2026, 2, 1)),
                       actor="cli:test")
    return engine


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def tokens(seeded, clock) -> dict[str, str]:
    store = TokenStore(seeded, clock=clock)
    made = {name: store.create(name, role, sid)[1] for name, (role, sid) in TOKENS.items()}
    store.revoke("gone")
    return made


@pytest.fixture
def app(seeded, clock, tokens):
    return create_app(engine=seeded, clock=clock, test_config={"TESTING": True, "SECRET_KEY": "test-only"})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def call(client, tokens):
    """call("s1", "post", "/trades", json=...) -> response; the token by its name."""
    def request(who: str | None, method: str, path: str, **kw):
        headers = kw.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {tokens[who]}"
        return getattr(client, method)(API + path, headers=headers, **kw)
    return request


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) >= {"error", "message", "message_zh"}
    assert body["message"] and body["message_zh"]
    if code is not None:
        assert body["error"] == code
    raw = response.get_data(as_text=True)
    assert "Traceback" not in raw and 'File "' not in raw
    return body


# --------------------------------------------------------------------------- reads


def test_teams_lists_each_team_with_its_policy(call):
    r = call("s1", "get", "/teams")
    assert r.status_code == 200 and r.mimetype == "application/json"
    teams = {t["code"]: t for t in r.get_json()["teams"]}
    assert set(teams) == {"facial", "replant", "skin"}
    assert teams["facial"]["name_zh"] == "颌面部创伤"
    assert teams["facial"]["requires_approval"] is True and teams["facial"]["department_head"] == 9
    assert "颌面部创伤" in r.get_data(as_text=True)  # UTF-8, not \u escapes


def test_now_gives_each_teams_chain_in_ring_order(call):
    r = call("head", "get", "/now?team=facial&at=2026-03-02T09:00")  # naive: Shanghai
    body = r.get_json()
    assert r.status_code == 200 and body["at"] == "2026-03-02T09:00:00+08:00"
    (facial,) = body["teams"]
    assert facial["code"] == "facial"
    first, second = facial["chain"]
    assert (first["position"], first["surgeon_id"], first["role"]) == (1, 1, "primary")
    assert first["name"] == "医生1" and first["phone"] == "13800000001"
    assert first["start"] == "2026-03-02T08:00:00+08:00" and first["end"] == "2026-03-03T08:00:00+08:00"
    assert (second["surgeon_id"], second["role"]) == (4, "backup")

    everyone = call("head", "get", "/now").get_json()  # all teams, at the clock's now
    assert everyone["at"] == NOW.isoformat()
    chains = {t["code"]: [m["surgeon_id"] for m in t["chain"]] for t in everyone["teams"]}
    assert chains == {"facial": [3, 5], "replant": [6], "skin": []}
    utc = call("head", "get", "/now?team=replant&at=2026-03-02T00:30:00Z").get_json()
    assert utc["teams"][0]["chain"][0]["surgeon_id"] == 7  # 08:30 in Shanghai: the next day's

    assert_error(call("head", "get", "/now?team=nosuch"), 404, "unknown_team")


def test_shifts_by_window_or_by_day(call):
    r = call("s2", "get", "/teams/facial/shifts?start=2026-03-02T08:00&end=2026-03-03T08:00")
    body = r.get_json()
    assert r.status_code == 200 and body["team"] == "facial"
    primary = [s for s in body["shifts"] if s["role"] == "primary"]
    assert [(s["surgeon_id"], s["name"], s["source"]) for s in primary] == [(1, "医生1", "rotation")]

    week = call("s2", "get", "/teams/facial/shifts?day=2026-03-02&days=7").get_json()
    assert week["start"] == "2026-03-02T00:00:00+08:00" and week["end"] == "2026-03-09T00:00:00+08:00"
    assert [s["surgeon_id"] for s in week["shifts"] if s["role"] == "primary"][:4] == [3, 1, 2, 3]
    today = call("s2", "get", "/teams/facial/shifts").get_json()  # default: today, 7 days
    assert today["start"] == "2026-03-01T00:00:00+08:00"

    assert_error(call("s2", "get", "/teams/nosuch/shifts?day=2026-03-02"), 404)
    assert_error(call("s2", "get", "/teams/nosuch/shifts?start=2026-03-02T08:00&end=2026-03-03"), 404)
    assert_error(call("s2", "get", "/teams/facial/shifts?start=2026-03-02T08:00"), 400)
    assert_error(call("s2", "get", "/teams/facial/shifts?start=2026-03-03&end=2026-03-02"), 400)
    assert_error(call("s2", "get", "/teams/facial/shifts?start=2026-01-01&end=2027-06-01"), 400)


def test_check_reports_findings_in_chinese_and_english(call):
    body = call("sup", "get", "/check?days=2").get_json()
    gaps = [f for f in body["findings"] if f["kind"] == "gap"]
    assert [g["team"] for g in gaps] == ["skin"]
    assert "nobody on call" in gaps[0]["message"] and "无一线值班" in gaps[0]["message_zh"]
    assert gaps[0]["start"] == NOW.isoformat()
    only = call("sup", "get", "/check?days=2&team=replant").get_json()["findings"]
    assert {f["team"] for f in only} == {"replant"}
    assert_error(call("sup", "get", "/check?team=nosuch"), 404)
    assert_error(call("sup", "get", "/check?days=0"), 400)


def test_rotations_are_listed(call):
    rotations = call("s1", "get", "/rotations?team=facial").get_json()["rotations"]
    assert [(r["role"], r["kind"], r["members"]) for r in rotations] == [
        ("primary", "daily", [1, 2, 3]), ("backup", "weekly", [4, 5])]


# --------------------------------------------------------------------------- trades


def test_a_swap_requested_taken_and_approved_over_the_api_changes_who_is_on_call(call):
    def first(at: str) -> int:
        return call("s1", "get", f"/now?team=facial&at={at}").get_json()["teams"][0]["chain"][0]["surgeon_id"]

    assert (first("2026-03-02T09:00"), first("2026-03-03T09:00")) == (1, 2)
    r = call("s1", "post", "/trades", json={
        "kind": "swap", "team": "facial", "role": "primary", "start": sh(2, 8), "end": sh(3, 8),
        "with_surgeon": 2, "their_start": sh(3, 8), "their_end": sh(4, 8), "note": "家中有事"})
    assert r.status_code == 201, r.get_json()
    trade = r.get_json()["trade"]
    assert (trade["status"], trade["requester"], trade["counterpart"]) == ("requested", 1, 2)
    assert trade["start"] == "2026-03-02T08:00:00+08:00" and trade["note"] == "家中有事"
    tid = trade["id"]

    r = call("s2", "post", f"/trades/{tid}/take")  # no body: acts as the token's surgeon
    assert r.status_code == 200 and r.get_json()["trade"]["status"] == "taken"
    assert first("2026-03-02T09:00") == 1  # waits for the department head

    r = call("head", "post", f"/trades/{tid}/approve", json={"by": 9})
    assert r.status_code == 200, r.get_json()
    approved = r.get_json()["trade"]
    assert approved["status"] == "approved" and approved["decided_by"] == 9
    assert len(approved["overrides"]) == 2
    assert (first("2026-03-02T09:00"), first("2026-03-03T09:00")) == (2, 1)

    listed = call("s1", "get", "/trades?status=approved").get_json()["trades"]
    assert [t["id"] for t in listed] == [tid]
    assert call("s1", "get", "/trades?status=requested,taken").get_json()["trades"] == []
    entries = call("sup", "get", f"/audit?subject=trade&subject_id={tid}").get_json()["entries"]
    assert [(e["action"], e["actor"], e["surgeon_id"]) for e in entries] == [
        ("approve", "api:head", 9), ("take", "api:s2", 2), ("request_swap", "api:s1", 1)]
    assert entries[0]["before"]["status"] == "taken" and entries[0]["after"]["status"] == "approved"

    # Approving twice: the trade is no longer taken.
    assert_error(call("head", "post", f"/trades/{tid}/approve"), 409, "invalid_transition")


def test_a_give_away_in_a_team_without_approval_is_approved_when_taken(call):
    r = call("sup", "post", "/trades", json={
        "kind": "offer", "by": 6, "team": "replant", "start": sh(3, 8), "end": sh(4, 8)})
    assert r.status_code == 201
    tid = r.get_json()["trade"]["id"]
    r = call("admin", "post", f"/trades/{tid}/take", json={"by": 8})
    assert r.get_json()["trade"]["status"] == "approved" and r.get_json()["trade"]["taker"] == 8
    chain = call("sup", "get", "/now?team=replant&at=2026-03-03T12:00").get_json()["teams"][0]["chain"]
    assert chain[0]["surgeon_id"] == 8
    # The same time again: no longer held by surgeon 6.
    assert_error(call("sup", "post", "/trades", json={
        "kind": "offer", "by": 6, "team": "replant", "start": sh(3, 8), "end": sh(4, 8)}),
        409, "not_held")


def test_the_surgeon_asked_may_decline_a_swap(call):
    tid = call("s1", "post", "/trades", json={
        "kind": "swap", "team": "facial", "start": sh(2, 8), "end": sh(3, 8), "with_surgeon": 2,
        "their_start": sh(3, 8), "their_end": sh(4, 8)}).get_json()["trade"]["id"]
    r = call("s2", "post", f"/trades/{tid}/decline", json={"note": "不方便"})
    assert r.status_code == 200
    assert r.get_json()["trade"]["status"] == "declined" and r.get_json()["trade"]["note"] == "不方便"


def test_trade_refusals_map_to_http_statuses(call):
    assert_error(call("s1", "post", "/trades/12345/take"), 404)
    # Surgeon 1 does not hold Mar 3.
    assert_error(call("s1", "post", "/trades", json={
        "kind": "offer", "team": "facial", "start": sh(3, 8), "end": sh(4, 8)}), 409, "not_held")
    # Time already over.
    assert_error(call("s1", "post", "/trades", json={
        "kind": "offer", "team": "facial", "start": sh(1, 8, 2), "end": sh(2, 8, 2)}), 409, "expired")
    assert_error(call("s1", "post", "/trades", json={
        "kind": "offer", "team": "nosuch", "start": sh(2, 8), "end": sh(3, 8)}), 404, "unknown_team")
    tid = call("s1", "post", "/trades", json={
        "kind": "offer", "team": "facial", "start": sh(2, 8), "end": sh(3, 8)}).get_json()["trade"]["id"]
    assert_error(call("s1", "post", f"/trades/{tid}/take"), 403, "own_trade")
    call("s2", "post", f"/trades/{tid}/take")
    # A supervisor acting for someone who is not the department head: the domain says no.
    assert_error(call("sup", "post", f"/trades/{tid}/approve", json={"by": 5}), 403,
                 "not_department_head")
    assert call("sup", "post", f"/trades/{tid}/approve", json={"by": 9}).status_code == 200


# --------------------------------------------------------------------------- roles


@pytest.mark.parametrize("who, method, path, body, status", [
    (None, "get", "/teams", None, 401),
    ("gone", "get", "/teams", None, 401),
    ("cal", "get", "/teams", None, 403),
    ("cal", "get", "/now", None, 403),
    ("cal", "get", "/audit", None, 403),
    ("cal", "post", "/trades/1/take", None, 403),
    ("cal", "get", "/teams/facial.ics", None, 200),
    ("s1", "get", "/teams/facial.ics", None, 200),
    ("s1", "get", "/audit", None, 200),
    ("head", "get", "/trades", None, 200),
    # A surgeon acts only as themselves.
    ("s1", "post", "/trades", {"kind": "offer", "by": 2, "team": "facial", "start": sh(3, 8),
                               "end": sh(4, 8)}, 403),
    ("s1", "post", "/trades/1/take", {"by": 2}, 403),
    ("s1", "post", "/trades/1/approve", {}, 403),
    ("s1", "post", "/overrides", {}, 403),
    ("s1", "post", "/rotations", {}, 403),
    ("s1", "post", "/rotations/1/end", {"until": "2026-04-01"}, 403),
    ("s1", "post", "/import/csv", None, 403),
    ("s1", "post", "/leave", {"surgeon_id": 2, "start": sh(5), "end": sh(6)}, 403),
    ("head", "post", "/trades", {"kind": "offer", "team": "facial", "start": sh(3, 8),
                                 "end": sh(4, 8)}, 403),
    ("head", "post", "/trades/1/take", {}, 403),
    ("head", "post", "/trades/1/approve", {"by": 8}, 403),
    ("head", "post", "/leave", {"start": sh(5), "end": sh(6)}, 403),
    ("head", "delete", "/overrides/1", None, 403),
    # Admins must say whom they act for.
    ("sup", "post", "/trades", {"kind": "offer", "team": "facial", "start": sh(2, 8),
                                "end": sh(3, 8)}, 400),
    ("admin", "post", "/leave", {"start": sh(5), "end": sh(6)}, 400),
])
def test_who_may_do_what(call, who, method, path, body, status):
    kwargs = {"json": body} if body is not None else {}
    r = call(who, method, path, **kwargs)
    if status == 200:
        assert r.status_code == 200, r.get_data(as_text=True)
        return
    error = assert_error(r, status)
    if status == 401:
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert error["error"] == "unauthorized"


def test_tokens_are_refused_in_every_wrong_form(client, tokens, call):
    good = tokens["sup"]
    for header in (f"Basic {good}", "Bearer", "Bearer ", f"Bearer {good}x", f"Bearer {good[:-1]}",
                   "Bearer hl_" + "A" * 5000, f"bearer  {good} extra"):
        r = client.get(f"{API}/teams", headers={"Authorization": header})
        assert_error(r, 401)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # `?token=` is for the calendar feeds only.
    assert_error(client.get(f"{API}/teams?token={good}"), 401)
    assert client.get(f"{API}/teams", headers={"Authorization": f"bearer {good}"}).status_code == 200
    assert_error(client.get(f"{API}/teams/facial.ics?token={tokens['gone']}"), 401)
    assert_error(client.get(f"{API}/teams/facial.ics?token=hl_guess"), 401)


def test_a_surgeon_manages_only_their_own_leave(call, engine):
    r = call("s1", "post", "/leave", json={"start": sh(10), "end": sh(12), "note": "会议"})
    assert r.status_code == 201, r.get_json()
    mine = r.get_json()["id"]
    assert r.get_json()["leave"] == {"surgeon_id": 1, "start": sh(10), "end": sh(12), "note": "会议"}
    theirs = call("sup", "post", "/leave", json={"surgeon_id": 2, "start": sh(10), "end": sh(12)}
                  ).get_json()["id"]
    assert_error(call("s1", "delete", f"/leave/{theirs}"), 403)
    assert_error(call("s1", "delete", "/leave/99999"), 403)  # unknown looks the same
    assert count(engine, LeaveRow) == 2
    r = call("s1", "delete", f"/leave/{mine}")
    assert r.status_code == 200 and r.get_json()["removed"]["surgeon_id"] == 1
    assert_error(call("sup", "delete", f"/leave/{mine}"), 404)
    assert call("sup", "delete", f"/leave/{theirs}").status_code == 200
    with engine.connect() as conn:
        actors = conn.execute(select(RosterAuditRow.actor, RosterAuditRow.surgeon_id)
                              .where(RosterAuditRow.subject == "leave")
                              .order_by(RosterAuditRow.id)).all()
    assert [tuple(a) for a in actors] == [("api:s1", 1), ("api:sup", None), ("api:s1", 1),
                                          ("api:sup", None)]


# --------------------------------------------------------------------------- overrides, rotations


def test_overrides_are_added_and_removed_by_supervisors(call, engine):
    r = call("sup", "post", "/overrides", json={
        "team": "facial", "role": "一线", "surgeon_id": 8, "start": sh(2, 8), "end": sh(2, 20),
        "replaces": 1, "note": "顶班"})
    assert r.status_code == 201, r.get_json()
    oid = r.get_json()["id"]
    chain = call("sup", "get", "/now?team=facial&at=2026-03-02T10:00").get_json()["teams"][0]["chain"]
    assert chain[0]["surgeon_id"] == 8
    r = call("sup", "delete", f"/overrides/{oid}")
    assert r.status_code == 200 and r.get_json()["removed"]["replaces"] == 1
    chain = call("sup", "get", "/now?team=facial&at=2026-03-02T10:00").get_json()["teams"][0]["chain"]
    assert chain[0]["surgeon_id"] == 1
    assert_error(call("sup", "delete", f"/overrides/{oid}"), 404)
    assert_error(call("sup", "post", "/overrides", json={
        "team": "facial", "surgeon_id": 99, "start": sh(2, 8), "end": sh(2, 20)}), 404)
    assert_error(call("sup", "post", "/overrides", json={
        "team": "facial", "surgeon_id": 8, "start": sh(2, 20), "end": sh(2, 8)}), 400)

    # A trade's cover stays as the trade's record.
    tid = call("s1", "post", "/trades", json={
        "kind": "offer", "team": "facial", "start": sh(2, 8), "end": sh(3, 8)}).get_json()["trade"]["id"]
    call("s2", "post", f"/trades/{tid}/take")
    call("head", "post", f"/trades/{tid}/approve")
    with engine.connect() as conn:
        cover = conn.execute(select(OverrideRow.id).where(OverrideRow.trade_id == tid)).scalar_one()
    assert_error(call("sup", "delete", f"/overrides/{cover}"), 409, "part_of_trade")


def test_rotations_are_added_and_ended(call):
    r = call("admin", "post", "/rotations", json={
        "team": "skin", "role": "primary", "members": [7, 8], "start": "2026-03-01",
        "handoff_times": ["08:00", "20:00"], "name": "日夜班"})
    assert r.status_code == 201, r.get_json()
    rotation = r.get_json()["rotation"]
    assert rotation["kind"] == "custom" and rotation["handoff_times"] == ["08:00", "20:00"]
    rid = r.get_json()["id"]
    chain = call("sup", "get", "/now?team=skin&at=2026-03-01T21:00").get_json()["teams"][0]["chain"]
    assert [m["surgeon_id"] for m in chain] == [8]
    r = call("admin", "post", f"/rotations/{rid}/end", json={"until": "2026-03-05"})
    assert r.status_code == 200 and r.get_json()["rotation"]["until"] == "2026-03-05"
    chain = call("sup", "get", "/now?team=skin&at=2026-03-06T09:00").get_json()["teams"][0]["chain"]
    assert chain == []
    assert_error(call("admin", "post", f"/rotations/{rid}/end", json={"until": "2026-02-01"}), 400)
    assert_error(call("admin", "post", "/rotations/4242/end", json={"until": "2026-05-01"}), 404)
    assert_error(call("admin", "post", "/rotations", json={
        "team": "skin", "members": [7, 999], "start": "2026-03-01"}), 404)
    assert_error(call("admin", "post", "/rotations", json={
        "team": "skin", "members": [], "start": "2026-03-01"}), 400)
    assert_error(call("admin", "post", "/rotations", json={
        "team": "skin", "members": [7], "start": "2026-03-01", "handoff_times": ["20:00", "08:00"]}), 400)


# --------------------------------------------------------------------------- imports


BAD_CSV = ("日期,专业组,岗位,医生,开始,结束,备注\n"
           "2026-04-01,skin,一线,医生8,08:00,08:00,\n"
           "2026-04-02,skin,一线,无名氏,08:00,08:00,\n").encode("utf-8")
GOOD_CSV = BAD_CSV.replace("无名氏".encode(), "医生7".encode())


def test_a_csv_with_a_bad_line_is_refused_whole_then_a_good_one_is_written(call, engine):
    r = call("sup", "post", "/import/csv?month=2026-04", data=BAD_CSV,
             headers={"Content-Type": "text/csv"})
    body = assert_error(r, 422, "import_refused")
    (problem,) = [p for p in body["problems"] if p["severity"] == "error"]
    assert problem["line"] == 3 and problem["column"] and problem["message_zh"]
    assert set(problem) == {"line", "column", "message", "message_zh", "severity"}
    assert count(engine, ShiftRow) == 0

    # Dry run of the good file: a summary, nothing written.
    r = call("sup", "post", "/import/csv?month=2026-04&dry_run=1", data=GOOD_CSV)
    assert r.status_code == 200
    summary = r.get_json()
    assert summary["dry_run"] is True and summary["written"] is False and summary["shifts"] == 2
    assert [s["surgeon_id"] for s in summary["preview"]] == [8, 7]
    assert summary["teams"][0]["team"] == "skin"
    assert count(engine, ShiftRow) == 0

    # The good file, as a multipart upload with its parameters as form fields.
    r = call("sup", "post", "/import/csv", data={
        "file": (io.BytesIO(GOOD_CSV), "四月.csv"), "month": "2026-04"},
        content_type="multipart/form-data")
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["written"] is True and r.get_json()["shifts_written"] == 2
    assert count(engine, ShiftRow) == 2
    shifts = call("s1", "get", "/teams/skin/shifts?day=2026-04-01&days=2").get_json()["shifts"]
    assert [(s["surgeon_id"], s["source"], s["start"]) for s in shifts] == [
        (8, "shift", "2026-04-01T08:00:00+08:00"), (7, "shift", "2026-04-02T08:00:00+08:00")]
    entry = call("sup", "get", "/audit?subject=shifts&limit=1").get_json()["entries"][0]
    assert entry["actor"] == "api:sup" and entry["after"]["source"] == "api:四月.csv"


def test_an_ical_file_is_imported(call, engine):
    ics = "\r\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//test//EN",
        "BEGIN:VEVENT", "UID:a@test", "DTSTAMP:20260301T000000Z",
        "DTSTART;TZID=Asia/Shanghai:20260410T080000", "DTEND;TZID=Asia/Shanghai:20260411T080000",
        "SUMMARY:一线 医生5", "END:VEVENT", "END:VCALENDAR", ""]).encode()
    r = call("sup", "post", "/import/ical?team=skin&dry_run=1", data=ics)
    assert r.status_code == 200 and r.get_json()["shifts"] == 1
    assert count(engine, ShiftRow) == 0
    r = call("sup", "post", "/import/ical?team=skin&month=2026-04", data=ics)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["shifts_written"] == 1
    shifts = call("s1", "get", "/teams/skin/shifts?day=2026-04-10&days=1").get_json()["shifts"]
    assert [(s["surgeon_id"], s["role"]) for s in shifts] == [(5, "primary")]
    body = assert_error(call("sup", "post", "/import/ical?team=skin", data=b"not a calendar"), 422)
    assert body["problems"]


def test_import_parameters_and_sizes_are_checked(call, app, engine):
    for query in ("month=2026-13", "month=april", "handoff=25:00", "handoff=8", "dry_run=maybe",
                  "team=" + "x" * 40, "team=a%0Ab"):
        assert_error(call("sup", "post", f"/import/csv?{query}", data=GOOD_CSV), 400)
    assert_error(call("sup", "post", "/import/ical?role=chief", data=b"x"), 400)
    assert_error(call("sup", "post", "/import/csv", data=b""), 400)
    assert_error(call("sup", "post", "/import/csv", data={"other": "x"},
                      content_type="multipart/form-data"), 400)
    huge = GOOD_CSV + b"#" * app.config["MAX_CONTENT_LENGTH"]
    assert_error(call("sup", "post", "/import/csv?month=2026-04", data=huge), 413)
    # A multipart body built by hand: the test client spools a big one to a
    # temporary file it never closes (a ResourceWarning, not ours).
    multipart = (b"--b0undary\r\nContent-Disposition: form-data; name=\"file\"; "
                 b"filename=\"big.csv\"\r\nContent-Type: text/csv\r\n\r\n" + huge
                 + b"\r\n--b0undary--\r\n")
    assert_error(call("sup", "post", "/import/csv", data=multipart,
                      content_type="multipart/form-data; boundary=b0undary"), 413)
    assert count(engine, ShiftRow) == 0


# --------------------------------------------------------------------------- calendar feeds


def test_feeds_are_served_to_a_token_in_the_url(client, tokens, call):
    r = client.get(f"{API}/teams/facial.ics?token={tokens['cal']}&start=2026-03-01T00:00"
                   f"&end=2026-03-08T00:00&lang=en")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "text/calendar; charset=utf-8"
    cal = Calendar.from_ical(r.data)
    events = [c for c in cal.walk("VEVENT")]
    assert events and {str(e["X-HOTLINE-TEAM"]) for e in events} == {"facial"}

    # A write-capable token must not travel in a URL (logs, proxies, backups).
    assert_error(client.get(f"{API}/surgeons/1.ics?token={tokens['s1']}"), 403)
    r = client.get(f"{API}/surgeons/1.ics?token={tokens['cal']}")
    assert r.status_code == 200
    surgeon_events = Calendar.from_ical(r.data).walk("VEVENT")
    assert {str(e["X-HOTLINE-SURGEON"]) for e in surgeon_events} == {"1"}
    # The header works too, and errors stay JSON.
    assert call("cal", "get", "/teams/replant.ics").status_code == 200
    assert_error(call("cal", "get", "/teams/nosuch.ics"), 404)
    assert_error(call("cal", "get", "/surgeons/424242.ics"), 404)
    assert_error(call("cal", "get", "/teams/facial.ics?lang=fr"), 400)
    assert_error(call("cal", "get", "/teams/facial.ics?start=2026-01-01&end=2027-12-01"), 400)


# --------------------------------------------------------------------------- hostile input


OFFER = {"kind": "offer", "team": "facial", "start": sh(2, 8), "end": sh(3, 8)}


@pytest.mark.parametrize("method, path, payload", [
    ("get", "/now?at=notatime", None),
    ("get", "/now?at=" + "9" * 5000, None),
    ("get", "/now?at=0001-01-01T00:00", None),
    ("get", "/now?at=9999-12-31T23:59-23:59", None),
    ("get", "/now?at=2026-03-01T08:00%0AX-Evil:1", None),
    ("get", "/now?team=%3Cscript%3E", None),
    ("get", "/teams/facial/shifts?days=-1", None),
    ("get", "/teams/facial/shifts?days=99999999999999999999", None),
    ("get", "/teams/facial/shifts?day=2026-02-30", None),
    ("get", "/teams/fa%20cial/shifts", None),
    ("get", "/trades?status=open", None),
    ("get", "/trades?limit=0", None),
    ("get", "/audit?subject=everything", None),
    ("get", "/audit?limit=100000", None),
    ("get", "/surgeons/99999999999999999999.ics", None),
    ("get", "/surgeons/-1.ics", None),
    ("get", "/surgeons/1e3.ics", None),
    ("post", "/trades/abc/take", None),
    ("post", "/trades/0/take", None),
    ("post", "/trades/99999999999999/take", None),
    ("post", "/trades/-5/decline", None),
    ("delete", "/overrides/1e3", None),
    ("delete", "/leave/%00", None),
    ("post", "/trades", b"not json"),
    ("post", "/trades", b"\xff\xfe\x00garbage"),
    ("post", "/trades", b"[1, 2]"),
    ("post", "/trades", b'"offer"'),
    ("post", "/trades", b"null"),
    ("post", "/trades", b""),
    ("post", "/trades", b"[" * 100_000),
    ("post", "/trades", b'{"kind": "offer", "team": "facial", "start": NaN}'),
    ("post", "/trades", {**OFFER, "kind": "trade"}),
    ("post", "/trades", {**OFFER, "kind": ["offer"]}),
    ("post", "/trades", {**OFFER, "by": "1"}),
    ("post", "/trades", {**OFFER, "by": True}),
    ("post", "/trades", {**OFFER, "by": 1.0}),
    ("post", "/trades", {**OFFER, "by": 2**63}),
    ("post", "/trades", {**OFFER, "by": -1}),
    ("post", "/trades", {**OFFER, "start": 1772323200}),
    ("post", "/trades", {**OFFER, "start": "yesterday"}),
    ("post", "/trades", {**OFFER, "end": "2026-03-03T08:00" + " " * 100}),
    ("post", "/trades", {**OFFER, "role": "chief"}),
    ("post", "/trades", {**OFFER, "role": {"$ne": 1}}),
    ("post", "/trades", {**OFFER, "team": "x" * 1000}),
    ("post", "/trades", {**OFFER, "team": None}),
    ("post", "/trades", {**OFFER, "note": "长" * 10_000}),
    ("post", "/trades", {**OFFER, "note": 5}),
    ("post", "/trades", {**OFFER, "surgeon": 1}),
    ("post", "/trades", {**OFFER, "with_surgeon": 2}),
    ("post", "/trades", {**OFFER, "kind": "swap", "with_surgeon": 2}),
    ("post", "/trades", {**OFFER, "start": sh(3, 8), "end": sh(2, 8)}),
    ("post", "/leave", {"start": sh(5), "end": "2026-03-06T00:00+99:00"}),
    ("post", "/leave", {"start": sh(5), "end": sh(6), "surgeon_id": [1]}),
    ("post", "/trades/1/decline", {"note": ["x"]}),
    ("post", "/trades/1/take", {"by": 1, "note": "take has no note"}),
])
def test_hostile_input_gets_a_400_json_answer(call, engine, method, path, payload):
    before = count(engine, TradeRow), count(engine, LeaveRow), count(engine, RosterAuditRow)
    who = "sup" if path.startswith("/overrides") else "s1"
    if isinstance(payload, bytes):
        r = call(who, method, path, data=payload, headers={"Content-Type": "application/json"})
    elif payload is not None:
        r = call(who, method, path, json=payload)
    else:
        r = call(who, method, path)
    body = assert_error(r, 400, "invalid_request")
    assert len(r.data) < 2000  # nothing echoed unbounded
    assert "\n" not in body["message"] and "\n" not in body["message_zh"]  # one log-safe line
    assert (count(engine, TradeRow), count(engine, LeaveRow), count(engine, RosterAuditRow)) == before


def test_an_unexpected_error_is_a_generic_500_and_is_logged(app, call, monkeypatch, caplog):
    desk = app.extensions["hotline"].desk

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals: postgresql://user:pw@db")

    monkeypatch.setattr(desk, "chains", broken)
    with caplog.at_level(logging.ERROR, logger="console"):
        r = call("s1", "get", "/now")
    body = assert_error(r, 500, "internal_error")
    assert "secret" not in r.get_data(as_text=True) and "RuntimeError" not in body["message"]
    assert any("unhandled error on GET" in rec.getMessage() and rec.exc_info for rec in caplog.records)


def test_a_database_outage_is_a_503_worth_retrying(app, call, monkeypatch):
    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    monkeypatch.setattr(app.extensions["hotline"].desk, "chains", down)
    r = call("s1", "get", "/now")
    assert_error(r, 503, "database_unavailable")
    assert r.headers["Retry-After"] == "5" and "SELECT" not in r.get_data(as_text=True)


def test_no_plain_token_is_stored_anywhere(call, engine, tokens):
    call("s1", "post", "/leave", json={"start": sh(10), "end": sh(12)})
    call("sup", "get", "/now")
    with engine.connect() as conn:
        stored = " ".join(str(value) for table in Base.metadata.sorted_tables
                          for row in conn.execute(table.select()) for value in row)
    assert "api:s1" in stored  # the audit names the token...
    for token in tokens.values():  # ...but no token, nor its random part, is anywhere
        assert token not in stored and token[3:] not in stored


def test_unknown_paths_and_methods_answer_json(call):
    assert_error(call("s1", "get", "/nothing-here"), 404)
    r = call("s1", "put", "/teams")
    assert_error(r, 405)
    assert "GET" in r.headers["Allow"]


# --------------------------------------------------------------------------- real HTTP


def test_the_api_over_a_real_http_server(app, tokens):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="api-http", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}{API}"
    try:
        with urllib.request.urlopen(f"{base}/teams/facial.ics?token={tokens['cal']}", timeout=10) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/calendar; charset=utf-8"
            assert Calendar.from_ical(resp.read()).walk("VEVENT")
        request = urllib.request.Request(f"{base}/now?team=facial&at=2026-03-02T09:00",
                                         headers={"Authorization": f"Bearer {tokens['s1']}"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            body = json.loads(resp.read().decode("utf-8"))
        assert body["teams"][0]["chain"][0]["name"] == "医生1"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{base}/now", timeout=10)
        with refused.value as error:
            assert error.code == 401 and error.headers["WWW-Authenticate"].startswith("Bearer")
            assert json.loads(error.read())["error"] == "unauthorized"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert not thread.is_alive()
