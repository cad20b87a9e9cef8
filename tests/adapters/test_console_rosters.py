"""The rosters pages (/rosters/): calendars, today's chain, gaps, and swaps and
give-aways through forms -- every role, on SQLite and on PostgreSQL."""
from __future__ import annotations

import re
from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from console.live import hub
from db.models import AuditRow, TradeRow
from db.roster_store import RosterStore
from db.users import UserRole, UserStore
from oncall.model import Role
from oncall.rotation import Rotation
from tests.support.clock import Clock
from tests.support.console import PASSWORD, console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import count

SH = ZoneInfo("Asia/Shanghai")
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=SH)  # a Sunday
WEEK = {"team": "facial", "view": "week", "date": "2026-03-03"}  # Mon Mar 2 .. Sun Mar 8


@pytest.fixture
def app(engine):
    """Facial (approval by its head, surgeon 9): primary daily 1, 2 from Feb 27
    (so 1 holds Mar 1, 3, 5 from 08:00 and 2 holds Mar 2, 4), backup daily 3.
    Replant: nobody (a gap throughout)."""
    seed_people(engine)
    UserStore(engine).create("admin3", PASSWORD, UserRole.ADMIN, surgeon_id=3, display_name="a3")
    store = RosterStore(engine, clock=lambda: NOW)
    store.add_rotation(Rotation.daily("facial", Role.PRIMARY, [1, 2], date(2026, 2, 27)),
                       actor="cli:test")
    store.add_rotation(Rotation.daily("facial", Role.BACKUP, [3], date(2026, 2, 27)),
                       actor="cli:test")
    app = console_app(engine, clock=Clock(NOW))
    yield app
    hub(app).stop()


def as_user(app, who: str):
    client = app.test_client()
    sign_in(client, who)
    return client


def post(client, path: str, **fields):
    token = csrf_token(client, "/rosters/")
    return client.post(path, data={"csrf_token": token, **WEEK, **fields})


def desk(app):
    return app.extensions["hotline"].desk


def primary_at(app, day: int, hour: int = 10) -> int:
    _, chains = desk(app).chains(datetime(2026, 3, day, hour, tzinfo=SH), ["facial"])
    return next(m.surgeon.id for m in chains["facial"] if m.role is Role.PRIMARY)


def audit(engine) -> list[tuple[str, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(AuditRow.actor, AuditRow.action, AuditRow.subject_id).order_by(AuditRow.id))]


def section(html: str, ident: str) -> str:
    found = re.search(rf'id="{ident}"(.*?)</(?:section|table)>', html, re.S)
    assert found, ident
    return found.group(1)


SWAP = dict(role="primary", start="2026-03-03T08:00", end="2026-03-04T08:00", with_surgeon="2",
            their_start="2026-03-04T08:00", their_end="2026-03-05T08:00", their_role="",
            note="<b>家里有事</b>")


# --------------------------------------------------------------------------- reading


@pytest.mark.parametrize("who", ["admin", "sup", "head", "doc1", "doc2"])
def test_every_role_sees_the_week_and_the_month(app, who):
    client = as_user(app, who)
    for view in ("week", "month"):
        page = client.get(f"/rosters/?team=facial&view={view}&date=2026-03-03")
        assert page.status_code == 200, view
        html = page.get_data(as_text=True)
        calendar = section(html, f"roster-{view}")
        assert "王建国" in calendar and "李明" in calendar and "张伟" in calendar
        assert "一线" in calendar and "二线" in calendar
        # Tuesday Mar 3: 李明 (2) until 08:00, then 王建国 (1) from 08:00.
        tuesday = re.search(r'data-date="2026-03-03">(.*?)</td>', calendar, re.S).group(1)
        assert re.search(r"李明 <span class=\"muted\">00:00–08:00", tuesday), view
        assert re.search(r"王建国 <span class=\"muted\">08:00–24:00", tuesday), view
        # Today's chain (Sun Mar 1 09:00): 王建国 primary, then 张伟 backup.
        chain = section(html, "roster-chain")
        assert chain.index("王建国") < chain.index("张伟")


