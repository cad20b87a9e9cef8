"""The console's referrals (console.referrals): the panel on a case's page, status changes with
the version the page showed, CSRF, who may act (roles and object-level access), the list page
with its filters and the time since injury -- on SQLite and PostgreSQL (fixture `engine`)."""
from __future__ import annotations

import re
from datetime import timedelta, timezone

import pytest

from db.models import NoticeRow, ReferralEventRow, ReferralRow
from db.referrals import ReferralStore
from network.referrals import ReferralStatus as S
from tests.adapters.test_console_calls import NOW, audits, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import count

UTC = timezone.utc
T0 = NOW.astimezone(UTC)  # 2026-03-10 12:00 in Shanghai


@pytest.fixture
def seeded(engine):
    seed_people(engine)
    seed_calls(engine)
    return engine


@pytest.fixture
def app(seeded):
    return console_app(seeded, clock=Clock(T0))


@pytest.fixture
def store(seeded):
    return ReferralStore(seeded, clock=Clock(T0))


def client_of(app, user):
    client = app.test_client()
    sign_in(client, user)
    return client


def create(client, case_id, **form):
    token = csrf_token(client, f"/cases/{case_id}")
    return client.post(f"/referrals/cases/{case_id}", data={"csrf_token": token, **form})


def change(client, referral_id, case_id, status, version, note=""):
    token = csrf_token(client, f"/cases/{case_id}")
    return client.post(f"/referrals/{referral_id}/status",
                       data={"csrf_token": token, "status": status, "version": str(version),
                             "note": note})


def written(engine) -> tuple[int, ...]:
    return tuple(count(engine, row) for row in (ReferralRow, ReferralEventRow, NoticeRow))


def html(response) -> str:
    return response.get_data(as_text=True)


# --------------------------------------------------------------------------- the case panel


def test_a_supervisor_turns_a_case_into_a_referral_and_moves_it_to_arrived(app, seeded):
    client = client_of(app, "sup")
    page = html(client.get("/cases/C-2"))
    assert 'id="referral-create-form"' in page and "转为转诊" in page

    made = create(client, "C-2", age="45", sex="male", injury="右手示指离断",
                  injured_at="2026-03-10T10:00", note="患者已止血包扎")
    assert made.status_code == 303 and made.headers["Location"].endswith("/cases/C-2#referral")
    page = html(client.get("/cases/C-2"))
    assert 'id="referral-create-form"' not in page
    status = re.search(r'id="referral-status">([^<]+)<', page)
    assert status and status.group(1) == "已申请"
    assert "右手示指离断" in page and "男 · 45 岁" in page
    assert "2026-03-10 10:00" in page
    since = re.search(r'<span id="referral-since" class="since-injury urgency-(\w+)"[^>]*>([^<]+)<', page)
    assert since and since.groups() == ("ok", "2小时00分")  # a digit: 6 h before it is urgent
    assert 'data-hours="6,10,12"' in page
    # Only the statuses the machine allows next are offered.
    offered = set(re.findall(r'id="referral-to-(\w+)"', page))
    assert offered == {"accepted", "declined", "cancelled"}

    referral = ReferralStore(seeded).get_by_case("C-2").referral
    for version, status in enumerate(("accepted", "en_route", "arrived"), 1):
        done = change(client, referral.id, "C-2", status, version, note=f"step {version}")
        assert done.status_code == 303, html(done)[:300]
    page = html(client.get("/cases/C-2"))
    assert re.search(r'id="referral-status">已到院<', page)
    assert set(re.findall(r'id="referral-to-(\w+)"', page)) == {"admitted"}
    events = re.findall(r'<tr class="referral-event event-(\w+)">', page)
    assert events == ["requested", "accepted", "en_route", "arrived"]
    assert page.count("user:sup") >= 4 and "患者已止血包扎" in page and "step 3" in page
    actions = [a.action for a in audits(seeded) if a.subject == "referral"]
    assert actions == ["referral_create"] + ["referral_status"] * 3


