"""The major-incident page, the banner on every page and the JSON API (Flask client), on
SQLite and PostgreSQL: who may switch, CSRF, refusals, audit, and the alerts written."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db.models import AuditRow, NoticeRow
from db.tokens import TokenStore
from tests.support.console import console_app, csrf_token, seed_people, sign_in


@pytest.fixture
def app(engine):
    seed_people(engine)
    return console_app(engine)


@pytest.fixture
def client(app):
    return app.test_client()


def audit(engine):
    with engine.connect() as conn:
        return [(r.actor, r.action, json.loads(r.detail) if r.detail else None) for r in
                conn.execute(select(AuditRow).where(AuditRow.subject == "incident").order_by(AuditRow.id))]


def alerts(engine):
    with engine.connect() as conn:
        rows = conn.execute(select(NoticeRow).where(NoticeRow.kind == "major_incident"))
        return sorted(((r.key.split(":")[2], r.surgeon_id) for r in rows), key=str)


def switch(client, action: str, **form):
    token = csrf_token(client, "/incidents/")
    return client.post(f"/incidents/{action}", data={"csrf_token": token, **form})


def test_a_supervisor_switches_on_and_every_page_shows_the_red_banner(client, engine):
    sign_in(client, "sup")
    assert "incident-banner" not in client.get("/calls/").get_data(as_text=True)
    response = switch(client, "on", team="facial", note="高速公路连环车祸")
    assert response.status_code == 302 and "done=on" in response.headers["Location"]
    for path in ("/calls/", "/incidents/", "/rosters/"):
        page = client.get(path).get_data(as_text=True)
        assert 'id="incident-banner"' in page and "重大突发事件模式已启动" in page and "facial" in page
    page = client.get("/incidents/").get_data(as_text=True)
    assert "高速公路连环车祸" in page and "user:sup" in page
    assert audit(engine) == [("user:sup", "incident_on", {"team": "facial", "note": "高速公路连环车祸"})]
    # the facial department head (surgeon 9) and the duty desk are alerted
    assert alerts(engine) == [("on", 9), ("on", None)]


def test_switch_off_from_the_page_and_the_banner_goes(client, engine):
    sign_in(client, "admin")
    switch(client, "on", team="all", note="")
    assert "全部专业组" in client.get("/calls/").get_data(as_text=True)
    response = switch(client, "off", team="all")
    assert response.status_code == 302
    assert "incident-banner" not in client.get("/calls/").get_data(as_text=True)
    assert [a[1] for a in audit(engine)] == ["incident_on", "incident_off"]


def test_the_audit_page_filters_by_the_switch(client, engine):
    sign_in(client, "admin")
    switch(client, "on", team="facial", note="")
    switch(client, "off", team="facial")
    page = client.get("/audit/?action=incident_off").get_data(as_text=True)
    assert '<option value="incident_off" selected' in page
    assert "<td>incident_off</td>" in page and "<td>incident_on</td>" not in page


def test_a_refused_switch_says_why_and_writes_nothing(client, engine):
    sign_in(client, "sup")
    switch(client, "on", team="all")
    response = switch(client, "on", team="facial")
    assert response.status_code == 409
    assert "covered by the all-teams incident" in response.get_data(as_text=True)
    assert switch(client, "off", team="replant").status_code == 409
    assert switch(client, "on", team="nope<script>").status_code == 409
    assert "<script>" not in switch(client, "on", team="nope<script>").get_data(as_text=True)
    assert len(audit(engine)) == 1


def test_the_department_head_sees_but_cannot_switch_and_surgeons_see_nothing(client, engine):
    sign_in(client, "head")
    page = client.get("/incidents/")
    assert page.status_code == 200 and 'id="incident-on"' not in page.get_data(as_text=True)
    assert switch(client, "on", team="facial").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_token(client, "/incidents/")})
    sign_in(client, "doc1")
    assert client.get("/incidents/").status_code == 403
    assert audit(engine) == []
    denied = [a for a in _all_audit(engine) if a[1] == "denied"]
    assert len(denied) == 2


def _all_audit(engine):
    with engine.connect() as conn:
        return [(r.actor, r.action) for r in conn.execute(select(AuditRow))]


def test_a_switch_without_the_csrf_token_is_refused(client, engine):
    sign_in(client, "sup")
    response = client.post("/incidents/on", data={"team": "facial"})
    assert response.status_code == 400
    assert audit(engine) == []


def test_english_page(client):
    sign_in(client, "sup")
    client.get("/lang/en")
    page = client.get("/incidents/").get_data(as_text=True)
    assert "Major incidents" in page and "Switch major-incident mode on" in page


# --- the JSON API ---------------------------------------------------------------------

@pytest.fixture
def tokens(app, engine):
    store = TokenStore(engine)
    return {name: store.create(name, role, surgeon)[1] for name, role, surgeon in (
        ("ops", "supervisor", None), ("head9", "department_head", 9), ("doc1", "surgeon", 1))}


def api(client, tokens, who, method="get", body=None):
    headers = {"Authorization": f"Bearer {tokens[who]}"}
    if method == "get":
        return client.get("/api/v1/incidents", headers=headers)
    return client.post("/api/v1/incidents", headers=headers, json=body)


def test_api_switch_on_and_off(client, tokens, engine):
    response = api(client, tokens, "ops", "post", {"action": "on", "team": "replant", "note": "矿难"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["incident"]["scope"] == "replant" and body["teams_in_incident"] == ["replant"]
    state = api(client, tokens, "head9").get_json()
    assert [i["note"] for i in state["active"]] == ["矿难"] and state["teams_in_incident"] == ["replant"]
    response = api(client, tokens, "ops", "post", {"action": "off", "team": "replant"})
    assert response.status_code == 200 and response.get_json()["active"] == []
    assert [(a[0], a[1]) for a in audit(engine)] == [("api:ops", "incident_on"),
                                                     ("api:ops", "incident_off")]


def test_api_all_teams_covers_every_team(client, tokens):
    body = api(client, tokens, "ops", "post", {"action": "on"}).get_json()
    assert body["incident"]["team"] is None and body["teams_in_incident"] == ["facial", "replant"]


def test_api_refusals_and_roles(client, tokens, engine):
    assert api(client, tokens, "ops", "post", {"action": "off", "team": "facial"}).status_code == 409
    assert api(client, tokens, "ops", "post", {"action": "on", "team": "nope"}).status_code == 400
    assert api(client, tokens, "ops", "post", {"action": "on", "team": 5}).status_code == 400
    assert api(client, tokens, "ops", "post", {"action": "explode"}).status_code == 400
    assert api(client, tokens, "ops", "post", {"action": "on", "note": "x" * 501}).status_code == 400
    assert api(client, tokens, "head9", "post", {"action": "on"}).status_code == 403
    assert api(client, tokens, "doc1").status_code == 403
    assert client.get("/api/v1/incidents").status_code == 401
    assert audit(engine) == []


def test_api_is_in_the_openapi_document(client, tokens):
    document = client.get("/api/v1/openapi.json").get_json()
    assert set(document["paths"]["/api/v1/incidents"]) == {"get", "post"}
    assert "Incident" in document["components"]["schemas"]