def test_the_week_view_by_default_is_this_week_of_the_first_team(app):
    html = as_user(app, "doc1").get("/rosters/").get_data(as_text=True)
    assert "颌面部创伤" in html and 'id="roster-week"' in html
    assert 'data-date="2026-02-23"' in html and 'data-date="2026-03-01"' in html  # Mon..Sun
    assert 'class="day today' in html


def test_gaps_and_findings_are_highlighted(app):
    client = as_user(app, "sup")
    html = client.get("/rosters/?team=replant&view=week&date=2026-03-03").get_data(as_text=True)
    findings = section(html, "roster-findings")
    assert 'class="gap finding-gap"' in findings and "无一线值班" in findings
    assert html.count('class="day gap"') + html.count('class="day today gap"') >= 7
    assert "无人值班" in section(html, "roster-chain")
    facial = client.get("/rosters/?" + "&".join(f"{k}={v}" for k, v in WEEK.items()))
    assert "此时段无排班问题" in facial.get_data(as_text=True)  # primary + backup all week
    # Facial's month view: the rotations start Feb 27, so Feb 23-27 are gaps.
    month = client.get("/rosters/?team=facial&view=month&date=2026-03-15").get_data(as_text=True)
    assert re.search(r'class="day gap other-month" data-date="2026-02-23"', month)
    assert re.search(r'class="day other-month" data-date="2026-04-05"', month)
    assert 'data-date="2026-03-15"' in month
    client.get("/lang/en")
    english = client.get("/rosters/?team=replant").get_data(as_text=True)
    assert "nobody on call as primary" in english and "Gap" in english


BAD_QUERIES = [
    ("view=year", 400), ("date=2026-13-01", 400), ("date=20260301", 400), ("date=1999-01-01", 400),
    ("team=nope", 404), ("team=../etc", 404), ("team=" + "x" * 40, 404),
]


def test_bad_query_parameters(app):
    client = as_user(app, "doc1")
    for query, status in BAD_QUERIES:
        response = client.get("/rosters/?" + query)
        assert response.status_code == status, query
        assert "Traceback" not in response.get_data(as_text=True)


def test_signed_out_goes_to_sign_in(app):
    response = app.test_client().get("/rosters/")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_an_account_without_a_surgeon_sees_all_and_is_told_it_cannot_act(app):
    html = as_user(app, "sup").get("/rosters/").get_data(as_text=True)
    assert 'id="roster-view-only"' in html and "未关联医生" in html
    assert 'id="offer-form"' not in html and 'id="swap-form"' not in html
    html = as_user(app, "admin3").get("/rosters/").get_data(as_text=True)
    assert "您以医生身份操作：张伟 (#3)" in html and 'id="offer-form"' in html


# --------------------------------------------------------------------------- acting


def test_a_swap_requested_taken_and_approved_through_the_pages_changes_who_is_on_call(app, engine):
    assert (primary_at(app, 3), primary_at(app, 4)) == (1, 2)
    doc1, doc2, head = as_user(app, "doc1"), as_user(app, "doc2"), as_user(app, "head")

    response = post(doc1, "/rosters/trades/swap", **SWAP)
    assert response.status_code == 303
    assert response.headers["Location"] == "/rosters/?team=facial&view=week&date=2026-03-03"
    page = doc1.get(response.headers["Location"]).get_data(as_text=True)
    assert "已提交换班申请" in page
    trades = section(page, "roster-trades")
    assert "&lt;b&gt;家里有事&lt;/b&gt;" in trades and "<b>家里有事" not in trades
    (trade,) = desk(app).trades()
    assert (trade.requester, trade.counterpart, trade.status.value) == (1, 2, "requested")
    assert f"/rosters/trades/{trade.id}/take" not in trades  # not one's own

    offered = section(doc2.get("/rosters/?" + "&".join(f"{k}={v}" for k, v in WEEK.items()))
                      .get_data(as_text=True), "roster-trades")
    assert f'action="/rosters/trades/{trade.id}/take"' in offered
    assert post(doc2, f"/rosters/trades/{trade.id}/take").status_code == 303
    assert desk(app).trades()[0].status.value == "taken"

    # A surgeon approving: refused by the domain, shown, audited; nothing changes.
    refused = post(doc1, f"/rosters/trades/{trade.id}/approve")
    assert refused.status_code == 403
    text = refused.get_data(as_text=True)
    assert "只有本组科主任可以批准或拒绝" in text and 'id="roster-message"' in text
    assert audit(engine)[-1] == ("user:doc1", "denied", f"/rosters/trades/{trade.id}/approve")
    assert desk(app).trades()[0].status.value == "taken"

    approve_form = section(head.get("/rosters/?team=facial").get_data(as_text=True), "roster-trades")
    assert f'action="/rosters/trades/{trade.id}/approve"' in approve_form
    assert post(head, f"/rosters/trades/{trade.id}/approve").status_code == 303
    approved = desk(app).trades()[0]
    assert approved.status.value == "approved" and approved.decided_by == 9
    assert (primary_at(app, 3), primary_at(app, 4)) == (2, 1)  # swapped
    assert (primary_at(app, 5), primary_at(app, 2)) == (1, 2)  # the rest unchanged
    actors = [(e.actor, e.action) for e in desk(app).audit(subject="trade")]
    assert actors == [("user:head", "approve"), ("user:doc2", "take"), ("user:doc1", "request_swap")]

    again = post(head, f"/rosters/trades/{trade.id}/approve")
    assert again.status_code == 409 and "该申请当前状态不允许此操作" in again.get_data(as_text=True)


