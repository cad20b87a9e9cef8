"""Issue 9 part 5: object-level authorisation -- a surgeon changing an id in a URL.

doc1 (surgeon 1, on facial's roster) tries every case, recording, note,
referral, callback and roster route on things that are not theirs, through the
HTML console (signed in, with a valid CSRF token: the refusal must be the
authorisation, not the form) and through /api/v1 with a surgeon token. Each
attack must be refused (403 audited as "denied", or 404), change no row of any
watched table, and not show what it tried to reach.

The routes come from Flask's url_map: `POLICY` must say, for every endpoint,
how it is guarded, and every endpoint guarded per object or per role must have
an attack below -- so a new route without a check fails `test_every_route_*`.
Runs on SQLite and PostgreSQL (fixture `engine`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.security.web_world import (World, audit_actions_since, build_world, clock,
                                      last_audit_id, snapshot)
from tests.support.console import console_app, csrf_token, sign_in

# How each endpoint is guarded.
#   object: per object (whose case/referral/task/trade/leave) -- attacked below
#   role:   by role alone (staff or admin only) -- attacked below with a surgeon
#   list:   a list filtered to what the user may see -- test_lists_*
#   shared: every signed-in role reads it by design (rosters, figures, feeds)
#   public: no user needed (sign-in, language, static files, the API document)
POLICY: dict[str, str] = {
    "home": "public", "static": "public", "auth.sign_in": "public", "auth.sign_out": "public",
    "auth.set_lang": "public", "api_console.openapi": "public",
    "cases.detail": "object", "cases.add_note": "object", "cases.recording": "object",
    "photos.upload": "public", "photos.case_photos": "object", "photos.photo": "object",
    "photos.thumb": "object", "photos.new_link": "object", "photos.revoke_link": "object",
    "photos.phone_view": "object", "photos.phone_photos": "object", "photos.phone_note": "object",
    "photos.send_link": "object",
    "api_console.case": "object",
    "referrals.detail": "object", "referrals.change_status": "object",
    "referrals.edit_patient": "object", "referrals.assign": "role", "referrals.create": "object",
    "api_referrals.referral": "object", "api_referrals.change_status": "object",
    "api_referrals.create": "object",
    "callbacks.place": "object", "callbacks.assign": "object", "callbacks.close": "object",
    "api_callbacks.place": "object", "api_callbacks.close": "object",
    "rosters.take": "object", "rosters.approve": "object", "rosters.decline": "object",
    "rosters.offer": "object", "rosters.swap": "object",
    "api_roster.take_trade": "object", "api_roster.approve_trade": "object",
    "api_roster.decline_trade": "object", "api_roster.new_trade": "object",
    "api_roster.add_leave": "object", "api_roster.remove_leave": "object",
    "api_roster.add_override": "role", "api_roster.remove_override": "role",
    "api_roster.add_rotation": "role", "api_roster.end_rotation": "role",
    "api_roster.import_csv": "role", "api_roster.import_ical": "role",
    "hospitals.add_number": "role", "hospitals.remove_number": "role", "hospitals.export": "role",
    "hospitals.import_form": "role", "hospitals.import_preview": "role",
    "hospitals.import_confirm": "role", "hospitals.blocklist": "role",
    "hospitals.block_add": "role", "hospitals.block_remove": "role",
    "incidents.index": "role", "incidents.switch_on": "role", "incidents.switch_off": "role",
    "api_incidents.switch": "role", "audit.index": "role", "live.index": "role",
    "live.calls_json": "role",
    "calls.index": "list", "calls.export_csv": "list", "calls.export_xlsx": "list",
    "api_console.calls": "list", "referrals.index": "list", "api_referrals.referrals": "list",
    "callbacks.index": "list", "api_callbacks.list_callbacks": "list",
    # Shared by design: the roster is every surgeon's to read (docs/console.md), the
    # figures are the network's, the hospital directory is public knowledge.
    "rosters.index": "shared", "figures.index": "shared", "figures.export": "shared",
    "api_figures.figures": "shared", "hospitals.index": "shared", "hospitals.detail": "shared",
    "api_incidents.incidents": "shared", "api_roster.teams": "shared", "api_roster.now_on_call": "shared",
    "api_roster.team_shifts": "shared", "api_roster.check": "shared", "api_roster.trades": "shared",
    "api_roster.audit": "shared", "api_roster.rotations": "shared",
    "api_roster.team_feed": "shared", "api_roster.surgeon_feed": "shared",
}


@dataclass(frozen=True)
class Attack:
    endpoint: str
    method: str
    path: str  # "{ref}", "{task}", ... filled from the World
    data: dict[str, Any] = field(default_factory=dict)  # form fields, or the JSON body
    api: bool = False  # with doc1's surgeon token instead of doc1's signed-in session
    refused: tuple[int, ...] = (403,)
    secrets: tuple[str, ...] = ()  # text of the object that must not be in the answer


TRADE_FORM = {"team": "replant", "role": "primary", "start": "2026-03-11T12:00",
              "end": "2026-03-12T12:00"}
ATTACKS = (
    # cases, notes, recordings: C-2 is surgeon 3's, C-5 surgeon 9's (with a recording)
    Attack("cases.detail", "GET", "/cases/{other_case}", secrets=("13900000002", "张伟")),
    Attack("cases.add_note", "POST", "/cases/{other_case}/notes", {"text": "mine now"}),
    Attack("cases.add_note", "POST", "/cases/{other_case}/notes",
           {"text": "", "disposition": "advice_only"}),
    Attack("photos.case_photos", "GET", "/cases/{other_case}/photos"),
    Attack("photos.photo", "GET", "/cases/{other_case}/photos/1"),
    Attack("photos.thumb", "GET", "/cases/{other_case}/photos/1/thumb"),
    Attack("photos.new_link", "POST", "/cases/{other_case}/upload-link"),
    Attack("photos.revoke_link", "POST", "/cases/{other_case}/upload-links/1/revoke"),
    Attack("photos.phone_view", "GET", "/cases/{other_case}/phone"),
    Attack("photos.phone_photos", "GET", "/cases/{other_case}/phone/photos.json?after=0"),
    Attack("photos.phone_note", "POST", "/cases/{other_case}/phone/notes",
           {"disposition": "advice_only", "text": "x"}),
    Attack("photos.send_link", "POST", "/cases/{other_case}/send-upload-link"),
    Attack("cases.recording", "GET", "/cases/{other_recording_case}/recording",
           secrets=("RIFF",)),
    Attack("cases.recording", "GET", "/cases/{other_recording_case}/recording?download=1",
           secrets=("RIFF",)),
    Attack("api_console.case", "GET", "/api/v1/cases/{other_case}", api=True,
           secrets=("13900000002", "张伟")),
    Attack("api_console.case", "GET", "/api/v1/cases/{other_recording_case}", api=True,
           secrets=("043188888801", "C-5.wav")),
    # referrals: one on C-2; C-4 (surgeon 2's) has none yet
    Attack("referrals.detail", "GET", "/referrals/{other_referral}", secrets=("13900000002",)),
    Attack("referrals.change_status", "POST", "/referrals/{other_referral}/status",
           {"status": "accepted", "version": "1", "note": "x"}),
    Attack("referrals.edit_patient", "POST", "/referrals/{other_referral}/patient",
           {"age": "40", "sex": "male", "injury": "x", "version": "1"}),
    Attack("referrals.assign", "POST", "/referrals/{other_referral}/assign",
           {"team": "facial", "surgeon": "1", "version": "1"}),
    Attack("referrals.create", "POST", "/referrals/cases/C-4", {"age": "40", "sex": "male",
                                                                "injury": "finger"}),
    Attack("api_referrals.referral", "GET", "/api/v1/referrals/{other_referral}", api=True,
           refused=(403, 404), secrets=("13900000002",)),
    Attack("api_referrals.change_status", "POST", "/api/v1/referrals/{other_referral}/status",
           {"status": "accepted", "version": 1}, api=True, refused=(403, 404)),
    Attack("api_referrals.create", "POST", "/api/v1/referrals", {"case_id": "C-4"}, api=True),
    # callbacks: a replant task nobody owns, one surgeon 2 owns (doc1 is facial's)
    *(Attack(f"callbacks.{action}", "POST", f"/callbacks/{{{task}}}/{action}", {"note": "done"})
      for action in ("place", "assign", "close") for task in ("other_task", "owned_task")),
    *(Attack(f"api_callbacks.{action}", "POST", f"/api/v1/callbacks/{{{task}}}/{action}",
             {"note": "done"}, api=True)
      for action in ("place", "close") for task in ("other_task", "owned_task")),
    # roster: a facial trade waiting for its head (surgeon 9), a swap between
    # surgeons 2 and 3, surgeon 2's leave. (Taking an open give-away is for any
    # surgeon by design -- docs/rosters.md -- so a swap is the thing to steal.)
    Attack("rosters.approve", "POST", "/rosters/trades/{other_trade}/approve",
           refused=(403, 409)),
    Attack("rosters.decline", "POST", "/rosters/trades/{other_trade}/decline", {"note": "no"},
           refused=(403, 409)),
    Attack("rosters.take", "POST", "/rosters/trades/{swap_trade}/take", refused=(403, 409)),
    Attack("rosters.decline", "POST", "/rosters/trades/{swap_trade}/decline", {"note": "no"},
           refused=(403, 409)),
    # offering or swapping a shift that is surgeon 2's, not doc1's
    Attack("rosters.offer", "POST", "/rosters/trades/offer", TRADE_FORM, refused=(403, 409)),
    Attack("rosters.swap", "POST", "/rosters/trades/swap",
           {**TRADE_FORM, "with_surgeon": "3", "their_start": "2026-03-13T12:00",
            "their_end": "2026-03-14T12:00"}, refused=(403, 409)),
    Attack("api_roster.approve_trade", "POST", "/api/v1/roster/trades/{other_trade}/approve",
           {}, api=True, refused=(403, 409)),
    Attack("api_roster.decline_trade", "POST", "/api/v1/roster/trades/{other_trade}/decline",
           {"note": "no"}, api=True, refused=(403, 409)),
    Attack("api_roster.take_trade", "POST", "/api/v1/roster/trades/{swap_trade}/take", {},
           api=True, refused=(403, 409)),
    Attack("api_roster.decline_trade", "POST", "/api/v1/roster/trades/{swap_trade}/decline",
           {"note": "no"}, api=True, refused=(403, 409)),
    Attack("api_roster.new_trade", "POST", "/api/v1/roster/trades",
           {"kind": "offer", "by": 2, "team": "replant", "role": "primary",
            "start": "2026-03-11T04:00:00Z", "end": "2026-03-12T04:00:00Z"}, api=True),
    Attack("api_roster.new_trade", "POST", "/api/v1/roster/trades",
           {"kind": "offer", "team": "replant", "role": "primary",
            "start": "2026-03-11T04:00:00Z", "end": "2026-03-12T04:00:00Z"}, api=True,
           refused=(403, 409)),
    Attack("api_roster.add_leave", "POST", "/api/v1/roster/leave",
           {"surgeon_id": 2, "start": "2026-04-01T00:00:00Z", "end": "2026-04-02T00:00:00Z"},
           api=True),
    Attack("api_roster.remove_leave", "DELETE", "/api/v1/roster/leave/{other_leave}", api=True),
    # role-guarded: admin/supervisor (or department head) only
    Attack("api_roster.add_override", "POST", "/api/v1/roster/overrides",
           {"team": "facial", "role": "primary", "surgeon_id": 1,
            "start": "2026-03-11T04:00:00Z", "end": "2026-03-12T04:00:00Z"}, api=True),
    Attack("api_roster.remove_override", "DELETE", "/api/v1/roster/overrides/1", api=True),
    Attack("api_roster.add_rotation", "POST", "/api/v1/roster/rotations",
           {"team": "facial", "role": "primary", "members": [1], "start_date": "2026-03-11",
            "handoff_times": ["08:00"]}, api=True),
    Attack("api_roster.end_rotation", "POST", "/api/v1/roster/rotations/1/end",
           {"until": "2026-03-11"}, api=True),
    Attack("api_roster.import_csv", "POST", "/api/v1/roster/import/csv", {}, api=True),
    Attack("api_roster.import_ical", "POST", "/api/v1/roster/import/ical", {}, api=True),
    Attack("api_incidents.switch", "POST", "/api/v1/incidents", {"on": True, "reason": "x"},
           api=True),
    Attack("hospitals.add_number", "POST", "/hospitals/1/numbers", {"number": "043100000000"}),
    Attack("hospitals.remove_number", "POST", "/hospitals/1/numbers/remove",
           {"number": "043188888888"}),
    Attack("hospitals.export", "GET", "/hospitals/export.csv", secrets=("043188888888",)),
    Attack("hospitals.import_form", "GET", "/hospitals/import"),
    Attack("hospitals.import_preview", "POST", "/hospitals/import", {}),
    Attack("hospitals.import_confirm", "POST", "/hospitals/import/confirm", {"csv": "x"}),
    Attack("hospitals.blocklist", "GET", "/hospitals/blocklist"),
    Attack("hospitals.block_add", "POST", "/hospitals/blocklist/add",
           {"number": "13912345678", "reason": "x"}),
    Attack("hospitals.block_remove", "POST", "/hospitals/blocklist/remove",
           {"number": "13912345678"}),
    Attack("incidents.index", "GET", "/incidents/"),
    Attack("incidents.switch_on", "POST", "/incidents/on", {"reason": "x"}),
    Attack("incidents.switch_off", "POST", "/incidents/off", {}),
    Attack("audit.index", "GET", "/audit/"),
    Attack("live.index", "GET", "/live/"),
    Attack("live.calls_json", "GET", "/live/calls.json"),
)


@pytest.fixture
def world(engine, tmp_path):
    recordings = tmp_path / "recordings"
    recordings.mkdir()
    world = build_world(engine, recordings)
    app = console_app(engine, clock=clock(), RECORDINGS_DIR=str(recordings))
    return world, app, engine


def _fill(path: str, world: World) -> str:
    return path.format(**{k: v for k, v in vars(world).items() if k != "tokens"})


def _doc1(app):
    client = app.test_client()
    sign_in(client, "doc1")
    return client, csrf_token(client, "/calls/")


def _send(app, world: World, attack: Attack):
    path = _fill(attack.path, world)
    if attack.api:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {world.tokens['surgeon']}"}
        return client.open(path, method=attack.method, headers=headers,
                           json=attack.data if attack.method != "GET" else None)
    client, token = _doc1(app)
    data = {**attack.data, "csrf_token": token} if attack.method == "POST" else None
    return client.open(path, method=attack.method, data=data)


def _name(attack: Attack) -> str:
    return f"{'api' if attack.api else 'html'}-{attack.method}-{attack.path}"


@pytest.mark.parametrize("attack", ATTACKS, ids=_name)
def test_a_surgeon_cannot_reach_what_is_not_theirs(world, attack):
    world, app, engine = world
    before, mark = snapshot(engine), last_audit_id(engine)
    answer = _send(app, world, attack)
    body = answer.get_data()
    assert answer.status_code in attack.refused, (answer.status_code, body[:300])
    assert snapshot(engine) == before, "the attack changed the database"
    for secret in attack.secrets:
        assert secret.encode() not in body, f"{secret} leaked"
    if attack.api:
        assert answer.is_json and answer.get_json()["error"]
    assert b"Traceback" not in body
    actions = audit_actions_since(engine, mark)
    if answer.status_code == 403:
        assert "denied" in actions or attack.api and attack.endpoint.startswith(
            ("api_roster", "api_incidents", "api_referrals")), actions
    # Nothing but refusals, sign-in and the token's use was written.
    assert set(actions) <= {"denied", "sign_in"}, actions


def test_the_same_requests_work_for_the_owner_or_staff(world):
    """The refusals above are about who asks: the legitimate owner gets through."""
    world, app, engine = world
    client, token = _doc1(app)
    assert client.get("/cases/C-1").status_code == 200  # doc1 took part
    assert client.post(f"/callbacks/{world.own_task}/assign",
                       data={"csrf_token": token}).status_code == 303
    staff = app.test_client()
    sign_in(staff, "sup")
    assert staff.get(f"/cases/{world.other_case}").status_code == 200
    played = staff.get(f"/cases/{world.other_recording_case}/recording")
    played.close()  # a file response: close it, or the test leaks the file handle
    assert played.status_code == 200
    shown = staff.get(f"/referrals/{world.other_referral}")  # shown on its case's page
    assert shown.status_code == 303 and shown.headers["Location"].endswith("/cases/C-2#referral")
    doc2 = app.test_client().post(f"/api/v1/callbacks/{world.owned_task}/close",
                                  headers={"Authorization": f"Bearer {world.tokens['surgeon2']}"},
                                  json={"note": "rang them back"})
    assert doc2.status_code == 200, doc2.get_data(as_text=True)


def test_lists_show_a_surgeon_only_their_own(world):
    world, app, engine = world
    client, _ = _doc1(app)
    api = app.test_client()
    bearer = {"Authorization": f"Bearer {world.tokens['surgeon']}"}
    callbacks = client.get("/callbacks/?view=all").get_data(as_text=True)
    assert f'id="callback-{world.own_task}"' in callbacks
    for task in (world.other_task, world.owned_task):
        assert f'id="callback-{task}"' not in callbacks
    listed = {t["id"] for t in api.get("/api/v1/callbacks?view=all", headers=bearer)
              .get_json()["callbacks"]}
    assert world.own_task in listed and not listed & {world.other_task, world.owned_task}
    calls = client.get("/calls/?from=2026-02-01&to=2026-03-11").get_data(as_text=True)
    assert "/cases/C-1" in calls and "/cases/C-2" not in calls and "/cases/C-5" not in calls
    export = client.get("/calls/export.csv?from=2026-02-01&to=2026-03-11").get_data(as_text=True)
    assert "C-1" in export and "C-2" not in export and "C-5" not in export
    api_calls = {c["case_id"] for c in api.get("/api/v1/calls?from=2026-02-01&to=2026-03-11",
                                               headers=bearer).get_json()["calls"]}
    assert "C-1" in api_calls and not api_calls & {"C-2", "C-5"}
    referrals = client.get("/referrals/").get_data(as_text=True)
    assert f"/referrals/{world.other_referral}" not in referrals
    api_refs = api.get("/api/v1/referrals", headers=bearer).get_json()
    assert world.other_referral not in {r["id"] for r in api_refs["referrals"]}


def test_every_route_is_guarded_and_every_guard_is_attacked(world):
    """A route added without a line in POLICY, or an object/role route nobody attacks, fails."""
    _, app, _ = world
    endpoints = {rule.endpoint for rule in app.url_map.iter_rules()}
    unknown = endpoints - POLICY.keys()
    assert not unknown, f"routes with no authorisation policy here: {sorted(unknown)}"
    assert not POLICY.keys() - endpoints, "POLICY names routes that no longer exist"
    attacked = {a.endpoint for a in ATTACKS}
    missing = {e for e, how in POLICY.items() if how in ("object", "role")} - attacked
    assert not missing, f"guarded routes without an attack: {sorted(missing)}"
    # Every rule that takes an id of something is guarded per object (or shared on purpose).
    for rule in app.url_map.iter_rules():
        if rule.arguments - {"filename", "code", "token"}:
            assert POLICY[rule.endpoint] in ("object", "role", "shared"), rule.rule
    # And every API route refuses a request without a token.
    client = app.test_client()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint == "api_console.openapi":
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", "1", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            answer = client.open(path, method=method)
            assert answer.status_code == 401, (method, path, answer.status_code)
