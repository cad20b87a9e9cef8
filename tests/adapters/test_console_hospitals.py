"""The partner-hospital pages and the block list in the console (Flask client, CSRF on), on
SQLite and PostgreSQL: roles, object-level access to cases, import preview and confirm, the
block list and its refusal of hospital numbers, the export, the case page's hospital link."""
from __future__ import annotations

import base64
import json
import re
from datetime import timezone

import pytest
from sqlalchemy import select

from db.blocklist import BlockList
from db.hospitals import HospitalStore
from db.models import AuditRow, BlockedNumberRow, PartnerHospitalRow
from tests.adapters.test_console_calls import NOW, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import count

UTC = timezone.utc
GOOD = ("编号,名称,等级,城市,电话,联系医生\n"
        "2,吉林市中心医院,三级乙等,吉林市,043288888802,孙红 主任 13900000002\n"
        ",梅河口市中心医院,二甲,梅河口市,0435-8888 8806,刘芳 副主任医师\n").encode("gb18030")
BAD = "名称,等级,电话\n\"=cmd|' /C calc'!A0\",三甲,13900000001\n好医院,四级,043188888888\n".encode()


@pytest.fixture
def app(engine):
    seed_people(engine)
    seed_calls(engine)  # hospital 1: C-1 (yesterday), C-5 (20 days ago); hospital 2: C-6
    return console_app(engine, clock=Clock(NOW.astimezone(UTC)))


def client_for(app, user):
    client = app.test_client()
    sign_in(client, user)
    return client


def audits(engine, **where) -> list[AuditRow]:
    query = select(AuditRow).order_by(AuditRow.id)
    for column, value in where.items():
        query = query.where(getattr(AuditRow, column) == value)
    with engine.connect() as conn:
        return list(conn.execute(query).all())


def html(response) -> str:
    return response.get_data(as_text=True)


# --------------------------------------------------------------------------- directory


@pytest.mark.parametrize("user, editor", [("admin", True), ("sup", True), ("head", False),
                                          ("doc1", False)])
def test_the_directory_for_every_role(app, user, editor):
    client = client_for(app, user)
    page = client.get("/hospitals/")
    assert page.status_code == 200
    text = html(page)
    assert "合作医院名录" in text and "长春市中心医院" in text and "043188888801, 043188888888" in text
    row = re.search(r'<tr id="hospital-1">(.*?)</tr>', text, re.S).group(1)
    assert row.rstrip().endswith('<td class="num">1</td>')  # C-1 this month; C-5 was in February
    assert ('id="hospitals-import"' in text) is editor
    assert ('href="/hospitals/blocklist"' in text) is editor  # the nav entry and the link


def test_the_detail_figures_contacts_and_cases_staff_see_all(app, engine):
    HospitalStore(engine).apply(HospitalStore(engine).plan_import(
        "编号,名称,等级,城市,电话,联系医生\n1,长春市中心医院,三级甲等,长春市,043188888888;043188888801,"
        "王立军 主任 13900000001\n".encode()), "test")
    client = client_for(app, "sup")
    text = html(client.get("/hospitals/1?from=2026-02-01&to=2026-03-31"))
    assert "王立军" in text and "13900000001" in text
    assert re.search(r'id="hospital-calls">2<', text)
    assert "/cases/C-1" in text and "/cases/C-5" in text and "/cases/C-6" not in text
    # The last 7 days hold C-1 only.
    assert re.search(r'id="hospital-calls">1<', html(client.get("/hospitals/1?preset=7d")))
    assert client.get("/hospitals/99").status_code == 404
    assert client.get("/hospitals/1?from=x&to=%27--").status_code == 200  # ignored, not an error


@pytest.mark.parametrize("user, visible, hidden", [
    ("doc1", ["C-1"], ["C-5"]),  # surgeon 1 was rung on C-1 only
    ("doc2", ["C-1"], ["C-5"]),  # surgeon 2 accepted C-1
    ("head", ["C-1", "C-5"], []),
])
def test_a_surgeon_sees_only_the_cases_they_took_part_in(app, user, visible, hidden):
    text = html(client_for(app, user).get("/hospitals/1?from=2026-01-01&to=2026-03-31"))
    for case_id in visible:
        assert f"/cases/{case_id}" in text
    for case_id in hidden:
        assert f"/cases/{case_id}" not in text
    assert re.search(r'id="hospital-calls">2<', text)  # the figures are the hospital's