def test_the_surgeon_a_swap_names_may_decline_it(app):
    doc1, doc2 = as_user(app, "doc1"), as_user(app, "doc2")
    post(doc1, "/rosters/trades/swap", **SWAP)
    (trade,) = desk(app).trades()
    page = section(doc2.get("/rosters/?team=facial").get_data(as_text=True), "roster-trades")
    assert f'action="/rosters/trades/{trade.id}/decline"' in page
    assert post(doc2, f"/rosters/trades/{trade.id}/decline", note="不行").status_code == 303
    declined = desk(app).trades()[0]
    assert declined.status.value == "declined" and declined.decided_by == 2 and declined.note == "不行"


def test_a_shift_is_offered_as_oneself_whatever_the_form_says(app):
    doc1 = as_user(app, "doc1")
    mine = section(doc1.get("/rosters/?" + "&".join(f"{k}={v}" for k, v in WEEK.items()))
                   .get_data(as_text=True), "roster-mine")
    assert 'value="2026-03-05T08:00"' in mine and 'value="2026-03-06T08:00"' in mine  # a quick offer
    response = post(doc1, "/rosters/trades/offer", role="primary", start="2026-03-05T08:00",
                    end="2026-03-06T08:00", by="2", requester="2")
    assert response.status_code == 303
    (trade,) = desk(app).trades()
    assert trade.requester == 1 and trade.kind.value == "give_away"
    # Surgeon 2's shift, "by 2" in the form: still offered by 1, who does not hold it.
    refused = post(doc1, "/rosters/trades/offer", role="primary", start="2026-03-04T08:00",
                   end="2026-03-05T08:00", by="2")
    assert refused.status_code == 409 and "该医生在此时段并不值此班" in refused.get_data(as_text=True)
    assert len(desk(app).trades()) == 1
    # The give-away, taken by surgeon 2 (not their own) -> taken, waiting for the head.
    assert post(as_user(app, "doc2"), f"/rosters/trades/{trade.id}/take").status_code == 303
    assert desk(app).trades()[0].taker == 2


def test_an_admin_with_a_surgeon_acts_as_that_surgeon(app):
    admin3 = as_user(app, "admin3")
    response = post(admin3, "/rosters/trades/offer", role="backup", start="2026-03-03T08:00",
                    end="2026-03-04T08:00")
    assert response.status_code == 303
    (trade,) = desk(app).trades()
    assert trade.requester == 3
    assert desk(app).audit(subject="trade")[0].actor == "user:admin3"


