"""The case detail page, notes and the recording (range requests, audit, path checks), on
SQLite and PostgreSQL (fixture `engine`), for every role."""
from __future__ import annotations

import json
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select

from db.models import CaseNoteRow
from db.repo import CaseRepository
from tests.adapters.test_console_calls import NOW, audits, build, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, csrf_token, seed_people, sign_in
from tests.support.db_helpers import count, write_wav

UTC = timezone.utc


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    return folder


@pytest.fixture
def seeded(engine, recordings, tmp_path):
    seed_people(engine)
    seed_calls(engine, recordings)
    outside = tmp_path / "outside.wav"
    write_wav(outside, 1.0)
    (recordings / "link.wav").symlink_to(outside)
    write_wav(recordings / "C-11.wav", 1.0)
    repo = CaseRepository(engine)
    start = NOW - timedelta(hours=1)
    for case_id, path in (("C-8", "/etc/passwd"), ("C-9", "../outside.wav"),
                          ("C-10", "link.wav"), ("C-11", str(recordings / "C-11.wav")),
                          ("C-12", "2026/missing.wav")):
        repo.save(build(case_id, start, rings=((1, "accepted", 5),), recording=path))
    return engine


@pytest.fixture
def app(seeded, recordings):
    return console_app(seeded, clock=Clock(NOW.astimezone(UTC)), RECORDINGS_DIR=str(recordings))


def signed_in_client(app, user):
    client = app.test_client()
    sign_in(client, user)
    return client


def add_note(client, case_id, **form):
    token = csrf_token(client, f"/cases/{case_id}")
    return client.post(f"/cases/{case_id}/notes", data={"csrf_token": token, **form})


# --------------------------------------------------------------------------- the page


@pytest.mark.parametrize("user", ["admin", "sup", "head", "doc1", "doc2"])
def test_the_timeline_of_a_case(app, user):
    client = signed_in_client(app, user)
    page = client.get("/cases/C-1")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for text in ("C-1", "043188888888", "长春市中心医院", "颌面部创伤", "菜单选择", "1 · 颌面部创伤",
                 "#1 王建国 (一线) — 无应答, 振铃秒数 25", "#2 李明 (二线) — 按1接听, 振铃秒数 12",
                 "已接通", "通话结束", "挂断方: 医生", "2026-03-09 12:00:00", "2026-03-09 12:00:42",
                 'preload="none"', "/cases/C-1/recording?download=1"):
        assert text in html, text
    assert html.index("呼叫医生") < html.index("event-accepted") < html.index("event-connected")


def test_a_nurse_a_voicemail_and_a_call_in_progress(app):
    client = signed_in_client(app, "sup")
    nurse = client.get("/cases/C-6").get_data(as_text=True)
    assert "值班护士" in nurse and "占线" in nurse and "无录音" in nurse
    voicemail = client.get("/cases/C-3").get_data(as_text=True)
    assert "留言" in voicemail and "未显示号码" in voicemail
    ringing = client.get("/cases/C-7").get_data(as_text=True)
    assert "振铃中" in ringing and "通话中" in ringing
    client.get("/lang/en")
    english = client.get("/cases/C-1").get_data(as_text=True)
    assert "Timeline" in english and "no answer" in english and "Facial trauma" in english


def test_viewing_a_case_plays_nothing(app, seeded):
    client = signed_in_client(app, "sup")
    client.get("/cases/C-1")
    assert audits(seeded, "play_recording") == []


def test_a_surgeon_opening_anothers_case_is_refused_and_audited(app, seeded):
    client = signed_in_client(app, "doc1")
    assert client.get("/cases/C-1").status_code == 200  # rung: no answer, still took part
    response = client.get("/cases/C-2")
    assert response.status_code == 403 and "C-2" not in response.get_data(as_text=True).split("<main>")[1]
    denied = audits(seeded, "denied")[-1]
    assert denied.actor == "user:doc1" and denied.subject_id == "/cases/C-2"
    assert "took no part" in json.loads(denied.detail)["reason"]
    assert signed_in_client(app, "doc2").get("/cases/C-3").status_code == 403
    assert signed_in_client(app, "head").get("/cases/C-2").status_code == 200


