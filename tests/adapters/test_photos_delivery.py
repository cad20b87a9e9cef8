"""Issue 11 parts 1, 3, 4 on SQLite and PostgreSQL (fixture `engine`): upload links sent to
callers (by the console's button and the case-open job), the surgeon's phone view with its
polling feed and disposition form, photos in the case timeline, and photos in the patient
export. Hostile: another surgeon's case, a forged disposition, missing CSRF tokens,
callers' numbers that are no mobile, channels that fail."""
from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import select

from console import create_app
from db.calls_query import case_notes
from db.models import CaseNoteRow, UploadLinkRow
from db.photos import PhotoStore
from hotline.config import HotlineConfig
from hotline.notify import NotifyError
from photos.delivery import CASE_OPEN_ACTOR, DeliveryError
from photos.images import process
from photos.sending import LinkSender, accepted_job, case_open_job
from privacy.export import export_patient
from db.repo import CaseRepository
from tests.adapters.test_console_calls import audits, build
from tests.adapters.test_photos import (KEY, T0, app, clock, jpeg, new_link, recordings,  # noqa: F401
                                        rows, seeded, send, staff, store, with_photos)
from tests.support.console import csrf_token
from tests.support.notify_server import Answer, StubServer
from vault import MAGIC, Vault, VaultError, open_note

BASE = "https://hotline.example.org"
TWILIO_SID = "AC" + "3" * 32
TWILIO_TOKEN = "delivery-test-token"
URL_RE = re.compile(r"https://hotline\.example\.org/u/([A-Za-z0-9_-]{24})")


class FakeTexter:
    """Records SMS; fails with NotifyError while `failing`."""

    def __init__(self, failing: bool = False):
        self.sent: list[tuple[str, str]] = []
        self.failing = failing

    def text(self, to: str, body: str) -> None:
        if self.failing:
            raise NotifyError("sms: HTTP 500")
        self.sent.append((to, body))


class FakeGroup:
    def __init__(self):
        self.posts: list[str] = []

    def post(self, content: str, mentioned_mobiles=()) -> None:
        self.posts.append(content)


def token_in(text: str) -> str:
    found = URL_RE.search(text)
    assert found, text
    return found.group(1)


def audit_text(engine) -> str:
    return json.dumps([[a.actor, a.action, a.subject_id, a.detail] for a in audits(engine)],
                      ensure_ascii=False)


# --------------------------------------------------------------------------- LinkSender


def test_a_link_goes_by_sms_to_a_mobile_caller_and_opens_the_upload_page(app, store, seeded):
    sms, group = FakeTexter(), FakeGroup()
    sender = LinkSender(store, BASE + "/", sms=sms, groups={"replant": group})
    delivery = sender.send("C-2", "13900000002", "replant", by="user:sup", group=True, ip="10.0.0.9")
    assert delivery.sent == ["sms", "wechat:team:replant"] and delivery.failed == []
    [(to, body)] = sms.sent
    assert to == "+8613900000002"
    assert body.startswith("【96608急诊热线】请点击链接上传伤情照片") and "96608 hotline" in body
    assert len(body) <= 268  # one four-part Unicode SMS at most
    token = token_in(body)
    assert token_in(group.posts[0]) == token
    assert "139****0002" in group.posts[0] and "13900000002" not in group.posts[0]  # masked for a group
    link = store.link_for(token)
    assert link is not None and link.case_id == "C-2" and link.id == delivery.link_id
    assert app.test_client().get(f"/u/{token}").status_code == 200
    [made] = audits(seeded, "create_upload_link")
    [sent] = audits(seeded, "send_upload_link")
    assert (sent.actor, sent.subject_id, sent.ip) == ("user:sup", "C-2", "10.0.0.9")
    assert json.loads(sent.detail) == {"link": link.id, "sent": ["sms", "wechat:team:replant"],
                                       "failed": [], "to": "139****0002"}
    assert "13900000002" not in audit_text(seeded) and token not in audit_text(seeded)