@pytest.mark.parametrize("who", ["sup", "admin"])
def test_an_account_without_a_surgeon_cannot_act_and_it_is_audited(app, engine, who):
    post(as_user(app, "doc1"), "/rosters/trades/swap", **SWAP)
    (trade,) = desk(app).trades()
    client = as_user(app, who)
    for step in ("offer", "swap", f"{trade.id}/take", f"{trade.id}/approve", f"{trade.id}/decline"):
        path = f"/rosters/trades/{step}"
        response = post(client, path, **SWAP)
        assert response.status_code == 403, path
        assert "此操作须由医生本人进行" in response.get_data(as_text=True)
        assert audit(engine)[-1] == (f"user:{who}", "denied", path)
    assert [t.status.value for t in desk(app).trades()] == ["requested"]


def test_a_form_without_its_csrf_token_is_refused(app, engine):
    doc1 = as_user(app, "doc1")
    response = doc1.post("/rosters/trades/swap", data={**WEEK, **SWAP})
    assert response.status_code == 400
    assert audit(engine)[-1][1] == "csrf_refused"
    assert count(engine, TradeRow) == 0
    post(doc1, "/rosters/trades/swap", **SWAP)
    (trade,) = desk(app).trades()
    assert as_user(app, "doc2").post(f"/rosters/trades/{trade.id}/take").status_code == 400
    assert desk(app).trades()[0].status.value == "requested"


REFUSALS = [
    ("/rosters/trades/999/take", {}, 404, "换班申请不存在", "No such request"),
    ("/rosters/trades/99999999999999/take", {}, 404, "换班申请不存在", "No such request"),
    ("/rosters/trades/offer", dict(role="primary", start="2026-02-28T08:00",
                                    end="2026-03-01T08:00"), 409, "该时段已经结束",
     "already over"),  # surgeon 2's shift, over (the clock reads Mar 1 09:00)
    ("/rosters/trades/offer", dict(role="primary", start="2026-03-06T08:00",
                                    end="2026-03-05T08:00"), 400, "表单填写有误", "not filled in"),
    ("/rosters/trades/offer", dict(role="primary", start="2026-03-04"), 400, "表单填写有误",
     "not filled in"),
    ("/rosters/trades/offer", dict(role="boss", start="2026-03-04T08:00",
                                    end="2026-03-05T08:00"), 400, "表单填写有误", "not filled in"),
    ("/rosters/trades/offer", dict(team="nope", role="primary", start="2026-03-04T08:00",
                                    end="2026-03-05T08:00"), 404, "专业组不存在", "No such team"),
    ("/rosters/trades/swap", {**SWAP, "with_surgeon": "abc"}, 400, "表单填写有误", "not filled in"),
    ("/rosters/trades/swap", {**SWAP, "with_surgeon": "77"}, 404, "医生不存在", "No such surgeon"),
    ("/rosters/trades/swap", {**SWAP, "note": "x" * 600}, 400, "表单填写有误", "not filled in"),
]


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_refusals_are_messages_in_both_languages_never_500(app, engine, lang):
    doc2 = as_user(app, "doc2")
    doc2.get(f"/lang/{lang}")
    for path, fields, status, zh, en in REFUSALS:
        response = post(doc2, path, **fields)
        assert response.status_code == status, (path, fields)
        text = response.get_data(as_text=True)
        assert (zh if lang == "zh" else en) in text, (path, fields)
        assert 'id="roster-message"' in text and "Traceback" not in text
    assert count(engine, TradeRow) == 0


def test_taking_ones_own_request_is_refused(app, engine):
    doc1 = as_user(app, "doc1")
    post(doc1, "/rosters/trades/swap", **SWAP)
    (trade,) = desk(app).trades()
    response = post(doc1, f"/rosters/trades/{trade.id}/take")
    assert response.status_code == 403
    assert "不能接受自己的申请" in response.get_data(as_text=True)
    assert audit(engine)[-1][1] == "denied"


def test_an_odd_page_in_the_hidden_fields_still_answers(app):
    doc1 = as_user(app, "doc1")
    response = post(doc1, "/rosters/trades/swap", **{**SWAP, "view": "year", "date": "x"})
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/rosters/?view=week&date=2026-03-01")
    response = post(doc1, "/rosters/trades/999/take", team="gone")
    assert response.status_code == 404 and "颌面部创伤" in response.get_data(as_text=True)
