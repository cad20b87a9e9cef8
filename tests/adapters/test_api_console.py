"""The JSON API for calls and cases (/api/v1/calls, /api/v1/cases/<id>) and the OpenAPI
document, on SQLite and PostgreSQL (fixture `engine`): every token role, filters, pages,
hostile input, and a document that covers every /api/v1 route."""
from __future__ import annotations

import json
import re
from datetime import timezone

import pytest

from console.api_console import openapi_document
from db.tokens import TokenStore
from tests.adapters.test_console_calls import NOW, audits, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, seed_people

UTC = timezone.utc
TOKENS = {"admin": ("admin", None), "sup": ("supervisor", None), "head": ("department_head", 9),
          "s1": ("surgeon", 1), "s2": ("surgeon", 2), "cal": ("calendar", None)}
WEEK = ["C-7", "C-4", "C-1", "C-2", "C-3", "C-6"]


@pytest.fixture
def seeded(engine):
    seed_people(engine)
    seed_calls(engine)
    return engine


@pytest.fixture
def tokens(seeded) -> dict[str, str]:
    store = TokenStore(seeded)
    return {name: store.create(name, role, surgeon)[1] for name, (role, surgeon) in TOKENS.items()}


@pytest.fixture
def api(seeded, tokens):
    client = console_app(seeded, clock=Clock(NOW.astimezone(UTC))).test_client()

    def get(path: str, token: str | None = "sup", headers: dict | None = None):
        sent = {"Authorization": f"Bearer {tokens[token]}"} if token else {}
        return client.get(path, headers={**sent, **(headers or {})})

    return get