def test_a_delivery_that_reached_nobody_revokes_its_link(app, store, seeded):
    sender = LinkSender(store, BASE, sms=FakeTexter(failing=True))
    delivery = sender.send("C-2", "13900000002", "replant", by="user:sup", group=True)
    assert delivery.sent == [] and delivery.failed == ["sms"]
    [link] = rows(seeded, UploadLinkRow)
    assert link.revoked_at == T0
    assert json.loads(audits(seeded, "send_upload_link")[0].detail)["sent"] == []


@pytest.mark.parametrize("number", ["043188888888", "=1+2", None, "0044201234567",
                                    "139000000021", "1390000\r\n0002", "+8613900000002x"])
def test_a_caller_no_sms_can_reach_gets_no_link(store, seeded, number):
    sms = FakeTexter()
    sender = LinkSender(store, BASE, sms=sms)
    with pytest.raises(DeliveryError):
        sender.send("C-2", number, "replant", by="user:sup", group=True)
    assert sms.sent == [] and rows(seeded, UploadLinkRow) == []


@pytest.mark.parametrize("base", ["ftp://x.example", "javascript:alert(1)", "https://", "",
                                  "https://a.example/?next=evil", "https://user@a.example"])
def test_a_bad_public_url_is_refused(store, base):
    with pytest.raises(DeliveryError):
        LinkSender(store, base, sms=FakeTexter())


# --------------------------------------------------------------------------- the case-open job


def test_the_case_open_job_texts_a_live_mobile_caller_once(store, seeded, clock):
    sms = FakeTexter()
    sender = LinkSender(store, BASE, sms=sms)
    # C-7: a live call from 13900000007 five minutes ago; every other case has ended.
    done = case_open_job(store, sender, "mobile", clock)
    assert [d.to for d in done] == ["139****0007"] and [to for to, _ in sms.sent] == ["+8613900000007"]
    [link] = rows(seeded, UploadLinkRow)
    assert (link.case_id, link.created_by, link.revoked_at) == ("C-7", CASE_OPEN_ACTOR, None)
    clock.now += timedelta(minutes=2)
    assert case_open_job(store, sender, "mobile", clock) == []  # sent: never again
    assert len(sms.sent) == 1
    assert case_open_job(store, LinkSender(store, BASE, sms=FakeTexter()), "off", clock) == []


def test_the_case_open_job_retries_a_failed_sms_then_gives_up(store, seeded, clock):
    failing = FakeTexter(failing=True)
    sender = LinkSender(store, BASE, sms=failing)
    assert [d.sent for d in case_open_job(store, sender, "mobile", clock)] == [[]]
    assert case_open_job(store, sender, "mobile", clock) == []  # not again within a minute
    for _ in range(2):
        clock.now += timedelta(seconds=61)
        assert len(case_open_job(store, sender, "mobile", clock)) == 1
    clock.now += timedelta(minutes=2)
    assert case_open_job(store, sender, "mobile", clock) == []  # three tries: given up
    links = rows(seeded, UploadLinkRow)
    assert len(links) == 3 and all(link.revoked_at is not None for link in links)


def test_the_case_open_job_leaves_old_cases_alone(store, seeded, clock):
    sms = FakeTexter()
    clock.now += timedelta(minutes=20)  # C-7 is 25 minutes old now
    assert case_open_job(store, LinkSender(store, BASE, sms=sms), "mobile", clock) == []
    assert sms.sent == []


