"""The Calls page and its exports, and the call list query (db.calls_query), on SQLite and
PostgreSQL (fixture `engine`): every filter alone and together, sorting, keyset pages both
ways, who sees which calls, CSV/XLSX content, formula escaping, audit, hostile query strings.

The case builders here (`build`, `seed_calls`) are shared with test_console_cases.py and
test_api_console.py.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from cases.lifecycle import (
    Case,
    end_attempt,
    mark_connected,
    mark_ended,
    open_case,
    record_menu,
    set_recording,
    set_team,
    set_voicemail,
    start_attempt,
)
from db.calls_query import (
    BadCursor,
    CallFilters,
    Order,
    count_calls,
    decode_cursor,
    encode_cursor,
    iter_calls,
    list_calls,
)
from db.models import AuditRow
from db.repo import CaseRepository
from db.seed import DEMO_HOSPITALS, seed_partners
from routing.callers import classify
from routing.escalation import ChainStep
from tests.support.clock import Clock
from tests.support.console import console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import write_wav

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=SH)
PARTNERS = {"043188888888": 1, "043188888801": 1, "043288888802": 2}
NAMES = {1: "王建国", 2: "李明", 3: "张伟", 9: "赵主任", None: "值班护士"}
ROLES = {1: "primary", 2: "backup", 3: "primary", 9: "department_head", None: "nurse"}
MENU = {"facial": ("1", "颌面部创伤"), "replant": ("2", "断肢(指)再植")}


def build(case_id: str, start: datetime, *, caller: str | None = "13800000001",
          team: str = "facial", rings: tuple = (), ended: bool = True,
          recording: str | None = None, recording_s: int | None = None,
          voicemail: str | None = None, hangup: str = "caller") -> Case:
    """A real case through `cases.lifecycle`: rings are (surgeon id or None, outcome, seconds)."""
    case = open_case(case_id, f"L-{case_id}", classify(caller, PARTNERS), start)

    def at(seconds: float) -> datetime:
        return start + timedelta(seconds=seconds)

    record_menu(case, at(3), *MENU[team])
    set_team(case, at(3), team)
    clock = 4.0
    for seq, (surgeon, outcome, seconds) in enumerate(rings, 1):
        step = ChainStep(surgeon, NAMES[surgeon], f"1380000{surgeon or 0:04d}", ROLES[surgeon], 25)
        start_attempt(case, at(clock), seq, "nurse" if surgeon is None else "chain", step)
        clock += seconds
        if outcome == "accepted":
            mark_connected(case, at(clock), seq)
        elif outcome is not None:
            end_attempt(case, at(clock), seq, outcome)
        clock += 1
    if recording is not None:
        set_recording(case, at(clock), recording, recording_s)
    if voicemail is not None:
        set_voicemail(case, at(clock), voicemail)
    if ended:
        mark_ended(case, at(clock + 60), hangup)  # type: ignore[arg-type]
    return case


def seed_calls(engine, recordings: Path | None = None) -> dict[str, Case]:
    """Seven calls around NOW (Mar 10 12:00 Shanghai); C-5 is 20 days old.

    Surgeon 1 took part in C-1, C-3, C-6; surgeon 2 in C-1, C-4; surgeon 3 in C-2, C-7;
    surgeon 9 in C-5. Recordings: C-1 (a real WAV when `recordings` is given), C-5.
    """
    seed_partners(engine, DEMO_HOSPITALS[:2])
    rec = None
    if recordings is not None:
        (recordings / "2026").mkdir(parents=True, exist_ok=True)
        write_wav(recordings / "2026" / "C-1.wav", 2.0)
        rec = "2026/C-1.wav"
    cases = {
        "C-1": build("C-1", NOW - timedelta(days=1), caller="043188888888",
                     rings=((1, "no-answer", 25), (2, "accepted", 12)),
                     recording=rec or "2026/C-1.wav", recording_s=2, hangup="surgeon"),
        "C-2": build("C-2", NOW - timedelta(days=2), caller="13900000002", team="replant",
                     rings=((3, "accepted", 9),)),
        "C-3": build("C-3", NOW - timedelta(days=3), caller=None,
                     rings=((1, "no-answer", 25),), voicemail="vm/C-3.wav"),
        "C-4": build("C-4", NOW - timedelta(hours=4), caller="=1+2", team="replant",
                     rings=((2, "declined", 5),)),
        "C-5": build("C-5", NOW - timedelta(days=20), caller="043188888801",
                     rings=((9, "accepted", 30),), recording="2026/C-5.wav", recording_s=90),
        "C-6": build("C-6", NOW - timedelta(days=5), caller="043288888802",
                     rings=((1, "busy", 2), (None, "accepted", 4))),
        "C-7": build("C-7", NOW - timedelta(minutes=5), caller="13900000007", team="replant",
                     rings=((3, None, 0),), ended=False),
    }
    repo = CaseRepository(engine)
    for case in cases.values():
        assert repo.save(case)
    return cases


def audits(engine, action: str | None = None) -> list[AuditRow]:
    with engine.connect() as conn:
        query = select(AuditRow).order_by(AuditRow.id)
        if action:
            query = query.where(AuditRow.action == action)
        return list(conn.execute(query))


def week(**kw) -> CallFilters:
    return CallFilters(NOW - timedelta(days=7), NOW, **kw)


@pytest.fixture
def seeded(engine):
    seed_people(engine)
    seed_calls(engine)
    return engine


@pytest.fixture
def app(seeded):
    return console_app(seeded, clock=Clock(NOW.astimezone(UTC)))


def ids(page_or_rows) -> list[str]:
    rows = page_or_rows.rows if hasattr(page_or_rows, "rows") else page_or_rows
    return [r.case_id for r in rows]


def page_ids(html: str) -> list[str]:
    import re
    return re.findall(r'data-case-id="([^"]+)"', html)


# --------------------------------------------------------------------------- the query


def test_the_default_order_is_newest_first_within_the_range(seeded):
    page = list_calls(seeded, week())
    assert ids(page) == ["C-7", "C-4", "C-1", "C-2", "C-3", "C-6"]  # C-5 is older
    assert page.next is None and page.prev is None
    c1 = page.rows[2]
    assert c1.hospital_name == DEMO_HOSPITALS[0].name and c1.caller_class == "partner"
    assert c1.connected_surgeon_name == "李明" and c1.team_name_zh == "颌面部创伤"
    assert c1.time_to_connect_s == pytest.approx(4 + 25 + 1 + 12)
    assert c1.has_recording and c1.recording_s == 2 and c1.outcome == "connected"
    assert page.rows[0].outcome == "in-progress" and page.rows[0].time_to_connect_s is None


FILTER_CASES = [
    ({"team": "replant"}, ["C-7", "C-4", "C-2"]),
    ({"team": "burns"}, []),
    ({"outcome": "connected"}, ["C-1", "C-2"]),
    ({"outcome": "nurse"}, ["C-6"]),
    ({"outcome": "voicemail"}, ["C-3"]),
    ({"outcome": "abandoned"}, ["C-4"]),
    ({"hospital_id": 1}, ["C-1"]),
    ({"hospital_id": 2}, ["C-6"]),
    ({"caller": "13900000002"}, ["C-2"]),
    ({"caller": "139"}, []),  # exact by default in CallFilters
    ({"caller": "139", "caller_prefix": True}, ["C-7", "C-2"]),
    ({"caller": "0431", "caller_prefix": True}, ["C-1"]),
    ({"caller": "04", "caller_prefix": True}, ["C-1", "C-6"]),
    ({"caller": "9", "caller_prefix": True}, []),
    ({"surgeon_id": 1}, ["C-1", "C-3", "C-6"]),
    ({"surgeon_id": 2}, ["C-4", "C-1"]),
    ({"surgeon_id": 9}, []),
    ({"has_recording": True}, ["C-1"]),
    ({"has_recording": False}, ["C-7", "C-4", "C-2", "C-3", "C-6"]),
    ({"team": "facial", "surgeon_id": 1, "outcome": "connected"}, ["C-1"]),
    ({"team": "replant", "has_recording": False, "caller": "139", "caller_prefix": True},
     ["C-7", "C-2"]),
]


def test_each_filter_alone_and_combined(seeded):
    for condition, expected in FILTER_CASES:
        assert ids(list_calls(seeded, week(**condition))) == expected, condition
        assert count_calls(seeded, week(**condition)).n == len(expected), condition


def test_the_time_range_is_half_open(seeded, engine):
    start = (NOW - timedelta(days=2)).astimezone(UTC)
    assert ids(list_calls(seeded, CallFilters(start, NOW))) == ["C-7", "C-4", "C-1", "C-2"]
    assert ids(list_calls(seeded, CallFilters(start - timedelta(days=30), start))) == [
        "C-3", "C-6", "C-5"]


def test_a_surgeon_sees_only_the_cases_they_took_part_in(seeded):
    assert ids(list_calls(seeded, week(), only_surgeon=1)) == ["C-1", "C-3", "C-6"]
    assert ids(list_calls(seeded, week(), only_surgeon=2)) == ["C-4", "C-1"]
    assert ids(list_calls(seeded, week(surgeon_id=1), only_surgeon=2)) == ["C-1"]
    assert ids(list_calls(seeded, week(), only_surgeon=0)) == []
    assert count_calls(seeded, week(), only_surgeon=1).n == 3


@pytest.mark.parametrize("order, expected", [
    (Order("started", False), ["C-6", "C-3", "C-2", "C-1", "C-4", "C-7"]),
    (Order("team", False), ["C-1", "C-3", "C-6", "C-7", "C-4", "C-2"]),
    (Order("team", True), ["C-7", "C-4", "C-2", "C-1", "C-3", "C-6"]),
    (Order("outcome", False), ["C-4", "C-1", "C-2", "C-7", "C-6", "C-3"]),
    # connected: C-2 after 13 s, C-6 (nurse) 4+2+1+4 = 11 s, C-1 42 s; never connected last
    (Order("connect", False), ["C-6", "C-2", "C-1", "C-7", "C-4", "C-3"]),
    (Order("connect", True), ["C-1", "C-2", "C-6", "C-7", "C-4", "C-3"]),
])
def test_sorting(seeded, order, expected):
    assert ids(list_calls(seeded, week(), order)) == expected
    assert ids(iter_calls(seeded, week(), order, batch=2)) == expected


@pytest.mark.parametrize("order", [Order(), Order("started", False), Order("team"),
                                   Order("team", True), Order("outcome", True),
                                   Order("connect"), Order("connect", True)])
def test_keyset_pages_walk_forward_and_back(seeded, order):
    everything = ids(list_calls(seeded, week(), order, limit=100))
    pages, page = [], list_calls(seeded, week(), order, limit=2)
    pages.append(ids(page))
    while page.next:
        page = list_calls(seeded, week(), order, limit=2, after=page.next)
        pages.append(ids(page))
    assert sum(pages, []) == everything and [len(p) for p in pages] == [2, 2, 2]
    back = [ids(page)]
    while page.prev:
        page = list_calls(seeded, week(), order, limit=2, before=page.prev)
        back.append(ids(page))
    assert back[::-1] == pages


def test_iter_calls_stops_at_the_cap(seeded):
    assert ids(iter_calls(seeded, week(), cap=4, batch=3)) == ["C-7", "C-4", "C-1", "C-2"]
    assert ids(iter_calls(seeded, week(), cap=0)) == []
    assert count_calls(seeded, week(), cap=4) == (4, True)
    assert count_calls(seeded, week(), cap=6) == (6, False)


def test_cursors_are_checked(seeded):
    page = list_calls(seeded, week(), limit=2)
    with pytest.raises(BadCursor):
        list_calls(seeded, week(), Order("team"), after=page.next)  # another order's cursor
    when = "2026-01-01T00:00:00+00:00"
    for bad, order in (
            ("", Order()), ("x" * 600, Order()), ("!!!", Order()), ("W10", Order()),
            (encode_cursor(Order(), ["x"]), Order()),
            (encode_cursor(Order(), [when, "'; DROP TABLE cases; --"]), Order()),
            (encode_cursor(Order(), ["1999-01-01T00:00:00+00:00", "C-1"]), Order()),
            (encode_cursor(Order(), ["2026-01-01T00:00:00", "C-1"]), Order()),  # naive
            (encode_cursor(Order("connect"), [True, when, "C-1"]), Order("connect")),
            (encode_cursor(Order("connect"), [10**30, when, "C-1"]), Order("connect")),
            (encode_cursor(Order("outcome"), ["lost", when, "C-1"]), Order("outcome")),
            (encode_cursor(Order("team"), ["a b", when, "C-1"]), Order("team")),
            (encode_cursor(Order("started", False), [when, "C-1"]), Order())):
        with pytest.raises(BadCursor):
            decode_cursor(bad, order)
    assert decode_cursor(encode_cursor(Order("team"), ["", when, "C-1"]), Order("team"))[0] == ""


def test_filters_refuse_what_the_database_must_never_see():
    for bad in ({"team": "x' OR 1=1 --"}, {"outcome": "won"}, {"caller": "13a"},
                {"hospital_id": 2**40}, {"surgeon_id": True}, {"caller": "1" * 21}):
        with pytest.raises(ValueError):
            week(**bad)
    with pytest.raises(ValueError):
        CallFilters(NOW, NOW)
    with pytest.raises(ValueError):
        CallFilters(datetime(2026, 3, 1), datetime(2026, 3, 2))


# --------------------------------------------------------------------------- the page


def test_the_page_needs_a_signed_in_user(app):
    client = app.test_client()
    response = client.get("/calls/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    for path in ("/calls/export.csv", "/calls/export.xlsx"):
        assert client.get(path).status_code == 302


@pytest.mark.parametrize("user", ["admin", "sup", "head"])
def test_staff_see_every_call_of_the_last_7_days(app, user):
    client = app.test_client()
    sign_in(client, user)
    page = client.get("/calls/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert page_ids(html) == ["C-7", "C-4", "C-1", "C-2", "C-3", "C-6"]
    assert "2026-03-09 12:00:00" in html and DEMO_HOSPITALS[0].name in html
    assert 'value="2026-03-04"' in html and 'value="2026-03-10"' in html  # the default range
    assert "/cases/C-1" in html and "仅显示您参与的来电" not in html


@pytest.mark.parametrize("user, expected", [("doc1", ["C-1", "C-3", "C-6"]),
                                            ("doc2", ["C-4", "C-1"])])
def test_a_surgeon_sees_their_own_calls_only(app, user, expected):
    client = app.test_client()
    sign_in(client, user)
    assert page_ids(client.get("/calls/").get_data(as_text=True)) == expected
    # Naming another surgeon narrows their list; it never widens it.
    assert page_ids(client.get("/calls/?surgeon=3").get_data(as_text=True)) == []


PAGE_CASES = [
    ("team=replant", ["C-7", "C-4", "C-2"]),
    ("outcome=voicemail", ["C-3"]),
    ("hospital=2", ["C-6"]),
    ("caller=139", ["C-7", "C-2"]),
    ("caller=139&match=exact", []),
    ("caller=139-0000-0002&match=exact", ["C-2"]),
    ("surgeon=2", ["C-4", "C-1"]),
    ("recording=1", ["C-1"]),
    ("recording=0&team=facial", ["C-3", "C-6"]),
    ("from=2026-02-01&to=2026-02-28", ["C-5"]),
    ("from=2026-02-18", ["C-7", "C-4", "C-1", "C-2", "C-3", "C-6", "C-5"]),
    ("to=2026-03-08", ["C-2", "C-3", "C-6"]),  # from: 7 days before the end
    ("from=2026-03-09T12:00&to=2026-03-10T11:00", ["C-4", "C-1"]),
    ("from=2026-03-09T04:00Z&to=2026-03-09T04:00:01%2B00:00", ["C-1"]),
    ("sort=connect&dir=desc", ["C-1", "C-2", "C-6", "C-7", "C-4", "C-3"]),
    ("sort=team", ["C-1", "C-3", "C-6", "C-7", "C-4", "C-2"]),
    ("sort=outcome&dir=desc&team=facial", ["C-3", "C-6", "C-1"]),
]


def test_page_filters_and_sorts(app):
    client = app.test_client()
    sign_in(client, "sup")
    for query, expected in PAGE_CASES:
        page = client.get(f"/calls/?{query}")
        assert page.status_code == 200, query
        html = page.get_data(as_text=True)
        assert page_ids(html) == expected, query
        assert "filter-problems" not in html, query


HOSTILE = [
    "team=x%27%20OR%201%3D1%20--", "outcome=1%20OR%201=1", "hospital=99999999999999999999",
    "hospital=-1", "surgeon=1e9", "surgeon=0x10", "caller=%27%3B%20DROP%20TABLE%20cases%3B--",
    "caller=%EF%BC%91%EF%BC%93%EF%BC%98", "from=2026-02-30", "from=99999-01-01", "to=yesterday",
    "from=2026-03-10&to=2026-03-01", "recording=maybe", "sort=case_id%3BDROP", "dir=sideways",
    "after=not-a-cursor", "before=eyJ4IjoxfQ", "team=" + "a" * 5000, "from=1900-01-01",
    "caller=%00", "team=%0d%0aSet-Cookie:x", "after=a&before=b", "match=regex&caller=1",
    "from=0001-01-01", "to=9999-12-31", "from=0001-01-01T00:00%2B14:00", "to=2099-12-31T23:59-23:59",
    "from=2026-03-10T24:00", "to=2026-03-10T10:00%2B99:00",
]


def test_hostile_values_are_ignored_with_a_note(app, seeded):
    client = app.test_client()
    sign_in(client, "sup")
    for query in HOSTILE:
        page = client.get(f"/calls/?{query}")
        assert page.status_code == 200, query
        html = page.get_data(as_text=True)
        assert 'id="filter-problems"' in html, query
        assert set(page_ids(html)) <= {"C-1", "C-2", "C-3", "C-4", "C-6", "C-7"}, query
    assert audits(seeded, "denied") == []


def test_page_links_keep_the_filters_and_walk_the_pages(app, monkeypatch):
    import console.calls as calls_page
    from db import calls_query

    client = app.test_client()
    sign_in(client, "sup")
    monkeypatch.setattr(calls_query, "PAGE_SIZE", 2)
    monkeypatch.setattr(calls_page, "PAGE_SIZE", 2)
    import re
    seen, url = [], "/calls/?team=replant&sort=started&dir=asc"
    html = client.get(url).get_data(as_text=True)
    seen += page_ids(html)
    assert 'id="page-prev"' not in html
    href = re.search(r'<a href="([^"]+)" id="page-next">', html).group(1).replace("&amp;", "&")
    assert "team=replant" in href and "dir=asc" in href and "after=" in href
    html = client.get(href).get_data(as_text=True)
    seen += page_ids(html)
    assert seen == ["C-2", "C-4", "C-7"]
    back = re.search(r'<a href="([^"]+)" id="page-prev">', html).group(1).replace("&amp;", "&")
    assert page_ids(client.get(back).get_data(as_text=True)) == ["C-2", "C-4"]
    assert 'id="page-first"' in html and 'id="page-next"' not in html
    # The sort links keep the filters and drop the cursor.
    sort = re.search(r'<a href="([^"]+)" class="sort[^"]*">[^<]*来电时间', html).group(1)
    assert "team=replant" in sort and "after" not in sort


def test_the_page_shows_the_count_and_escapes_what_callers_sent(app, seeded):
    client = app.test_client()
    sign_in(client, "sup")
    html = client.get("/calls/").get_data(as_text=True)
    assert "符合条件的来电: 6" in html
    assert "=1+2" in html  # the raw-safe caller-ID, as text
    client.get("/lang/en")
    html = client.get("/calls/").get_data(as_text=True)
    assert "Matching calls: 6" in html and "Facial trauma" in html


# --------------------------------------------------------------------------- exports


def read_csv(body: bytes) -> list[list[str]]:
    assert body.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


def test_csv_export_is_the_filtered_list_escaped_and_audited(app, seeded):
    client = app.test_client()
    sign_in(client, "sup")
    response = client.get("/calls/export.csv?team=replant&sort=started&dir=asc")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = read_csv(response.data)
    assert rows[0][:3] == ["病例编号", "来电时间", "来电号码"]
    assert [r[0] for r in rows[1:]] == ["C-2", "C-4", "C-7"]
    c4 = rows[2]
    assert c4[2] == "'=1+2"  # a formula in a caller-ID never runs in Excel
    assert c4[6] == "未接通" and c4[5] == "断肢(指)再植"
    c2 = rows[1]
    assert c2[1] == "2026-03-08 12:00:00" and c2[7] == "张伟" and float(c2[8]) == pytest.approx(13)
    entry = audits(seeded, "export_calls")[-1]
    detail = json.loads(entry.detail)
    assert entry.subject_id == "csv" and entry.actor == "user:sup"
    assert detail["filters"]["team"] == "replant" and detail["rows"] == 3
    assert response.headers["X-Export-Rows"] == "3"


def test_xlsx_export_parses_back(app, seeded):
    client = app.test_client()
    sign_in(client, "head")
    client.get("/lang/en")
    response = client.get("/calls/export.xlsx?recording=0")
    assert response.status_code == 200
    assert response.mimetype.endswith("spreadsheetml.sheet")
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = [[c.value for c in row] for row in sheet.iter_rows()]
    assert rows[0][0] == "Case id" and [r[0] for r in rows[1:]] == ["C-7", "C-4", "C-2", "C-3", "C-6"]
    c4 = rows[2]
    assert c4[2] == "'=1+2" and sheet.cell(row=3, column=3).data_type == "s"
    assert c4[1] == datetime(2026, 3, 10, 8, 0)  # local time, as a spreadsheet date
    assert c4[6] == "Abandoned"
    assert rows[3][8] == pytest.approx(13)
    assert audits(seeded, "export_calls")[-1].subject_id == "xlsx"


def test_a_surgeons_export_holds_only_their_cases(app, seeded):
    client = app.test_client()
    sign_in(client, "doc2")
    rows = read_csv(client.get("/calls/export.csv").data)
    assert [r[0] for r in rows[1:]] == ["C-4", "C-1"]
    assert json.loads(audits(seeded, "export_calls")[-1].detail)["only_surgeon"] == 2


def test_an_export_with_a_bad_filter_is_refused_not_widened(app, seeded):
    client = app.test_client()
    sign_in(client, "sup")
    assert client.get("/calls/export.csv?team=%27%20OR%201=1").status_code == 400
    assert client.get("/calls/export.xlsx?hospital=1e99").status_code == 400
    assert audits(seeded, "export_calls") == []


def test_export_is_not_served_when_the_audit_fails(app, seeded, monkeypatch):
    from console import services

    client = app.test_client()
    sign_in(client, "sup")
    with app.app_context():
        audit_log = services().audit

    def broken(*args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit_log, "record", broken)
    response = client.get("/calls/export.csv")
    assert response.status_code == 500 and b"C-1" not in response.data


def test_export_stops_at_the_cap(app, seeded, monkeypatch):
    import console.calls as calls_page

    monkeypatch.setattr(calls_page, "EXPORT_CAP", 2)
    client = app.test_client()
    sign_in(client, "sup")
    response = client.get("/calls/export.csv")
    assert len(read_csv(response.data)) == 3 and response.headers["X-Export-Capped"] == "2"
    assert json.loads(audits(seeded, "export_calls")[-1].detail)["capped"] is True


def test_csv_streams_in_chunks(app, seeded):
    client = app.test_client()
    sign_in(client, "sup")
    response = client.get("/calls/export.csv")
    assert response.is_streamed
    assert response.get_data().startswith(b"\xef\xbb\xbf")


def test_safe_cell():
    from console.calls import safe_cell
    for dangerous in ("=HYPERLINK(\"x\")", "+1", "-1+2", "@SUM(A1)", "\t=1", "\r=1"):
        assert safe_cell(dangerous) == "'" + dangerous
    assert safe_cell("王建国") == "王建国" and safe_cell(12) == 12 and safe_cell("") == ""


def test_the_csrf_token_helper_works_on_the_calls_page(app):
    client = app.test_client()
    sign_in(client, "sup")
    assert csrf_token(client, "/calls/")  # the sign-out form carries one


# --------------------------------------------------------------------------- masking (issue 9)


@pytest.mark.parametrize("user, shown, hidden", [
    ("sup", "13900000007", None), ("admin", "13900000007", None),
    ("head", "139****0007", "13900000007"), ("doc2", "043*****8888", "043188888888")])
def test_lists_mask_callers_numbers_for_roles_that_do_not_act_on_them(app, user, shown, hidden):
    client = app.test_client()
    sign_in(client, user)
    html = client.get("/calls/").get_data(as_text=True)
    assert f'<td class="caller">{shown}</td>' in html
    if hidden is not None:
        assert hidden not in html
        # The case page the user may open still shows the whole number.
        case_id = "C-7" if user == "head" else "C-1"
        assert hidden in client.get(f"/cases/{case_id}").get_data(as_text=True)


def test_csv_export_masks_numbers_for_a_department_head(app, seeded):
    client = app.test_client()
    sign_in(client, "head")
    rows = read_csv(client.get("/calls/export.csv?team=replant&sort=started&dir=asc").data)
    assert [r[2] for r in rows[1:]] == ["139****0002", "'=1+2", "139****0007"]


def test_api_call_list_masks_numbers_for_surgeon_tokens(app, seeded):
    from db.tokens import TokenStore

    client = app.test_client()
    tokens = TokenStore(seeded)

    def callers(role: str, surgeon_id: int | None = None) -> list[tuple]:
        _, secret = tokens.create(f"t-{role}", role, surgeon_id=surgeon_id)
        body = client.get("/api/v1/calls", headers={"Authorization": f"Bearer {secret}"}).get_json()
        return [(c["case_id"], c["caller"]["number"], c["caller"]["raw_safe"]) for c in body["calls"]]

    assert ("C-1", "043*****8888", "043*****8888") in callers("surgeon", 1)
    assert ("C-1", "043188888888", "043188888888") in callers("supervisor")