def test_english_words_and_a_limb_past_its_critical_hour(app, seeded):
    client = client_of(app, "sup")
    client.get("/lang/en")
    create(client, "C-2", injury="right forearm amputated", injured_at="2026-03-10T06:30")
    page = html(client.get("/cases/C-2"))
    assert "Referral and transfer" in page and ">requested<" in page
    since = re.search(r'id="referral-since" class="since-injury urgency-(\w+)"[^>]*>([^<]+)<', page)
    assert since and since.groups() == ("critical", "5 h 30 min")
    assert "limb (warm ischaemia limit about 6 h)" in page


def test_a_stale_version_is_refused_with_409_and_nothing_changes(app, seeded, store):
    made = store.create("C-2", actor="user:sup")
    store.change_status(made.id, "accepted", seen_version=1, actor="user:head")
    client = client_of(app, "sup")
    before = written(seeded)
    response = change(client, made.id, "C-2", "declined", 1, note="床位已满")
    assert response.status_code == 409
    assert "该转诊已被他人修改" in html(response)
    assert written(seeded) == before
    assert store.get(made.id).referral.status is S.ACCEPTED


@pytest.mark.parametrize("status,note,code,words", [
    ("arrived", "", 422, "不能从“已申请”改为“已到院”"),
    ("declined", "  ", 422, "必须填写原因"),
    ("flying", "", 400, "表单内容无效"),
])
def test_illegal_changes_are_refused_and_nothing_changes(app, seeded, store, status, note, code,
                                                         words):
    made = store.create("C-2", actor="user:sup")
    client = client_of(app, "sup")
    before = written(seeded)
    response = change(client, made.id, "C-2", status, 1, note=note)
    assert response.status_code == code
    assert words in html(response)
    assert written(seeded) == before


def test_a_bad_version_field_or_essentials_are_refused(app, seeded, store):
    client = client_of(app, "sup")
    token = csrf_token(client, "/cases/C-2")
    before = written(seeded)
    for form, words in (({"age": "abc"}, "年龄"), ({"age": "121"}, "年龄"),
                        ({"injured_at": "2026-03-11T09:00"}, "受伤时间不能晚于当前时间"),
                        ({"injured_at": "10/03/2026"}, "受伤时间格式无效"),
                        ({"injury": "指\x00伤"}, "控制字符"), ({"sex": "x"}, "性别")):
        response = client.post("/referrals/cases/C-2", data={"csrf_token": token, **form})
        assert response.status_code == 400, form
        assert words in html(response), form
    assert written(seeded) == before
    made = store.create("C-2", actor="user:sup")
    for version in ("", "0", "x", "-1"):
        response = client.post(f"/referrals/{made.id}/status",
                               data={"csrf_token": token, "status": "accepted", "version": version})
        assert response.status_code == 400
    assert store.get(made.id).referral.version == 1


def test_a_second_referral_of_the_same_case_is_a_409(app, seeded, store):
    store.create("C-2", actor="user:head")
    client = client_of(app, "sup")
    token = csrf_token(client, "/cases/C-1")  # a page drawn before it was referred
    response = client.post("/referrals/cases/C-2", data={"csrf_token": token})
    assert response.status_code == 409 and "该病例已转为转诊" in html(response)
    assert count(seeded, ReferralRow) == 1


def test_posts_without_a_csrf_token_are_refused_and_audited(app, seeded, store):
    made = store.create("C-2", actor="user:sup")
    client = client_of(app, "sup")
    before = written(seeded)
    for path, data in ((f"/referrals/cases/C-1", {}),
                       (f"/referrals/{made.id}/status", {"status": "accepted", "version": "1"}),
                       (f"/referrals/{made.id}/patient", {"age": "3", "version": "1"}),
                       (f"/referrals/{made.id}/assign", {"surgeon": "1", "version": "1"})):
        assert client.post(path, data=data).status_code == 400
        assert client.post(path, data={**data, "csrf_token": "forged"}).status_code == 400
    assert written(seeded) == before
    assert len(audits(seeded, "csrf_refused")) == 8


# --------------------------------------------------------------------------- who may act