def case_ids(response) -> list[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return [c["case_id"] for c in response.get_json()["calls"]]


# --------------------------------------------------------------------------- calls


def test_calls_need_a_token(api):
    response = api("/api/v1/calls", token=None)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"] == "unauthorized"
    bad = api("/api/v1/calls", token=None, headers={"Authorization": "Bearer hl_" + "x" * 43})
    assert bad.status_code == 401
    assert api("/api/v1/calls", token="cal").status_code == 403
    assert api("/api/v1/cases/C-1", token="cal").status_code == 403


@pytest.mark.parametrize("token", ["admin", "sup", "head"])
def test_staff_tokens_see_every_call(api, token):
    assert case_ids(api("/api/v1/calls", token=token)) == WEEK


@pytest.mark.parametrize("token, expected", [("s1", ["C-1", "C-3", "C-6"]), ("s2", ["C-4", "C-1"])])
def test_a_surgeon_token_sees_its_surgeons_calls(api, token, expected):
    assert case_ids(api("/api/v1/calls", token=token)) == expected
    assert case_ids(api("/api/v1/calls?surgeon=3", token=token)) == []


def test_a_call_in_json(api):
    body = api("/api/v1/calls?team=facial&outcome=connected").get_json()
    (call,) = body["calls"]
    assert call["case_id"] == "C-1" and call["started_at"] == "2026-03-09T12:00:00+08:00"
    assert call["caller"] == {"number": "043188888888", "raw_safe": "043188888888",
                              "class": "partner", "hospital_id": 1, "hospital_name": "长春市中心医院"}
    assert call["connected_surgeon"] == {"id": 2, "name": "李明"}
    assert call["time_to_connect_s"] == 42 and call["has_recording"] and call["recording_s"] == 2
    assert call["url"] == "/api/v1/cases/C-1"
    assert body["filters"]["team"] == "facial" and body["sort"] == "started" and body["dir"] == "desc"
    assert body["next"] is None and body["prev"] is None


API_CASES = [
    ("team=replant", ["C-7", "C-4", "C-2"]),
    ("outcome=nurse", ["C-6"]),
    ("hospital=1&from=2026-02-01", ["C-1", "C-5"]),
    ("caller=0431&from=2026-02-01", ["C-1", "C-5"]),
    ("caller=043188888801&match=exact&from=2026-02-01", ["C-5"]),
    ("surgeon=1&recording=0", ["C-3", "C-6"]),
    ("from=2026-03-09T00:00%2B08:00&to=2026-03-10", ["C-7", "C-4", "C-1"]),
    ("sort=connect", ["C-6", "C-2", "C-1", "C-7", "C-4", "C-3"]),
    ("sort=started&dir=asc&limit=3", ["C-6", "C-3", "C-2"]),
]


def test_calls_filters_and_sorts(api):
    for query, expected in API_CASES:
        assert case_ids(api(f"/api/v1/calls?{query}")) == expected, query


def test_calls_pages_with_cursors(api):
    pages, body = [], api("/api/v1/calls?limit=4&sort=team").get_json()
    pages.append([c["case_id"] for c in body["calls"]])
    while body["next"]:
        body = api(f"/api/v1/calls?limit=4&sort=team&after={body['next']}").get_json()
        pages.append([c["case_id"] for c in body["calls"]])
    assert pages == [["C-1", "C-3", "C-6", "C-7"], ["C-4", "C-2"]]
    back = api(f"/api/v1/calls?limit=4&sort=team&before={body['prev']}").get_json()
    assert [c["case_id"] for c in back["calls"]] == pages[0] and back["prev"] is None
    # A cursor of another order is refused, not misread.
    other = api(f"/api/v1/calls?limit=4&after={body['prev']}")
    assert other.status_code == 400 and other.get_json()["problems"][0]["field"] == "after"


HOSTILE = [
    "team=%27%3B%20DROP%20TABLE%20cases%3B--", "outcome=x", "hospital=1%20OR%201=1",
    "hospital=99999999999999999999", "surgeon=-3", "caller=%2B86abc", "from=2026-13-01",
    "to=2026-03-10T25:00", "from=0001-01-01", "recording=2", "sort=random()", "dir=up",
    "limit=0", "limit=201", "limit=1e3", "after=%00", "before=" + "A" * 600, "match=like",
    "from=2026-03-10&to=2026-03-09", "caller=" + "1" * 21, "to=9999-12-31",
    "to=2099-12-31T23:59-23:59",
]


def test_hostile_queries_are_400_never_500(api):
    for query in HOSTILE:
        response = api(f"/api/v1/calls?{query}")
        assert response.status_code == 400, (query, response.get_data(as_text=True)[:300])
        body = response.get_json()
        assert body["error"] == "invalid_request" and body["problems"] and body["message_zh"]


# --------------------------------------------------------------------------- cases


def test_a_case_in_json(api):
    response = api("/api/v1/cases/C-1", token="s2")
    assert response.status_code == 200
    case = response.get_json()["case"]
    assert case["outcome"] == "connected" and case["caller"]["hospital_name"] == "长春市中心医院"
    assert case["team"] == {"code": "facial", "name_zh": "颌面部创伤", "name_en": "Facial trauma"}
    assert case["connected_surgeon"] == {"id": 2, "name": "李明", "seq": 2}
    assert case["time_to_connect_s"] == 42 and case["recording"] == {"seconds": 2}
    assert [e["kind"] for e in case["timeline"]] == ["started", "menu", "ring", "ring", "accepted",
                                                     "connected", "ended"]
    first_ring = case["timeline"][2]
    assert first_ring["name"] == "王建国" and first_ring["outcome"] == "no-answer"
    assert first_ring["ring_s"] == 25 and first_ring["at"] == "2026-03-09T12:00:04+08:00"
    assert [a["outcome"] for a in case["attempts"]] == ["no-answer", "accepted"]
    assert case["notes"] == [] and case["disposition"] is None


def test_a_surgeon_token_opening_anothers_case_is_refused_and_audited(api, seeded):
    response = api("/api/v1/cases/C-2", token="s1")
    assert response.status_code == 403 and response.get_json()["error"] == "forbidden"
    denied = audits(seeded, "denied")[-1]
    assert denied.actor == "api:s1" and denied.subject_id == "/api/v1/cases/C-2"
    assert json.loads(denied.detail)["reason"] == "case of another surgeon"
    assert api("/api/v1/cases/C-2", token="head").status_code == 200
    assert api("/api/v1/cases/C-3", token="s1").status_code == 200


def test_unknown_cases_are_404(api):
    for case_id in ("C-404", "x" * 65, "C%201", "%27%20OR%201=1", "C-1%00", "..%2FC-1"):
        response = api(f"/api/v1/cases/{case_id}")
        assert response.status_code == 404 and response.get_json()["error"] == "not_found", case_id


def test_notes_appear_in_the_case(api, seeded):
    from datetime import datetime

    from db.calls_query import add_case_note
    from db.users import UserStore

    sup = UserStore(seeded).by_username("sup")
    add_case_note(seeded, "C-1", user_id=sup.id, surgeon_id=None, text="转诊", disposition="referral_accepted",
                  at=datetime(2026, 3, 9, 5, 0, tzinfo=UTC))
    case = api("/api/v1/cases/C-1").get_json()["case"]
    assert case["disposition"] == "referral_accepted"
    assert case["notes"][0]["author"] == "sup" and case["notes"][0]["at"] == "2026-03-09T13:00:00+08:00"


# --------------------------------------------------------------------------- OpenAPI


def flask_path(rule: str) -> str:
    return re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule)


