"""The console's callback list and its JSON API (Flask test client, SQLite and PostgreSQL)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select

from cases.lifecycle import mark_ended, open_case, record_menu, set_team, set_voicemail
from console.api_console import openapi_document
from db.callbacks import CallbackStore
from db.models import AuditRow
from db.repo import CaseRepository, write_roster
from db.tokens import TokenStore
from network.callbacks import CallbackStatus
from oncall.model import Role, Shift
from routing.callers import classify
from tests.support.clock import Clock
from tests.support.console import (SURGEONS, TEAMS, console_app, csrf_token, seed_people,
                                   sign_in)

NOW = datetime(2026, 3, 2, 6, 30, tzinfo=timezone.utc)
T0 = NOW - timedelta(minutes=20)


def voicemail(case_id: str, linkedid: str, caller: str | None, team: str = "facial"):
    case = open_case(case_id, linkedid, classify(caller, {}), T0)
    record_menu(case, T0 + timedelta(seconds=3), "1", team)
    set_team(case, T0 + timedelta(seconds=3), team)
    set_voicemail(case, T0 + timedelta(seconds=60), f"/rec/{case_id}-voicemail.wav")
    mark_ended(case, T0 + timedelta(seconds=80), "system")
    return case


@pytest.fixture
def hub(engine):
    seed_people(engine)
    # Surgeons 1, 2 and 3 were on facial's roster last week (nobody is on call
    # now, so the tasks get no owner): its callbacks are theirs to act on.
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, [
            Shift("facial", surgeon, Role.PRIMARY, T0 - timedelta(days=7 + surgeon),
                  T0 - timedelta(days=6 + surgeon)) for surgeon in (1, 2, 3)])
    repo = CaseRepository(engine, clock=lambda: T0)
    repo.save(voicemail("20260302-141000-aaaaaa", "1.1", "13912345678"))
    repo.save(voicemail("20260302-141100-bbbbbb", "1.2", None))  # anonymous
    clock = Clock(NOW)
    app = console_app(engine, clock=clock)
    store = CallbackStore(engine, clock=clock)
    return app, store, engine


def tasks(store):
    known = store.for_case("20260302-141000-aaaaaa")
    unknown = store.for_case("20260302-141100-bbbbbb")
    return known, unknown


def audit_actions(engine, task_id: int) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [(r.actor, r.action) for r in conn.execute(
            select(AuditRow).where(AuditRow.subject == "callback",
                                   AuditRow.subject_id == str(task_id)).order_by(AuditRow.id))]


def test_the_list_shows_due_overdue_reason_caller_and_unknown_numbers(hub):
    app, store, _ = hub
    client = app.test_client()
    assert client.get("/callbacks/").status_code == 302  # sign in first
    sign_in(client, "sup")
    page = client.get("/callbacks/").get_data(as_text=True)
    known, unknown = tasks(store)
    assert "回拨任务" in page and f'id="callback-{known.id}"' in page
    assert 'class="status-open overdue"' in page and "已超时" in page
    assert "13912345678" in page and "号码未知" in page and "留言" in page
    assert f'id="place-{known.id}"' in page and f'id="place-{unknown.id}"' not in page
    client.get("/lang/en")
    assert "Callbacks" in client.get("/callbacks/").get_data(as_text=True)


def test_one_click_places_through_the_database_only_with_csrf_and_audited(hub):
    app, store, engine = hub
    known, _ = tasks(store)
    client = app.test_client()
    sign_in(client, "doc1")
    refused = client.post(f"/callbacks/{known.id}/place")
    assert refused.status_code == 400 and store.get(known.id).status is CallbackStatus.OPEN
    token = csrf_token(client, "/callbacks/")
    answer = client.post(f"/callbacks/{known.id}/place", data={"csrf_token": token})
    assert answer.status_code == 303 and f"placing={known.id}" in answer.headers["Location"]
    page = client.get(answer.headers["Location"]).get_data(as_text=True)
    assert "正在呼叫医生…" in page
    task = store.get(known.id)
    assert (task.status, task.owner_surgeon_id, task.placed_by, task.attempts) == (
        CallbackStatus.PLACING, 1, "user:doc1", 1)
    again = client.post(f"/callbacks/{known.id}/place", data={"csrf_token": token})
    assert again.status_code == 409 and "该任务正在回拨中" in again.get_data(as_text=True)
    assert audit_actions(engine, known.id) == [("service", "callback_created"),
                                               ("user:doc1", "callback_place")]


def test_staff_without_an_owner_are_told_to_assign_then_a_surgeon_takes_it(hub):
    app, store, _ = hub
    known, unknown = tasks(store)
    client = app.test_client()
    sign_in(client, "sup")
    token = csrf_token(client, "/callbacks/")
    answer = client.post(f"/callbacks/{known.id}/place", data={"csrf_token": token})
    assert answer.status_code == 409 and "请先指派负责医生" in answer.get_data(as_text=True)
    assert client.post(f"/callbacks/{known.id}/assign", data={"csrf_token": token}).status_code == 400
    assert client.post(f"/callbacks/{unknown.id}/place", data={"csrf_token": token}).status_code == 409

    doctor = app.test_client()
    sign_in(doctor, "doc2")
    token = csrf_token(doctor, "/callbacks/")
    assert doctor.post(f"/callbacks/{known.id}/assign", data={"csrf_token": token}).status_code == 303
    assert store.get(known.id).owner_surgeon_id == 2
    mine = doctor.get("/callbacks/?view=mine").get_data(as_text=True)
    assert f'id="callback-{known.id}"' in mine and f'id="callback-{unknown.id}"' not in mine
    assert doctor.post("/callbacks/99999/assign", data={"csrf_token": token}).status_code == 404
    assert doctor.post("/callbacks/x1/assign", data={"csrf_token": token}).status_code == 404


def test_close_with_a_note_or_cancel(hub):
    app, store, engine = hub
    known, unknown = tasks(store)
    client = app.test_client()
    sign_in(client, "sup")
    token = csrf_token(client, "/callbacks/")
    empty = client.post(f"/callbacks/{unknown.id}/close", data={"csrf_token": token, "note": " "})
    assert empty.status_code == 400 and store.get(unknown.id).status is CallbackStatus.OPEN
    done = client.post(f"/callbacks/{unknown.id}/close",
                       data={"csrf_token": token, "note": "留言里有号码，已手机回电"})
    assert done.status_code == 303
    assert (store.get(unknown.id).status, store.get(unknown.id).note) == (
        CallbackStatus.DONE, "留言里有号码，已手机回电")
    client.post(f"/callbacks/{known.id}/close",
                data={"csrf_token": token, "note": "caller called again", "cancelled": "1"})
    assert store.get(known.id).status is CallbackStatus.CANCELLED
    closed = client.get("/callbacks/?view=closed").get_data(as_text=True)
    assert "已取消" in closed and "已完成" in closed
    assert ("user:sup", "callback_close") in audit_actions(engine, unknown.id)
    assert ("user:sup", "callback_cancel") in audit_actions(engine, known.id)


def test_the_case_page_links_callbacks_both_ways(hub):
    app, store, engine = hub
    repo = CaseRepository(engine, clock=lambda: NOW)
    callback = open_case("20260302-143000-cccccc", "2.1", classify("13912345678", {}), NOW,
                         linked_case_id="20260302-141000-aaaaaa")
    mark_ended(callback, NOW + timedelta(seconds=30), "caller")
    repo.save(callback)
    client = app.test_client()
    sign_in(client, "sup")
    first = client.get("/cases/20260302-141000-aaaaaa").get_data(as_text=True)
    assert "回拨记录" in first and "/cases/20260302-143000-cccccc" in first
    back = client.get("/cases/20260302-143000-cccccc").get_data(as_text=True)
    assert 'id="callback-of"' in back and "/cases/20260302-141000-aaaaaa" in back


# --------------------------------------------------------------------------- the JSON API


def bearer(engine, name: str, role: str, surgeon_id: int | None = None) -> dict[str, str]:
    _, secret = TokenStore(engine).create(name, role, surgeon_id=surgeon_id)
    return {"Authorization": f"Bearer {secret}"}


def test_api_lists_places_and_closes(hub):
    app, store, engine = hub
    known, unknown = tasks(store)
    client = app.test_client()
    doctor = bearer(engine, "doc3-phone", "surgeon", 3)
    assert client.get("/api/v1/callbacks").status_code == 401
    assert client.get("/api/v1/callbacks", headers=bearer(engine, "cal", "calendar")).status_code == 403
    listed = client.get("/api/v1/callbacks", headers=doctor).get_json()
    assert [c["id"] for c in listed["callbacks"]] == [known.id, unknown.id]
    first = listed["callbacks"][0]
    # A surgeon's token sees the caller's number masked; the placer dials it for them.
    assert (first["reason"], first["status"], first["overdue"], first["number"],
            first["caller_raw_safe"]) == ("voicemail", "open", True, "139****5678", "139****5678")
    assert listed["callbacks"][1]["number"] is None
    desk = client.get("/api/v1/callbacks", headers=bearer(engine, "desk", "supervisor")).get_json()
    assert (desk["callbacks"][0]["number"], desk["callbacks"][0]["caller_raw_safe"]) == (
        "13912345678", "13912345678")
    assert client.get("/api/v1/callbacks?view=nope", headers=doctor).status_code == 400

    placed = client.post(f"/api/v1/callbacks/{known.id}/place", headers=doctor)
    assert placed.status_code == 202
    body = placed.get_json()["callback"]
    assert (body["status"], body["owner_surgeon_id"], body["placed_by"]) == (
        "placing", 3, "api:doc3-phone")
    twice = client.post(f"/api/v1/callbacks/{known.id}/place", headers=doctor)
    assert (twice.status_code, twice.get_json()["error"]) == (409, "already_placing")
    unknown_number = client.post(f"/api/v1/callbacks/{unknown.id}/place", headers=doctor)
    assert (unknown_number.status_code, unknown_number.get_json()["error"]) == (409, "number_unknown")
    admin = bearer(engine, "ops", "admin")
    assert client.post("/api/v1/callbacks/424242/place", headers=admin).status_code == 404

    bad = client.post(f"/api/v1/callbacks/{unknown.id}/close", headers=admin, json={"note": 3})
    assert bad.status_code == 400
    closed = client.post(f"/api/v1/callbacks/{unknown.id}/close", headers=admin,
                         json={"note": "号码在留言里，已回电", "cancelled": False})
    assert closed.status_code == 200 and closed.get_json()["callback"]["status"] == "done"
    busy = client.post(f"/api/v1/callbacks/{known.id}/close", headers=admin, json={"note": "x"})
    assert (busy.status_code, busy.get_json()["error"]) == (409, "already_placing")
    mine = client.get("/api/v1/callbacks?view=mine", headers=doctor).get_json()["callbacks"]
    assert [c["id"] for c in mine] == [known.id]
    assert audit_actions(engine, known.id)[-1] == ("api:doc3-phone", "callback_place")


def test_the_openapi_document_describes_the_callback_api(hub):
    app, _, _ = hub
    with app.app_context():
        document = openapi_document()
    assert document["paths"]["/api/v1/callbacks"]["get"]["operationId"] == "listCallbacks"
    assert "202" in document["paths"]["/api/v1/callbacks/{task_id}/place"]["post"]["responses"]
    assert "CallbackTask" in document["components"]["schemas"]
    json.dumps(document)  # serialisable


@pytest.mark.parametrize("odd", ["²", "¹", "٣", "１"])
def test_a_task_id_of_unicode_digits_is_404_never_a_500_nor_another_task(hub, odd):
    """Review of issue 6: str.isdigit() is true for '²' (int() then raises: a 500) and for
    '٣' or '１' (int() reads them: the route acts on task 3 or 1 under a name no link has)."""
    app, store, engine = hub
    known, unknown = tasks(store)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash is a 500 here, as in production
    doctor = app.test_client()
    sign_in(doctor, "doc2")
    token = csrf_token(doctor, "/callbacks/")
    for action in ("place", "assign", "close"):
        answer = doctor.post(f"/callbacks/{odd}/{action}", data={"csrf_token": token, "note": "x"})
        assert answer.status_code == 404, (action, answer.status_code)
    admin = bearer(engine, "ops", "admin")
    for action in ("place", "close"):
        answer = doctor.post(f"/api/v1/callbacks/{odd}/{action}", headers=admin,
                             json={"note": "x"})
        assert answer.status_code == 404, (action, answer.status_code)
    assert store.get(known.id) == known and store.get(unknown.id) == unknown


def test_a_number_the_service_will_not_dial_is_said_plainly_in_both_languages():
    from console.api_callbacks import _refused
    from console.callbacks import error_word
    from console.i18n import WORDS
    from network.callbacks import NotDialable

    word = error_word(NotDialable("callback 7: not domestic"))
    assert word == "callbacks.err.not_dialable" and "人工回拨" in WORDS[word]["zh"]
    refusal = _refused(NotDialable("callback 7: not domestic"))
    assert (refusal.status, refusal.code) == (409, "not_dialable")