def test_the_surgeon_who_accepts_is_texted_the_phone_view_once(store, seeded, clock):
    # C-8: surgeon 3 (13800000003) accepted two minutes ago, the call goes on.
    CaseRepository(seeded).save(build("C-8", clock.now - timedelta(minutes=3), caller="13900000008",
                                      team="replant", rings=((3, "accepted", 60),), ended=False))
    sms = FakeTexter()
    assert accepted_job(store, sms, BASE, clock) == 1
    [(to, body)] = sms.sent
    assert to == "+8613800000003"
    assert f"{BASE}/cases/C-8/phone" in body and "C-8" in body and "断肢" in body
    assert "13900000008" not in body  # the caller's number is not in the surgeon's SMS
    clock.now += timedelta(minutes=1)
    assert accepted_job(store, sms, BASE, clock) == 0 and len(sms.sent) == 1  # once per case
    [row] = audits(seeded, "send_phone_view")
    assert (row.actor, row.subject_id) == ("service:accepted", "C-8")
    assert json.loads(row.detail) == {"surgeon": 3, "sent": True, "to": "138****0003"}


def test_a_failed_phone_view_sms_is_recorded_and_old_acceptances_are_left_alone(store, seeded, clock):
    CaseRepository(seeded).save(build("C-8", clock.now - timedelta(minutes=3), caller="13900000008",
                                      team="replant", rings=((3, "accepted", 60),), ended=False))
    failing = FakeTexter(failing=True)
    assert accepted_job(store, failing, BASE, clock) == 0
    assert json.loads(audits(seeded, "send_phone_view")[0].detail)["sent"] is False
    assert accepted_job(store, FakeTexter(), BASE, clock) == 0  # recorded: not texted twice
    # C-2 (accepted two days ago by surgeon 3) never gets one, whatever the job sees.
    assert [a.subject_id for a in audits(seeded, "send_phone_view")] == ["C-8"]


# --------------------------------------------------------------------------- the console's button


@pytest.fixture
def twilio():
    stub = StubServer([Answer.json({"sid": "SM" + "b" * 32, "status": "queued"}, status=201)])
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture
def configured_app(seeded, tmp_path, clock, twilio):
    """A console app with a configuration: SMS through Twilio pointed at a local stub."""
    config = HotlineConfig(var_dir=tmp_path / "var", instance="photos", twilio_account_sid=TWILIO_SID,
                           twilio_from="+8610695500000", twilio_base_url=twilio.url,
                           twilio_auth_token=TWILIO_TOKEN, console_public_url=BASE)
    config.instance_dir.mkdir(parents=True)
    app = create_app(config, engine=seeded, clock=clock,
                     test_config={"TESTING": True, "RATELIMIT_ENABLED": False})
    return with_photos(app)


def test_a_supervisor_sends_the_link_by_sms_from_the_console(configured_app, seeded, twilio):
    sup = staff(configured_app, "sup")
    assert sup.post("/cases/C-2/send-upload-link").status_code == 400  # no CSRF token
    assert twilio.requests == [] and rows(seeded, UploadLinkRow) == []
    token = csrf_token(sup, "/cases/C-2/phone")
    sent = sup.post("/cases/C-2/send-upload-link", data={"csrf_token": token, "back": "phone"})
    assert sent.status_code == 303 and sent.headers["Location"].endswith("/cases/C-2/phone?link=sent")
    [request] = twilio.requests
    form = request.form()
    assert form["To"] == ["+8613900000002"] and form["From"] == ["+8610695500000"]
    upload = token_in(form["Body"][0])
    assert configured_app.test_client().get(f"/u/{upload}").status_code == 200
    page = sup.get("/cases/C-2/phone?link=sent").get_data(as_text=True)
    assert 'id="link-state"' in page
    assert json.loads(audits(seeded, "send_upload_link")[0].detail)["sent"] == ["sms"]
    # A landline caller (C-1) with no WeChat group configured: nothing is made or sent.
    none = sup.post("/cases/C-1/send-upload-link", data={"csrf_token": token, "back": "photos"})
    assert none.headers["Location"].endswith("/cases/C-1/photos?link=none")
    assert len(twilio.requests) == 1 and len(rows(seeded, UploadLinkRow)) == 1