def test_every_api_route_is_in_the_openapi_document(seeded, api):
    app = console_app(seeded)
    response = app.test_client().get("/api/v1/openapi.json")  # public: no token
    assert response.status_code == 200
    document = response.get_json()
    assert document["openapi"].startswith("3.1")
    missing = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1"):
            continue
        item = document["paths"].get(flask_path(rule.rule), {})
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if method.lower() not in item:
                missing.append(f"{method} {rule.rule}")
    assert missing == []
    for path in ("/api/v1/calls", "/api/v1/cases/{case_id}", "/api/v1/roster/teams/{team}.ics",
                 "/api/v1/roster/trades/{trade_id}/approve"):
        assert path in document["paths"]


def test_the_document_is_well_formed(seeded):
    app = console_app(seeded)
    with app.app_context():
        document = openapi_document()
    text = json.dumps(document)
    for ref in set(re.findall(r'"\$ref": "#/([^"]+)"', text)):
        node = document
        for part in ref.split("/"):
            node = node[part]  # every reference resolves
    schemes = document["components"]["securitySchemes"]
    for requirement in document["security"]:
        assert set(requirement) <= set(schemes)
    operation_ids = []
    for path, item in document["paths"].items():
        assert path.startswith("/api/v1/")
        for name in re.findall(r"{([a-z_]+)}", path):
            for op in item.values():
                assert any(p["in"] == "path" and p["name"] == name for p in op.get("parameters", ())), \
                    (path, name)
        for method, op in item.items():
            assert method in ("get", "post", "put", "patch", "delete")
            assert op["responses"] and op["operationId"]
            for requirement in op.get("security", ()):
                assert set(requirement) <= set(schemes), (path, method, requirement)
            operation_ids.append(op["operationId"])
    assert len(operation_ids) == len(set(operation_ids))


def test_api_modules_add_their_own_fragments(seeded, monkeypatch):
    import console.api_figures as figures

    monkeypatch.setattr(figures, "OPENAPI_PATHS", {"/api/v1/figures/test": {"get": {
        "operationId": "figuresTest", "responses": {"200": {"description": "OK"}}}}},
        raising=False)
    monkeypatch.setattr(figures, "OPENAPI_SCHEMAS", {"FiguresTest": {"type": "object"}},
                        raising=False)
    document = openapi_document()
    assert "/api/v1/figures/test" in document["paths"]
    assert "FiguresTest" in document["components"]["schemas"]
    monkeypatch.setattr(figures, "OPENAPI_PATHS", {"/api/v1/calls": {"get": {}}})
    with pytest.raises(ValueError, match="described twice"):
        openapi_document()
