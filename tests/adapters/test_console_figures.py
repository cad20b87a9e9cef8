"""The figures page, its CSV export and the figures JSON API (Flask test client, both databases).

The cases are those of tests/adapters/test_figures.py (known answers for March 2026).
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from console.api_figures import OPENAPI_PATHS
from db.models import AuditRow
from db.tokens import TokenStore
from tests.adapters.test_figures import seed_cases, seed_reference
from tests.support.console import console_app, seed_people, sign_in

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
MARCH = "from=2026-03-01&to=2026-03-31"
SUMMARY_ZH = "2026年3月1日至3月31日：热线共接听 11 例，实时会诊 8 例，转诊 3 例，来自 2 家合作医院"
SUMMARY_EN = ("From 1 March to 31 March 2026: 11 calls, 8 real-time consultations, 3 referrals, "
              "from 2 partner hospitals")
ROLES = ("admin", "sup", "head", "doc1", "doc2")


@pytest.fixture
def app(engine):
    seed_people(engine)
    seed_reference(engine)
    seed_cases(engine, people=False)
    return console_app(engine, clock=lambda: NOW)


@pytest.fixture
def client(app):
    return app.test_client()


def page(client, query: str = MARCH) -> str:
    response = client.get(f"/figures/?{query}")
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return response.get_data(as_text=True)


def audit_rows(engine, action: str) -> list[AuditRow]:
    with engine.connect() as conn:
        return list(conn.execute(select(AuditRow).where(AuditRow.action == action)))


# ----------------------------------------------------------------------------- the page


@pytest.mark.parametrize("user", ROLES)
def test_every_role_sees_the_networks_figures(client, user):
    sign_in(client, user)
    html = page(client)
    assert SUMMARY_ZH in html and SUMMARY_EN in html
    assert 'href="/figures/"' in html  # in the nav
    assert 'id="chart-days"' in html and 'id="chart-reach"' in html
    assert "王建国" in html and "省人民医院" in html


def test_the_page_needs_a_signed_in_user(client):
    response = client.get("/figures/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/figures/export.csv").status_code == 302


def test_the_tables_hold_the_known_figures(client):
    sign_in(client, "sup")
    html = page(client)
    totals = html[html.index('id="figures-totals"'):html.index("</dl>")]
    assert "<dd>11</dd>" in totals  # calls
    assert "54.5%" in totals  # 6 of 11 answered
    assert "25.4" in totals and "50.5" in totals  # median and p90 seconds
    teams = html[html.index('id="figures-teams"'):]
    teams = teams[:teams.index("</table>")]
    assert teams.index("颌面部创伤") < teams.index("转诊转运") < teams.index("断肢(指)再植") < teams.index("未选择专业组")
    days = html.count('class="bar-calls"')
    assert days == 31


def test_english(client):
    sign_in(client, "doc1")
    client.get("/lang/en")
    html = page(client)
    assert "Time to reach a surgeon" in html and "Real-time consultations" in html
    assert "Facial trauma" in html and "No team chosen" in html
    assert SUMMARY_EN in html


@pytest.mark.parametrize("preset, calls", [("today", 1), ("7d", 1), ("30d", 9), ("year", 12)])  # the year holds X1 (28 Feb)
def test_presets(client, preset, calls):
    sign_in(client, "head")
    html = page(client, f"preset={preset}")
    assert f'class="on">{ {"today": "今天", "7d": "近7天", "30d": "近30天", "year": "今年"}[preset] }</a>' in html
    totals = html[html.index('id="figures-totals"'):html.index("</dl>")]
    assert f"<dd>{calls}</dd>" in totals


def test_one_team(client):
    sign_in(client, "sup")
    html = page(client, MARCH + "&team=replant")
    assert '<option value="replant" selected>' in html
    assert "2026年3月1日至3月31日：热线共接听 2 例，实时会诊 1 例，转诊 2 例，来自 2 家合作医院" in html


@pytest.mark.parametrize("query", [
    "from=<script>alert(1)</script>&to=2026-03-31",
    "from=2026-02-30&to=2026-03-31",
    "from=2026-03-31&to=2026-03-01",
    "from=1900-01-01&to=2026-03-01",
    "from=2000-01-01&to=2099-12-31",
    "from=２０２６-０３-０１&to=2026-03-31",
    "from=2026-03-01%00&to=2026-03-31",
    "from=" + "9" * 5000,
    "team=%27%3B%20DROP%20TABLE%20cases%3B--",
    "team=" + "x" * 33,
    "team=%E9%A2%8C",
    "preset=forever",
    "preset=<b>",
])
def test_a_query_that_cannot_be_read_is_ignored_and_said_so(client, query):
    sign_in(client, "sup")
    html = page(client, query)
    assert 'id="figures-notice"' in html
    assert "<script>alert" not in html and "<b>" not in html and "DROP TABLE" not in html
    assert 'value="2026-03-31"' in html  # a default range still ends today


def test_odd_but_harmless_queries(client):
    sign_in(client, "sup")
    html = page(client, "from=2026-03-05&from=2026-03-06&unknown=1")  # the first value wins
    assert 'value="2026-03-05"' in html and 'id="figures-notice"' not in html
    html = page(client, "from=2026-03-15")  # one day
    assert "2026年3月15日：热线共接听 2 例" in html
    assert page(client, "team=no-such-team&" + MARCH).count('class="bar-answered"') == 31


def test_an_empty_range_renders(client):
    sign_in(client, "doc2")
    html = page(client, "from=2025-01-01&to=2025-01-07")
    assert 'id="figures-empty"' in html and "该范围内没有来电。" in html
    assert "2025年1月1日至1月7日：热线共接听 0 例" in html
    assert 'id="chart-reach"' not in html and html.count('class="bar-calls"') == 7


def test_a_long_range_is_drawn_month_by_month(client):
    sign_in(client, "sup")
    html = page(client, "from=2024-01-01&to=2026-03-31")
    assert "每月来电" in html and html.count('class="bar-calls"') == 27


def test_the_page_needs_no_inline_script_or_style(client):
    sign_in(client, "sup")
    html = page(client)
    assert "<script" not in html and "style=" not in html and "<style" not in html


# ----------------------------------------------------------------------------- CSV export


def test_the_csv_export_holds_the_tables_and_is_audited(client, engine):
    sign_in(client, "sup")
    response = client.get(f"/figures/export.csv?{MARCH}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert 'filename="figures-2026-03-01-2026-03-31.csv"' in response.headers["Content-Disposition"]
    body = response.data
    assert body.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert ["zh", SUMMARY_ZH] in rows and ["en", SUMMARY_EN] in rows
    totals = rows[rows.index(["总览"]) + 2]
    assert totals[:4] == ["11", "6", str(round(6 / 11, 4)), "3"]
    teams = {r[0]: r for r in rows[rows.index(["按专业组"]) + 2:rows.index(["按医生"]) - 1]}
    assert set(teams) == {"facial", "replant", "referral", ""}
    assert teams["facial"][1] == "颌面部创伤" and teams["facial"][2:4] == ["6", "4"]
    assert teams["facial"][15] == "25.375"  # median (s)
    surgeons = rows[rows.index(["按医生"]) + 2:rows.index(["来电合作医院"]) - 1]
    assert [r[:3] for r in surgeons] == [["1", "王建国", "2"], ["2", "李明", "2"], ["3", "张伟", "1"],
                                         ["9", "赵主任", "1"]]
    hospitals = rows[rows.index(["来电合作医院"]) + 2:rows.index(["每日来电"]) - 1]
    assert hospitals[1] == ["2", "'=HYPERLINK(\"http://evil\",\"x\")", "2"]  # no formula for Excel
    days = rows[rows.index(["每日来电"]) + 2:]
    assert len(days) == 31 and days[0] == ["2026-03-01", "2", "2", "0", "0"]

    (entry,) = audit_rows(engine, "export_figures")
    assert entry.actor == "user:sup" and entry.subject == "figures"
    assert entry.subject_id == "2026-03-01..2026-03-31"
    assert json.loads(entry.detail)["team"] == ""


def test_a_csv_export_of_one_team_in_english(client, engine):
    sign_in(client, "doc1")
    client.get("/lang/en")
    response = client.get(f"/figures/export.csv?{MARCH}&team=referral")
    text = response.data.decode("utf-8-sig")
    assert "Totals" in text and "By team" in text and "referral,Referral,2,1" in text
    assert 'filename="figures-2026-03-01-2026-03-31-referral.csv"' in response.headers["Content-Disposition"]
    (entry,) = audit_rows(engine, "export_figures")
    assert json.loads(entry.detail)["team"] == "referral"


def test_a_hostile_export_query_falls_back_to_the_default_range(client, engine):
    sign_in(client, "sup")
    response = client.get("/figures/export.csv?from=%00&team=%0d%0aX")
    assert response.status_code == 200
    assert "\r\n" not in response.headers["Content-Disposition"]
    (entry,) = audit_rows(engine, "export_figures")
    assert entry.subject_id == "2026-03-02..2026-03-31"


# ----------------------------------------------------------------------------- JSON API


@pytest.fixture
def tokens(app, engine) -> dict[str, str]:
    store = TokenStore(engine, clock=lambda: NOW)
    made = {name: store.create(name, role, surgeon)[1] for name, role, surgeon in (
        ("admin", "admin", None), ("sup", "supervisor", None), ("head", "department_head", 9),
        ("doc", "surgeon", 1), ("cal", "calendar", None), ("gone", "supervisor", None))}
    store.revoke("gone")
    return made


def api(client, token: str | None, query: str = ""):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.get(f"/api/v1/figures{'?' + query if query else ''}", headers=headers)


@pytest.mark.parametrize("who", ["admin", "sup", "head", "doc"])
def test_the_api_gives_the_same_figures_to_every_reader(client, tokens, who):
    response = api(client, tokens[who], MARCH)
    assert response.status_code == 200 and response.content_type == "application/json"
    body = response.get_json()
    assert (body["from"], body["to"], body["timezone"], body["team"]) == \
        ("2026-03-01", "2026-03-31", "Asia/Shanghai", None)
    assert body["summary"] == {"zh": SUMMARY_ZH, "en": SUMMARY_EN}
    totals = body["totals"]
    assert (totals["calls"], totals["answered"], totals["answer_rate"], totals["abandoned"],
            totals["voicemail"], totals["duty_nurse"], totals["consultations"], totals["referrals"],
            totals["transfers"], totals["partner_hospitals"], totals["partner_hospital_calls"]) == \
        (11, 6, 0.5455, 3, 1, 1, 8, 3, 1, 2, 4)
    assert totals["time_to_surgeon_s"] == {"median": 25.375, "p90": 50.5}
    assert totals["escalation_depth"] == {"mean": 1.8333, "distribution": {"1": 4, "2": 1, "3": 0, "4": 0, "5+": 1}}
    assert [t["team"] for t in body["teams"]] == ["facial", "referral", "replant", None]
    assert body["teams"][0]["name_zh"] == "颌面部创伤" and body["teams"][0]["time_to_surgeon_s"]["median"] == 25.375
    assert body["surgeons"][0] == {"surgeon_id": 1, "name": "王建国", "answered": 2,
                                   "time_to_surgeon_s": {"median": 15.25, "p90": 19.45},
                                   "escalation_depth": {"mean": 1.0, "distribution": {
                                       "1": 2, "2": 0, "3": 0, "4": 0, "5+": 0}}}
    assert body["partner_hospitals"][0] == {"hospital_id": 1, "name": "省人民医院", "calls": 2}
    assert len(body["per_day"]) == 31 and body["per_day"][0] == {
        "date": "2026-03-01", "calls": 2, "answered": 2, "abandoned": 0, "voicemail": 0}


def test_the_api_for_one_team_and_by_default_the_last_30_days(client, tokens):
    body = api(client, tokens["sup"], MARCH + "&team=replant").get_json()
    assert body["team"] == "replant" and body["totals"]["calls"] == 2 and body["totals"]["referrals"] == 2
    body = api(client, tokens["sup"]).get_json()
    assert (body["from"], body["to"]) == ("2026-03-02", "2026-03-31")
    assert body["totals"]["calls"] == 9
    empty = api(client, tokens["sup"], "from=2025-01-01&to=2025-01-02").get_json()
    assert empty["totals"]["calls"] == 0 and empty["totals"]["answer_rate"] is None
    assert empty["totals"]["time_to_surgeon_s"] == {"median": None, "p90": None}


def test_the_api_refuses_a_missing_bad_or_calendar_token(client, tokens):
    missing = api(client, None, MARCH)
    assert missing.status_code == 401 and missing.get_json()["error"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert api(client, "hl_not_a_token", MARCH).status_code == 401
    assert api(client, tokens["gone"], MARCH).status_code == 401
    assert api(client, tokens["cal"], MARCH).status_code == 403
    in_url = client.get(f"/api/v1/figures?{MARCH}&token={tokens['sup']}")
    assert in_url.status_code == 401
    basic = client.get(f"/api/v1/figures?{MARCH}", headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401


@pytest.mark.parametrize("query", [
    "from=2026-03-01",
    "to=2026-03-31",
    "from=2026-02-30&to=2026-03-31",
    "from=2026-03-31&to=2026-03-01",
    "from=1999-01-01&to=2026-03-01",
    "from=2000-01-01&to=2099-12-31",
    "from=26-03-01&to=2026-03-31",
    "from=%00&to=2026-03-31",
    "from=2026-03-01&to=" + "9" * 3000,
    "from=2026-03-01&to=2026-03-31&team=%27%3B--",
    "from=2026-03-01&to=2026-03-31&team=" + "x" * 33,
    "from=2026-03-01&to=2026-03-31&tema=facial",
    "from=2026-03-01&from=2026-03-02&to=2026-03-31",
    "%3Cscript%3E=1",
])
def test_the_api_refuses_what_it_cannot_read(client, tokens, query):
    response = api(client, tokens["sup"], query)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "invalid_request" and body["message"] and body["message_zh"]
    assert "<script>" not in response.get_data(as_text=True)


def test_the_api_is_read_only(client, tokens):
    response = client.post(f"/api/v1/figures?{MARCH}", headers={"Authorization": f"Bearer {tokens['sup']}"})
    assert response.status_code == 405 and response.get_json()["error"] == "method_not_allowed"


def test_the_openapi_fragment_describes_the_endpoint():
    operation = json.loads(json.dumps(OPENAPI_PATHS))["/api/v1/figures"]["get"]
    assert [p["name"] for p in operation["parameters"]] == ["from", "to", "team"]
    assert set(operation["responses"]) == {"200", "400", "401", "403", "503"}
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"summary", "totals", "teams", "surgeons", "partner_hospitals", "per_day"} <= set(schema["required"])