def test_without_a_public_address_no_link_is_sent(seeded, tmp_path, clock, twilio):
    config = HotlineConfig(var_dir=tmp_path / "var", instance="photos", twilio_account_sid=TWILIO_SID,
                           twilio_from="+8610695500000", twilio_base_url=twilio.url,
                           twilio_auth_token=TWILIO_TOKEN)
    config.instance_dir.mkdir(parents=True)
    app = with_photos(create_app(config, engine=seeded, clock=clock,
                                 test_config={"TESTING": True, "RATELIMIT_ENABLED": False}))
    sup = staff(app, "sup")
    token = csrf_token(sup, "/cases/C-2/phone")
    # The address the request came in on is never used in its place.
    sent = sup.post("/cases/C-2/send-upload-link", data={"csrf_token": token})
    assert sent.status_code == 303, sent.status_code
    assert sent.headers["Location"].endswith("/cases/C-2/phone?link=no_url")
    assert twilio.requests == [] and rows(seeded, UploadLinkRow) == []
    assert "HOTLINE_CONSOLE_PUBLIC_URL" in sup.get("/cases/C-2/phone?link=no_url").get_data(as_text=True)


def test_a_surgeon_who_took_no_part_may_not_send_a_link(configured_app, seeded, twilio):
    doc2 = staff(configured_app, "doc2")  # surgeon 2 was never rung for C-2
    token = csrf_token(doc2, "/cases/C-1/phone")
    assert doc2.post("/cases/C-2/send-upload-link", data={"csrf_token": token}).status_code == 403
    assert twilio.requests == [] and rows(seeded, UploadLinkRow) == []
    [denied] = audits(seeded, "denied")
    assert denied.actor == "user:doc2" and "C-2" in denied.subject_id


def test_the_send_button_is_rate_limited_per_case(seeded, tmp_path, clock, twilio):
    config = HotlineConfig(var_dir=tmp_path / "var", instance="photos", twilio_account_sid=TWILIO_SID,
                           twilio_from="+8610695500000", twilio_base_url=twilio.url,
                           twilio_auth_token=TWILIO_TOKEN, console_public_url=BASE)
    config.instance_dir.mkdir(parents=True)
    app = with_photos(create_app(config, engine=seeded, clock=clock,
                                 test_config={"TESTING": True, "RATELIMIT_ENABLED": True}))
    sup = staff(app, "sup")
    token = csrf_token(sup, "/cases/C-2/phone")
    answers = [sup.post("/cases/C-2/send-upload-link", data={"csrf_token": token}).headers["Location"]
               for _ in range(4)]
    assert [a.rsplit("=", 1)[1] for a in answers] == ["sent", "sent", "sent", "too_many"]
    assert len(twilio.requests) == 3


# --------------------------------------------------------------------------- the phone view