def test_unknown_or_impossible_cases_are_404(app):
    client = signed_in_client(app, "sup")
    for case_id in ("C-404", "..%2F..%2Fetc%2Fpasswd", "a" * 65, "C%201", "C-1%00",
                    "%E7%97%85%E4%BE%8B", "C-1'%20OR%20'1'='1"):
        assert client.get(f"/cases/{case_id}").status_code == 404, case_id
        assert client.get(f"/cases/{case_id}/recording", buffered=True).status_code == 404, case_id


def test_pages_need_a_signed_in_user(app):
    client = app.test_client()
    for path in ("/cases/C-1", "/cases/C-1/recording"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.post("/cases/C-1/notes", data={"text": "x"}).status_code == 400  # no CSRF


# --------------------------------------------------------------------------- notes


@pytest.mark.parametrize("user", ["admin", "sup", "head", "doc1"])
def test_who_may_add_a_note(app, seeded, user):
    client = signed_in_client(app, user)
    response = add_note(client, "C-1", text=f"会诊意见 by {user}", disposition="consultation")
    assert response.status_code == 303 and response.headers["Location"].endswith("/cases/C-1#notes")
    html = client.get("/cases/C-1").get_data(as_text=True)
    assert f"会诊意见 by {user}" in html and "已实时会诊" in html
    entry = audits(seeded, "add_note")[-1]
    assert entry.actor == f"user:{user}" and entry.subject_id == "C-1"
    assert json.loads(entry.detail)["disposition"] == "consultation"
    with seeded.connect() as conn:
        note = conn.execute(select(CaseNoteRow)).one()
    assert note.disposition == "consultation" and note.at == NOW
    assert note.surgeon_id == {"head": 9, "doc1": 1}.get(user)


def test_the_newest_disposition_is_the_cases(app, seeded):
    client = signed_in_client(app, "doc2")
    add_note(client, "C-1", text="建议转诊", disposition="referral_accepted")
    add_note(client, "C-1", text="", disposition="transfer_arranged")
    add_note(client, "C-1", text="患者已出发")
    html = client.get("/cases/C-1").get_data(as_text=True)
    current = html.split('id="case-disposition">')[1].split("</dd>")[0]
    assert "已安排转运" in current
    assert count(seeded, CaseNoteRow) == 3


def test_a_surgeon_cannot_add_a_note_to_anothers_case(app, seeded):
    client = signed_in_client(app, "doc1")
    token = csrf_token(client, "/cases/C-1")
    response = client.post("/cases/C-2/notes", data={"csrf_token": token, "text": "x"})
    assert response.status_code == 403
    assert count(seeded, CaseNoteRow) == 0 and audits(seeded, "denied")


def test_a_note_without_its_csrf_token_is_refused(app, seeded):
    client = signed_in_client(app, "sup")
    response = client.post("/cases/C-1/notes", data={"text": "x", "disposition": "advice_only"})
    assert response.status_code == 400
    response = client.post("/cases/C-1/notes", data={"text": "x", "csrf_token": "forged"})
    assert response.status_code == 400
    assert count(seeded, CaseNoteRow) == 0
    assert [a.subject_id for a in audits(seeded, "csrf_refused")] == ["/cases/C-1/notes"] * 2


@pytest.mark.parametrize("form, error", [
    ({"text": "   "}, "请填写记录内容或选择处置"),
    ({"text": "x" * 4001}, "记录内容最多 4000 个字符"),
    ({"text": "x", "disposition": "cured'; DROP TABLE case_notes;--"}, "处置类别无效"),
])
def test_bad_notes_are_refused_with_the_reason(app, seeded, form, error):
    client = signed_in_client(app, "sup")
    response = add_note(client, "C-1", **form)
    assert response.status_code == 400 and error in response.get_data(as_text=True)
    assert count(seeded, CaseNoteRow) == 0 and audits(seeded, "add_note") == []


def test_hostile_note_text_is_stored_and_shown_as_text(app, seeded):
    client = signed_in_client(app, "sup")
    response = add_note(client, "C-1", text="<script>alert(1)</script>\x00 =cmd|' /C calc'!A0")
    assert response.status_code == 303
    html = client.get("/cases/C-1").get_data(as_text=True)
    assert "<script>alert(1)" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;\ufffd" in html


# --------------------------------------------------------------------------- the recording


def test_playing_a_recording_is_audited_first(app, seeded, recordings):
    client = signed_in_client(app, "doc2")
    response = client.get("/cases/C-1/recording", buffered=True)
    assert response.status_code == 200 and response.mimetype == "audio/wav"
    assert response.data == (recordings / "2026" / "C-1.wav").read_bytes()
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "attachment" not in response.headers.get("Content-Disposition", "")
    assert "no-store" in response.headers["Cache-Control"]
    played = audits(seeded, "play_recording")
    assert [(a.actor, a.subject, a.subject_id) for a in played] == [("user:doc2", "case", "C-1")]


def test_a_range_request_gets_206_and_exactly_those_bytes(app, seeded, recordings):
    data = (recordings / "2026" / "C-1.wav").read_bytes()
    client = signed_in_client(app, "sup")
    response = client.get("/cases/C-1/recording", headers={"Range": "bytes=100-1099"},
                          buffered=True)
    assert response.status_code == 206
    assert response.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    assert response.data == data[100:1100] and response.headers["Content-Length"] == "1000"
    tail = client.get("/cases/C-1/recording", buffered=True, headers={"Range": "bytes=-44"})
    assert tail.status_code == 206 and tail.data == data[-44:]
    beyond = client.get("/cases/C-1/recording", headers={"Range": f"bytes={len(data) + 10}-"},
                        buffered=True)
    assert beyond.status_code == 416
    entries = audits(seeded, "play_recording")
    assert len(entries) == 3 and json.loads(entries[0].detail) == {"bytes": "bytes=100-1099"}


def test_download_is_an_attachment_and_audited(app, seeded, recordings):
    client = signed_in_client(app, "head")
    response = client.get("/cases/C-1/recording?download=1", buffered=True)
    assert response.status_code == 200
    assert response.headers["Content-Disposition"] == "attachment; filename=C-1.wav"
    assert response.data == (recordings / "2026" / "C-1.wav").read_bytes()
    assert [a.subject_id for a in audits(seeded, "download_recording")] == ["C-1"]
    assert audits(seeded, "play_recording") == []


def test_nothing_is_served_when_the_audit_fails(app, seeded, monkeypatch):
    from console import services

    client = signed_in_client(app, "sup")
    with app.app_context():
        audit_log = services().audit

    def broken(*args, **kwargs):
        raise RuntimeError("audit log unavailable")

    monkeypatch.setattr(audit_log, "record", broken)
    response = client.get("/cases/C-1/recording", buffered=True)
    assert response.status_code == 500 and b"RIFF" not in response.data


def test_a_surgeon_cannot_play_anothers_recording(app, seeded):
    client = signed_in_client(app, "doc1")
    assert client.get("/cases/C-5/recording", buffered=True).status_code == 403
    assert client.get("/cases/C-5/recording?download=1", buffered=True).status_code == 403
    assert audits(seeded, "play_recording") == [] and audits(seeded, "download_recording") == []
    assert [a.subject_id for a in audits(seeded, "denied")] == ["/cases/C-5/recording"] * 2


@pytest.mark.parametrize("case_id", ["C-8", "C-9", "C-10"])
def test_a_recording_path_outside_the_recordings_dir_is_refused(app, seeded, case_id):
    client = signed_in_client(app, "sup")
    response = client.get(f"/cases/{case_id}/recording", buffered=True)
    assert response.status_code == 403 and b"RIFF" not in response.data
    assert audits(seeded, "play_recording") == []
    assert "outside" in json.loads(audits(seeded, "denied")[-1].detail)["reason"]
    page = client.get(f"/cases/{case_id}").get_data(as_text=True)
    assert 'id="recording-missing"' in page and "<audio" not in page


def test_an_absolute_path_inside_the_dir_plays(app):
    client = signed_in_client(app, "doc1")
    assert client.get("/cases/C-11/recording", buffered=True).status_code == 200


def test_no_recording_or_a_missing_file_is_404(app, seeded):
    client = signed_in_client(app, "sup")
    assert client.get("/cases/C-2/recording", buffered=True).status_code == 404  # never recorded
    assert client.get("/cases/C-12/recording", buffered=True).status_code == 404  # file gone
    assert audits(seeded, "play_recording") == []


def test_without_a_recordings_dir_nothing_is_served(seeded):
    app = console_app(seeded, clock=Clock(NOW.astimezone(UTC)))
    client = signed_in_client(app, "sup")
    assert client.get("/cases/C-1/recording", buffered=True).status_code == 404
    assert "<audio" not in client.get("/cases/C-1").get_data(as_text=True)


def test_a_recording_still_at_twilio_is_announced_not_linked(app, seeded):
    """A Twilio case's recording before carrier.twilio_recordings fetched it: the
    page says it is on its way; nothing is served from (or redirected to) Twilio."""
    url = "https://api.twilio.com/2010-04-01/Accounts/AC" + "1" * 32 + "/Recordings/RE" + "2" * 32
    CaseRepository(seeded).save(build("C-13", NOW - timedelta(minutes=5),
                                      rings=((1, "accepted", 5),), recording=url))
    client = signed_in_client(app, "sup")
    page = client.get("/cases/C-13").get_data(as_text=True)
    assert 'id="recording-at-carrier"' in page and "<audio" not in page
    assert "api.twilio.com" not in page
    response = client.get("/cases/C-13/recording", buffered=True)
    assert response.status_code == 404 and "Location" not in response.headers


# --------------------------------------------------------------------------- sealed at rest (issue 9)


@pytest.fixture
def sealed_app(seeded, recordings):
    from vault import new_key

    key = new_key()
    app = console_app(seeded, clock=Clock(NOW.astimezone(UTC)), RECORDINGS_DIR=str(recordings),
                      DATA_KEYS=[key])
    return app, key


def test_a_sealed_recording_plays_and_ranges_as_the_plain_wav(sealed_app, recordings):
    from vault import MAGIC, Vault, seal_file

    app, key = sealed_app
    path = recordings / "C-11.wav"
    plain = path.read_bytes()
    seal_file(path, Vault([key]))
    assert path.read_bytes().startswith(MAGIC)
    client = signed_in_client(app, "doc1")
    whole = client.get("/cases/C-11/recording", buffered=True)
    assert whole.status_code == 200 and whole.data == plain
    part = client.get("/cases/C-11/recording", headers={"Range": "bytes=0-43"}, buffered=True)
    assert part.status_code == 206 and part.data == plain[:44]


def test_a_recording_sealed_with_an_unknown_key_is_an_error_not_noise(seeded, recordings):
    from vault import Vault, new_key, seal_file

    seal_file(recordings / "C-11.wav", Vault([new_key()]))
    app = console_app(seeded, clock=Clock(NOW.astimezone(UTC)), RECORDINGS_DIR=str(recordings),
                      DATA_KEYS=[new_key()])
    response = signed_in_client(app, "sup").get("/cases/C-11/recording", buffered=True)
    assert response.status_code == 500 and b"HLV1" not in response.data


def test_notes_are_sealed_in_the_database_and_read_back_plain(sealed_app, seeded):
    from vault import NOTE_PREFIX

    app, _ = sealed_app
    client = signed_in_client(app, "doc1")
    assert add_note(client, "C-1", text="左手示指离断，冰袋保存", disposition="consultation"
                    ).status_code == 303
    with seeded.connect() as conn:
        stored = conn.execute(select(CaseNoteRow.text, CaseNoteRow.disposition)).one()
    assert stored.text.startswith(NOTE_PREFIX) and "示指" not in stored.text
    assert stored.disposition == "consultation"  # plain: the figures count it
    assert "左手示指离断，冰袋保存" in client.get("/cases/C-1").get_data(as_text=True)
    # Without the key ring the page says the note is sealed; it never shows the blob.
    plain_app = console_app(seeded, clock=Clock(NOW.astimezone(UTC)))
    html = signed_in_client(plain_app, "doc1").get("/cases/C-1").get_data(as_text=True)
    assert "[已加密 sealed]" in html and stored.text not in html