def test_the_case_page_links_to_its_hospital(app):
    client = client_for(app, "sup")
    text = html(client.get("/cases/C-1"))
    assert re.search(r'<a href="/hospitals/1" id="case-hospital-link">长春市中心医院</a>', text)
    assert 'id="case-hospital-link"' not in html(client.get("/cases/C-2"))  # a public caller


def test_numbers_added_and_removed_by_editors_only(app, engine):
    client = client_for(app, "sup")
    token = csrf_token(client, "/hospitals/2")
    done = client.post("/hospitals/2/numbers", data={"csrf_token": token, "number": "+86 432 8888 8812"})
    assert done.status_code == 302
    assert "043288888812" in html(client.get("/hospitals/2"))
    taken = client.post("/hospitals/1/numbers", data={"csrf_token": token, "number": "043288888812"},
                        follow_redirects=True)
    assert "已登记在合作医院" in html(taken)
    assert client.post("/hospitals/2/numbers", data={"number": "043288888813"}).status_code == 400  # no CSRF
    assert client.post("/hospitals/2/numbers/remove",
                       data={"csrf_token": token, "number": "043188888888"}).status_code == 404
    assert client.post("/hospitals/2/numbers/remove",
                       data={"csrf_token": token, "number": "043288888812"}).status_code == 302
    assert HospitalStore(engine).get(2).numbers == ("043288888802",)
    surgeon = client_for(app, "doc1")
    token = csrf_token(surgeon, "/hospitals/2")
    assert surgeon.post("/hospitals/2/numbers", data={"csrf_token": token, "number": "043288888814"}
                        ).status_code == 403
    assert [a.actor for a in audits(engine, subject="hospital")] == ["user:sup", "user:sup"]
    assert audits(engine, action="denied")[-1].actor == "user:doc1"


# --------------------------------------------------------------------------- import


def upload(client, data: bytes, **form):
    token = csrf_token(client, "/hospitals/import")
    from io import BytesIO
    return client.post("/hospitals/import", data={"csrf_token": token, "file": (BytesIO(data), "h.csv"),
                                                  **form}, content_type="multipart/form-data")


def confirm_form(text: str) -> dict:
    form = re.search(r'<form method="post" action="/hospitals/import/confirm".*?</form>', text, re.S).group(0)
    return dict(re.findall(r'name="([a-z_]+)" value="([^"]*)"', form))


def test_import_preview_then_confirm(app, engine):
    client = client_for(app, "sup")
    preview = upload(client, GOOD)
    assert preview.status_code == 200
    text = html(preview)
    assert re.search(r"新增 1 · 修改 1 · 不变 0 · 删除 0", text)
    assert "梅河口市中心医院" in text and "三级乙等" in text and "原为 三级甲等" in text
    assert count(engine, PartnerHospitalRow) == 2  # a preview writes nothing
    done = client.post("/hospitals/import/confirm", data=confirm_form(text))
    assert done.status_code == 302 and done.headers["Location"].endswith("/hospitals/")
    assert "名录已导入" in html(client.get("/hospitals/"))
    assert HospitalStore(engine).get(3).numbers == ("043588888806",)
    (row,) = audits(engine, subject="hospital")
    assert row.actor == "user:sup" and json.loads(row.detail)["added_ids"] == [3]


def test_a_bad_file_lists_every_problem_and_offers_no_confirmation(app, engine):
    client = client_for(app, "admin")
    page = upload(client, BAD)
    assert page.status_code == 422
    text = html(page)
    assert 'id="import-problems"' in text and "/hospitals/import/confirm" not in text
    assert "医院名称" in text and "不是医院等级" in text
    assert "=cmd|&#39; /C calc&#39;!A0" in text  # shown as text, escaped
    assert count(engine, PartnerHospitalRow) == 2 and audits(engine, subject="hospital") == []
    assert upload(client, b"").status_code == 400