def test_the_phone_view_shows_the_case_and_feeds_new_photos(app, store, seeded):
    doc1 = staff(app, "doc1")  # surgeon 1 took part in C-1
    page = doc1.get("/cases/C-1/phone")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for text in ('name="viewport"', "phone_view.js", "phone_view.css", "C-1",
                 "043*****8888",  # a surgeon sees the caller masked (console.listed_number)
                 "来电至今", 'data-after="0"', 'id="phone-note-form"', 'value="consultation"',
                 'value="referral_accepted"', 'value="transfer_arranged"', 'value="advice_only"'):
        assert text in html, text
    assert "043188888888" not in html
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    feed = doc1.get("/cases/C-1/phone/photos.json?after=0")
    assert feed.status_code == 200 and feed.get_json() == {"photos": []}
    assert feed.headers["Cache-Control"] == "private, no-store"

    token, _ = new_link(store)
    send(app.test_client(), token, (jpeg(), "a.jpg", "image/jpeg"), note="<b>左颊</b> 裂伤")
    send(app.test_client(), token, (jpeg(colour=(0, 90, 0)), "b.jpg", "image/jpeg"))
    first, second = (p["id"] for p in doc1.get("/cases/C-1/phone/photos.json").get_json()["photos"])
    [newer] = doc1.get(f"/cases/C-1/phone/photos.json?after={first}").get_json()["photos"]
    assert newer["id"] == second and newer["thumb"] == f"/cases/C-1/photos/{second}/thumb"
    assert newer["full"] == f"/cases/C-1/photos/{second}" and newer["sender"] == "来电者"
    assert doc1.get(f"/cases/C-1/phone/photos.json?after={second}").get_json() == {"photos": []}
    for bad in ("-1", "abc", "1e3", "99999999999", "１"):
        assert doc1.get(f"/cases/C-1/phone/photos.json?after={bad}").status_code == 400
    assert audits(seeded, "view_photo") == []  # the feed lists photos; only an image view is one
    page = doc1.get("/cases/C-1/phone").get_data(as_text=True)
    assert f'data-after="{second}"' in page and "&lt;b&gt;左颊&lt;/b&gt; 裂伤" in page


def test_another_surgeons_case_is_403_and_audited(app, seeded):
    doc2 = staff(app, "doc2")
    for path in ("/cases/C-2/phone", "/cases/C-2/phone/photos.json?after=0"):
        assert doc2.get(path).status_code == 403, path
    token = csrf_token(doc2, "/cases/C-1/phone")
    assert doc2.post("/cases/C-2/phone/notes", data={"csrf_token": token, "disposition": "advice_only",
                                                     "text": "x"}).status_code == 403
    assert [a.actor for a in audits(seeded, "denied")] == ["user:doc2"] * 3
    assert rows(seeded, CaseNoteRow) == []
    assert app.test_client().get("/cases/C-1/phone").status_code == 302  # not signed in: sign-in page


def test_the_phone_views_disposition_is_the_case_pages_record(app, seeded):
    doc1 = staff(app, "doc1")
    token = csrf_token(doc1, "/cases/C-1/phone")
    assert doc1.post("/cases/C-1/phone/notes",
                     data={"disposition": "consultation", "text": "x"}).status_code == 400  # no CSRF
    forged = doc1.post("/cases/C-1/phone/notes", data={"csrf_token": token,
                                                       "disposition": "discharged", "text": "x"})
    assert forged.status_code == 400 and rows(seeded, CaseNoteRow) == []
    assert 'id="note-error"' in forged.get_data(as_text=True)  # the page again, with why
    empty = doc1.post("/cases/C-1/phone/notes", data={"csrf_token": token, "text": "  "})
    assert empty.status_code == 400 and "请填写记录内容或选择处置" in empty.get_data(as_text=True)
    saved = doc1.post("/cases/C-1/phone/notes", data={
        "csrf_token": token, "disposition": "transfer_arranged", "text": " 转运至吉大一院 "})
    assert saved.status_code == 303 and saved.headers["Location"].endswith("/cases/C-1/phone?saved=1#notes")
    [note] = case_notes(seeded, "C-1", Vault([KEY]))
    assert (note.disposition, note.text, note.surgeon_id) == ("transfer_arranged", "转运至吉大一院", 1)
    [added] = audits(seeded, "add_note")
    assert added.actor == "user:doc1" and json.loads(added.detail)["disposition"] == "transfer_arranged"
    case_page = doc1.get("/cases/C-1").get_data(as_text=True)
    assert re.search(r'id="case-disposition">已安排转运', case_page)
    phone = doc1.get("/cases/C-1/phone?saved=1").get_data(as_text=True)
    assert 'id="note-saved"' in phone and "转运至吉大一院" in phone


# --------------------------------------------------------------------------- timeline and export