def test_a_surgeon_acts_on_their_cases_referral_but_not_on_another_teams_by_changing_the_id(
        app, seeded, store):
    mine = store.create("C-1", actor="user:sup")  # surgeon 1 was rung for C-1
    theirs = store.create("C-2", actor="user:sup")  # surgeon 3's replant case
    client = client_of(app, "doc1")
    assert change(client, mine.id, "C-1", "accepted", 1).status_code == 303
    accepted = store.get(mine.id)
    assert accepted.referral.status is S.ACCEPTED
    assert accepted.referral.events[-1].actor == "user:doc1"
    assert accepted.referral.surgeon_id == 1  # surgeon 1 accepted it: now its receiver

    before = written(seeded)
    # The form of their own case, the id of the other referral.
    token = csrf_token(client, "/cases/C-1")
    for path, data in ((f"/referrals/{theirs.id}/status", {"status": "accepted", "version": "1"}),
                       (f"/referrals/{theirs.id}/patient", {"age": "9", "version": "1"}),
                       ("/referrals/cases/C-2", {})):
        response = client.post(path, data={"csrf_token": token, **data})
        assert response.status_code == 403, path
    assert client.get(f"/referrals/{theirs.id}").status_code == 403
    assert client.get("/cases/C-2").status_code == 403
    assert written(seeded) == before
    denied = [a for a in audits(seeded, "denied") if a.actor == "user:doc1"]
    assert len(denied) == 5
    assert store.get(theirs.id).referral.status is S.REQUESTED


def test_a_referral_assigned_to_a_surgeon_is_theirs_to_act_on(app, seeded, store):
    theirs = store.create("C-2", actor="user:sup")
    client = client_of(app, "doc1")
    token = csrf_token(client, "/cases/C-1")
    data = {"csrf_token": token, "status": "accepted", "version": "1"}
    assert client.post(f"/referrals/{theirs.id}/status", data=data).status_code == 403

    head = client_of(app, "head")
    token = csrf_token(head, "/cases/C-2")
    assigned = head.post(f"/referrals/{theirs.id}/assign",
                         data={"csrf_token": token, "team": "replant", "surgeon": "1",
                               "version": "1"})
    assert assigned.status_code == 303
    data["version"] = "2"
    assert client.post(f"/referrals/{theirs.id}/status", data=data).status_code == 303
    assert store.get(theirs.id).referral.status is S.ACCEPTED
    # Assigned, but the case itself stays the case page's business: not theirs to see.
    assert client.get("/cases/C-2").status_code == 403


def test_only_staff_assign_and_only_known_teams_and_surgeons(app, seeded, store):
    made = store.create("C-1", actor="user:sup")
    doc = client_of(app, "doc1")
    token = csrf_token(doc, "/cases/C-1")
    response = doc.post(f"/referrals/{made.id}/assign",
                        data={"csrf_token": token, "surgeon": "1", "version": "1"})
    assert response.status_code == 403
    assert 'id="referral-assign-form"' not in html(doc.get("/cases/C-1"))
    sup = client_of(app, "sup")
    token = csrf_token(sup, "/cases/C-1")
    for team, surgeon in (("nope", ""), ("", "777"), ("x y", ""), ("", "1;2")):
        response = sup.post(f"/referrals/{made.id}/assign",
                            data={"csrf_token": token, "team": team, "surgeon": surgeon,
                                  "version": "1"})
        assert response.status_code == 400, (team, surgeon)
    assert store.get(made.id).referral.version == 1


def test_editing_the_essentials_from_the_panel(app, seeded, store):
    made = store.create("C-1", actor="user:sup")
    client = client_of(app, "doc1")
    token = csrf_token(client, "/cases/C-1")
    response = client.post(f"/referrals/{made.id}/patient",
                           data={"csrf_token": token, "version": "1", "age": "8",
                                 "sex": "female", "injury": "<b>左拇指</b>离断",
                                 "injured_at": "2026-03-10T01:00"})
    assert response.status_code == 303
    r = store.get(made.id).referral
    assert (r.patient.age, r.patient.sex.value, r.version) == (8, "female", 2)
    page = html(client.get("/cases/C-1"))
    assert "&lt;b&gt;左拇指&lt;/b&gt;离断" in page and "<b>左拇指" not in page
    assert "11小时00分" in page  # a digit past 10 h: critical
    assert re.search(r'id="referral-since" class="since-injury urgency-critical"', page)
    [entry] = [a for a in audits(seeded) if a.action == "referral_patient"]
    assert entry.actor == "user:doc1"