def test_a_stale_or_tampered_confirmation_shows_the_new_plan_and_writes_nothing(app, engine):
    client = client_for(app, "sup")
    form = confirm_form(html(upload(client, GOOD)))
    HospitalStore(engine).add_number(2, "043288888899", "cli:other")  # the directory moves on
    stale = client.post("/hospitals/import/confirm", data=form)
    assert stale.status_code == 409 and "名录在预览后已被修改" in html(stale)
    assert HospitalStore(engine).get(3) is None
    # Swapping in another file under the old digest is the same: re-planned, shown, not written.
    other = "名称,电话\n别的医院,13900000055\n".encode()
    tampered = client.post("/hospitals/import/confirm",
                           data={**form, "data": base64.b64encode(other).decode()})
    assert tampered.status_code == 409 and "别的医院" in html(tampered)
    assert HospitalStore(engine).get(3) is None
    assert client.post("/hospitals/import/confirm", data={**form, "data": "%%%"}).status_code == 400
    assert client.post("/hospitals/import/confirm", data={**form, "csrf_token": "x"}).status_code == 400
    # The new preview's own form does go through.
    again = client.post("/hospitals/import/confirm", data=confirm_form(html(stale)))
    assert again.status_code == 302 and HospitalStore(engine).get(3) is not None


@pytest.mark.parametrize("user", ["head", "doc1"])
def test_import_export_and_block_list_are_for_editors(app, engine, user):
    client = client_for(app, user)
    for path in ("/hospitals/import", "/hospitals/export.csv", "/hospitals/blocklist"):
        assert client.get(path).status_code == 403
    token = csrf_token(client, "/hospitals/")
    assert client.post("/hospitals/blocklist/add", data={"csrf_token": token, "number": "13912345678",
                                                         "reason": "x"}).status_code == 403
    assert count(engine, BlockedNumberRow) == 0


def test_export_is_audited_and_spreadsheet_ready(app, engine):
    client = client_for(app, "sup")
    response = client.get("/hospitals/export.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.data.startswith(b"\xef\xbb\xbf") and "长春市中心医院".encode() in response.data
    assert "attachment" in response.headers["Content-Disposition"]
    assert audits(engine, action="export_hospitals")[0].actor == "user:sup"


# --------------------------------------------------------------------------- block list


def test_block_list_add_refuse_a_hospital_number_remove_and_history(app, engine):
    client = client_for(app, "sup")
    token = csrf_token(client, "/hospitals/blocklist")
    added = client.post("/hospitals/blocklist/add", data={
        "csrf_token": token, "number": "139-1234-5678", "reason": "<script>alert(1)</script> 骚扰"})
    assert added.status_code == 302
    text = html(client.get("/hospitals/blocklist"))
    assert "已加入黑名单" in text and "13912345678" in text
    assert "<script>alert(1)" not in text and "&lt;script&gt;alert(1)&lt;/script&gt; 骚扰" in text
    refused = client.post("/hospitals/blocklist/add", data={
        "csrf_token": token, "number": "0431 8888 8888", "reason": "prank"})
    assert refused.status_code == 409
    text = html(refused)
    assert 'id="blocklist-hospital">长春市中心医院</a>' in text and "不能加入黑名单" in text
    assert 'value="0431 8888 8888"' in text  # the form keeps what was typed
    assert client.post("/hospitals/blocklist/add", data={"csrf_token": token, "number": "junk",
                                                         "reason": "x"}).status_code == 400
    assert client.post("/hospitals/blocklist/add", data={"number": "13912345679",
                                                         "reason": "x"}).status_code == 400  # CSRF
    assert BlockList(engine).active() == frozenset({"13912345678"})
    assert client.post("/hospitals/blocklist/remove", data={"csrf_token": token,
                                                            "number": "13912345678"}).status_code == 302
    assert client.post("/hospitals/blocklist/remove", data={"csrf_token": token,
                                                            "number": "13912345678"}).status_code == 409
    text = html(client.get("/hospitals/blocklist"))
    assert 'id="blocklist-empty"' in text and 'id="blocklist-history"' in text
    assert [(a.action, a.actor) for a in audits(engine, subject="blocklist")] == [
        ("block", "user:sup"), ("unblock", "user:sup")]


def test_english_pages(app):
    client = client_for(app, "sup")
    client.get("/lang/en")
    assert "Partner hospital directory" in html(client.get("/hospitals/"))
    assert "Calls from these numbers are refused" in html(client.get("/hospitals/blocklist"))