def test_photos_are_in_the_case_timeline_with_their_sender(app, store, seeded):
    token, _ = new_link(store)
    send(app.test_client(), token, (jpeg(), "a.jpg", "image/jpeg"), note="右手")
    [photo] = store.photos_of("C-1")
    sup = staff(app, "sup")
    html = sup.get("/cases/C-1").get_data(as_text=True)
    row = re.search(r'<tr class="event event-photo">(.*?)</tr>', html, re.S)
    assert row, html
    assert f'href="/cases/C-1/photos/{photo.id}"' in row.group(1)
    assert f'src="/cases/C-1/photos/{photo.id}/thumb"' in row.group(1)
    assert "来电者" in row.group(1) and "右手" in row.group(1) and "伤情照片" in row.group(1)
    assert 'id="phone-view-link"' in html
    # In time order: the photo (at T0, today) after the call (yesterday) ended.
    kinds = re.findall(r'<tr class="event event-(\w+)">', html)
    assert kinds[-2:] == ["ended", "photo"]


def test_the_patient_export_holds_the_photos_opened_from_their_seals(store, seeded, recordings,
                                                                     tmp_path):
    token, link = new_link(store, "C-2")  # C-2 is 13900000002's call
    stored = store.add_photo(link, process(jpeg()), note="左手示指")
    assert (recordings / stored.path).read_bytes().startswith(MAGIC)  # sealed at rest
    out = tmp_path / "export.zip"
    summary = export_patient(seeded, "13900000002", out, recordings, T0, "cli:test",
                             open_note=lambda text, case_id: open_note(Vault([KEY]), text, case_id),
                             vault=Vault([KEY]))
    with zipfile.ZipFile(out) as archive:
        members = set(archive.namelist())
        doc = json.loads(archive.read("cases.json"))
        data = archive.read(f"photos/C-2-{stored.id}.jpg")
    assert f"photos/C-2-{stored.id}.jpg" in members and summary.files == 1
    assert data == store.read(stored) and data.startswith(b"\xff\xd8\xff")
    [case] = doc["cases"]
    [photo] = case["photos"]
    assert photo["included"] and photo["note"] == "左手示指" and photo["sender"] == "caller"
    assert "path" not in photo
    # Without the key ring, a sealed photo cannot go out as if it were plain.
    with pytest.raises(VaultError):
        export_patient(seeded, "13900000002", tmp_path / "again.zip", recordings, T0, "cli:test")
    assert not (tmp_path / "again.zip").exists()


def test_the_service_job_is_added_only_when_it_can_send(seeded, tmp_path, twilio):
    from apscheduler.schedulers.background import BackgroundScheduler

    from photos.sending import ACCEPTED_JOB_ID, CASE_OPEN_JOB_ID, add_photo_link_job

    config = HotlineConfig(var_dir=tmp_path / "var", instance="photos", twilio_account_sid=TWILIO_SID,
                           twilio_from="+8610695500000", twilio_base_url=twilio.url,
                           twilio_auth_token=TWILIO_TOKEN, console_public_url=BASE)
    scheduler = BackgroundScheduler(timezone="UTC")  # never started: only what it holds
    job = add_photo_link_job(scheduler, config, seeded, None, ("facial", "replant"))
    assert job is not None and scheduler.get_job(CASE_OPEN_JOB_ID) is job
    assert scheduler.get_job(ACCEPTED_JOB_ID).args[1] is job.args[1].sms  # the same SMS sender
    store, sender, setting, _ = job.args
    assert sender.sms is not None and sender.base_url == BASE and setting == "mobile"
    for changed in (replace(config, photo_link_on_case_open="off"),
                    replace(config, console_public_url=""),
                    replace(config, twilio_account_sid="")):
        assert add_photo_link_job(BackgroundScheduler(timezone="UTC"), changed, seeded, None, ()) is None
    with pytest.raises(DeliveryError):
        add_photo_link_job(scheduler, replace(config, photo_link_on_case_open="always"), seeded,
                           None, ())