# --------------------------------------------------------------------------- the list


def test_the_list_shows_open_referrals_first_with_their_time_since_injury(app, seeded, store):
    a = store.create("C-1", actor="user:sup")
    b = store.create("C-2", actor="user:sup")
    c = store.create("C-6", actor="user:sup")
    store.change_status(c.id, "declined", seen_version=1, actor="user:sup", note="无需转诊")
    from network.referrals import patient
    store.edit_patient(b.id, patient(injury="右前臂离断", injured_at=T0 - timedelta(hours=7),
                                     now=T0), seen_version=1, actor="user:sup")
    client = client_of(app, "sup")
    page = html(client.get("/referrals/"))
    rows = re.findall(r'<tr class="referral (open|closed) urgency-(\w+)" data-referral-id="(\d+)"', page)
    assert [(state, int(rid)) for state, _u, rid in rows] == [
        ("open", b.id), ("open", a.id), ("closed", c.id)]
    assert dict((int(rid), u) for _s, u, rid in rows)[b.id] == "beyond"
    assert "7小时00分" in page and "长春市中心医院" in page and "已拒绝" in page
    assert '<a href="/referrals/" class="on">转诊</a>' in page

    only_open = html(client.get("/referrals/?open=1"))
    assert f'data-referral-id="{c.id}"' not in only_open
    declined = html(client.get("/referrals/?status=declined"))
    assert re.findall(r'data-referral-id="(\d+)"', declined) == [str(c.id)]
    by_hospital = html(client.get("/referrals/?hospital=1"))
    assert re.findall(r'data-referral-id="(\d+)"', by_hospital) == [str(a.id)]
    # Values that cannot be filters are dropped, not obeyed and not an error.
    odd = client.get("/referrals/?status=%27;drop&hospital=x&team=%3Cb%3E")
    assert odd.status_code == 200 and len(re.findall(r'data-referral-id=', html(odd))) == 3
    nothing = html(client.get("/referrals/?team=burns"))
    assert 'id="no-referrals"' in nothing


def test_a_surgeon_lists_only_their_referrals(app, seeded, store):
    a = store.create("C-1", actor="user:sup")  # surgeon 1 took part
    store.create("C-2", actor="user:sup")  # surgeon 3's
    page = html(client_of(app, "doc1").get("/referrals/"))
    assert re.findall(r'data-referral-id="(\d+)"', page) == [str(a.id)]
    assert 'id="only-yours"' in page
    signed_out = app.test_client().get("/referrals/")
    assert signed_out.status_code == 302 and "/login" in signed_out.headers["Location"]


def test_the_pages_keep_the_content_security_policy(app, store):
    store.create("C-1", actor="user:sup")
    client = client_of(app, "sup")
    for path in ("/referrals/", "/cases/C-1"):
        response = client.get(path)
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        page = html(response)
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), path  # no inline script
        assert " style=" not in page and "<style" not in page, path
        assert '/static/referrals.js' in page and '/static/referrals.css' in page
    script = client.get("/static/referrals.js")
    assert script.status_code == 200 and b"data-injured-at" in script.data
    script.close()


def test_unknown_referrals_are_404(app, seeded):
    client = client_of(app, "sup")
    token = csrf_token(client, "/cases/C-1")
    assert client.get("/referrals/999999").status_code == 404
    assert client.post("/referrals/999999/status", data={
        "csrf_token": token, "status": "accepted", "version": "1"}).status_code == 404
    assert client.post("/referrals/cases/C-404", data={"csrf_token": token}).status_code == 404
    assert client.get("/referrals/abc").status_code == 404
    assert count(seeded, ReferralRow) == 0
