"""Upload links and image rules (photos.links, photos.rules): pure, time passed in."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from photos import delivery as dl
from photos.links import (DEFAULT_MAX_UPLOADS, DEFAULT_TTL, LinkError, LinkRefusal, UploadLink,
                          link_terms, looks_like_token, may_upload, new_token, same_hash, token_hash)
from photos.rules import (MAX_BYTES, MAX_NOTE, MAX_PIXELS, ImageKind, NoteError, PhotoRefusal,
                          check_pixels, check_size, clean_note, photo_paths, photo_purpose,
                          sender_for, sniff)

UTC = timezone.utc
T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)


def a_link(**changes) -> UploadLink:
    expires_at, max_uploads = link_terms(T0)
    link = UploadLink(1, "C-1", "0" * 64, T0, expires_at, max_uploads, 0, None, "user:sup")
    return replace(link, **changes)


# --------------------------------------------------------------------------- tokens


def test_tokens_are_long_random_and_kept_only_as_a_hash():
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert len(token) == 24 and looks_like_token(token)  # 18 bytes = 144 bits
        assert len(token_hash(token)) == 64 and token not in token_hash(token)
    token = next(iter(tokens))
    assert same_hash(a_link(token_hash=token_hash(token)), token)
    assert not same_hash(a_link(token_hash=token_hash(token)), new_token())


@pytest.mark.parametrize("text", ["", "short", "x" * 23, "x" * 25, "a/b" + "x" * 21,
                                  "../" + "x" * 21, "x" * 23 + "\x00", "病" * 24, "x" * 23 + " "])
def test_anything_but_a_token_is_refused_before_hashing(text):
    assert not looks_like_token(text)


# --------------------------------------------------------------------------- link terms


def test_a_link_lives_two_hours_and_takes_twenty_photos_by_default():
    assert link_terms(T0) == (T0 + timedelta(hours=2), 20)
    assert DEFAULT_TTL == timedelta(hours=2) and DEFAULT_MAX_UPLOADS == 20


@pytest.mark.parametrize("ttl, count", [(timedelta(0), 5), (timedelta(seconds=30), 5),
                                        (timedelta(hours=25), 5), (timedelta(hours=1), 0),
                                        (timedelta(hours=1), 101), (timedelta(hours=1), True)])
def test_nonsense_terms_are_refused(ttl, count):
    with pytest.raises(LinkError):
        link_terms(T0, ttl, count)


def test_naive_time_is_refused():
    with pytest.raises(LinkError):
        link_terms(datetime(2026, 3, 10, 4, 0))


# --------------------------------------------------------------------------- may_upload


def test_an_open_link_may_upload_until_it_expires():
    link = a_link()
    assert may_upload(link, T0) is None
    assert may_upload(link, T0 + timedelta(hours=2) - timedelta(seconds=1)) is None
    assert may_upload(link, T0 + timedelta(hours=2)) is LinkRefusal.EXPIRED
    assert may_upload(link, T0 + timedelta(days=30)) is LinkRefusal.EXPIRED


def test_a_link_works_only_for_its_case():
    assert may_upload(a_link(), T0, case_id="C-1") is None
    assert may_upload(a_link(), T0, case_id="C-2") is LinkRefusal.FOREIGN


def test_unknown_revoked_and_used_up_links():
    assert may_upload(None, T0) is LinkRefusal.UNKNOWN
    assert may_upload(a_link(revoked_at=T0), T0) is LinkRefusal.REVOKED
    # revoked later than now (a clock skew between writers): still open now
    assert may_upload(a_link(revoked_at=T0 + timedelta(minutes=1)), T0) is None
    assert may_upload(a_link(uploads=19), T0) is None
    assert may_upload(a_link(uploads=20), T0) is LinkRefusal.USED_UP
    assert may_upload(a_link(uploads=18), T0, count=3) is LinkRefusal.USED_UP
    assert a_link(uploads=18).left == 2 and a_link(uploads=25).left == 0


def test_revoked_is_named_before_expired_and_used_up():
    link = a_link(revoked_at=T0, uploads=20)
    assert may_upload(link, T0 + timedelta(hours=3)) is LinkRefusal.REVOKED
    assert may_upload(a_link(uploads=20), T0 + timedelta(hours=3)) is LinkRefusal.EXPIRED


# --------------------------------------------------------------------------- types by content


JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"


@pytest.mark.parametrize("head, kind", [
    (JPEG_HEAD, ImageKind.JPEG),
    (b"\xff\xd8\xff\xe1\x00\x10Exif\x00", ImageKind.JPEG),
    (PNG_HEAD, ImageKind.PNG),
    (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", ImageKind.HEIC),
    (b"\x00\x00\x00\x1cftypheix\x00\x00\x00\x00", ImageKind.HEIC),
    (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00", ImageKind.HEIC),
    (b"\x00\x00\x00\x1cftypmsf1\x00\x00\x00\x00", ImageKind.HEIC),
])
def test_images_are_known_by_their_first_bytes(head, kind):
    assert sniff(head) is kind


@pytest.mark.parametrize("head", [
    b"#!/bin/sh\nrm -rf /\n",  # a script renamed .jpg
    b"<html><script>alert(1)</script>",
    b"PK\x03\x04\x14\x00\x00\x00",  # a ZIP
    b"GIF89a\x01\x00\x01\x00",
    b"II*\x00\x08\x00\x00\x00",  # TIFF: Pillow reads it, we do not take it
    b"%!PS-Adobe-3.0 EPSF",  # EPS: Pillow would hand it to Ghostscript
    b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00",  # an MP4 video
    b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00",
    b"\xff\xd8",  # cut short
    b"",
])
def test_anything_else_is_not_an_image(head):
    assert sniff(head) is None


def test_size_and_pixel_limits():
    assert check_size(0) is PhotoRefusal.EMPTY
    assert check_size(1) is None and check_size(MAX_BYTES) is None
    assert check_size(MAX_BYTES + 1) is PhotoRefusal.TOO_LARGE
    assert MAX_BYTES == 15 * 1024 * 1024 and MAX_PIXELS == 40_000_000
    assert check_pixels(4032, 3024) is None  # a 12 MP phone photo
    assert check_pixels(8000, 5000) is None
    assert check_pixels(8000, 5001) is PhotoRefusal.TOO_MANY_PIXELS
    assert check_pixels(30000, 30000) is PhotoRefusal.TOO_MANY_PIXELS
    assert check_pixels(0, 100) is PhotoRefusal.UNREADABLE
    for refusal in PhotoRefusal:
        zh, en = refusal.words
        assert zh and en and zh != en


# --------------------------------------------------------------------------- notes, senders, paths


def test_notes_are_trimmed_and_cleaned_of_control_characters():
    assert clean_note("  右手食指离断\r\n约 1 小时前  ") == "右手食指离断\n约 1 小时前"
    assert clean_note("a\x00b\u202ec\x1b[31m") == "abc[31m"
    assert clean_note("x" * MAX_NOTE) == "x" * MAX_NOTE
    with pytest.raises(NoteError):
        clean_note("x" * (MAX_NOTE + 1))


def test_senders():
    assert sender_for(None) == "caller" and sender_for(7) == "surgeon:7"
    for bad in (0, -1, True, "7"):
        with pytest.raises(ValueError):
            sender_for(bad)  # type: ignore[arg-type]


def test_photo_paths_stay_in_their_case_directory():
    assert photo_paths("C-1", 5) == ("photos/C-1/5.jpg", "photos/C-1/5-thumb.jpg")
    assert photo_paths("1712345678.42", 1)[0] == "photos/1712345678.42/1.jpg"
    for case_id in ("..", ".", ".hidden", "a/b", "", "a" * 65, "C 1", "病例"):
        with pytest.raises(ValueError):
            photo_paths(case_id, 1)
    for photo_id in (0, -1, True):
        with pytest.raises(ValueError):
            photo_paths("C-1", photo_id)  # type: ignore[arg-type]
    assert photo_purpose("C-1") == b"photo:C-1"


# --------------------------------------------------------------------------- delivery (photos.delivery)

D0 = datetime(2026, 12, 1, 2, 0, tzinfo=timezone.utc)


def open_case(**changes) -> dl.OpenCase:
    fields = dict(case_id="c1", caller_number="13912345678", caller_class="public",
                  outcome="in_progress", team="facial", started_at=D0 - timedelta(minutes=1),
                  ended_at=None)
    fields.update(changes)
    return dl.OpenCase(**fields)


@pytest.mark.parametrize("number, mobile", [
    ("13912345678", "+8613912345678"), ("19912345678", "+8619912345678"),
    ("12912345678", None), ("043188888888", None), ("0044201234567", None), ("110", None),
    ("1391234567", None), ("139123456789", None), ("", None), (None, None),
    ("139 1234 5678", None), ("13912345678\n", None), ("１３９１２３４５６７８", None),
])
def test_only_a_chinese_mobile_gets_an_sms(number, mobile):
    assert dl.caller_mobile(number) == mobile


def test_the_case_open_plan_in_every_state():
    plan = dl.case_open_plan
    assert plan(open_case(), [], D0, "mobile") is None
    assert plan(open_case(), [], D0, "off") is dl.Skip.OFF
    assert plan(open_case(outcome="blocked"), [], D0, "mobile") is dl.Skip.BLOCKED
    assert plan(open_case(caller_class="partner"), [], D0, "mobile") is dl.Skip.NOT_MOBILE
    assert plan(open_case(caller_number="043188888888"), [], D0, "mobile") is dl.Skip.NOT_MOBILE
    assert plan(open_case(caller_number=None, caller_class="anonymous"), [], D0,
                "mobile") is dl.Skip.NOT_MOBILE
    assert plan(open_case(ended_at=D0), [], D0, "mobile") is dl.Skip.ENDED
    assert plan(open_case(started_at=D0 - timedelta(minutes=16)), [], D0, "mobile") is dl.Skip.TOO_OLD
    sent = dl.Try(1, D0 - timedelta(seconds=5), None)
    assert plan(open_case(), [sent], D0, "mobile") is dl.Skip.SENT
    failed = dl.Try(1, D0 - timedelta(seconds=30), D0 - timedelta(seconds=30))
    assert plan(open_case(), [failed], D0, "mobile") is dl.Skip.NOT_YET
    assert plan(open_case(), [failed], D0 + timedelta(seconds=31), "mobile") is None
    three = [dl.Try(n, D0 - timedelta(minutes=9), D0 - timedelta(minutes=9)) for n in (1, 2, 3)]
    assert plan(open_case(), three, D0, "mobile") is dl.Skip.GAVE_UP


def test_settings_and_public_urls_are_checked():
    assert dl.check_setting("mobile") == "mobile" and dl.check_setting("off") == "off"
    with pytest.raises(dl.DeliveryError):
        dl.check_setting("always")
    assert dl.upload_url("https://h.example.org/console/", "A" * 24) == \
        "https://h.example.org/console/u/" + "A" * 24
    assert dl.phone_view_url("http://127.0.0.1:22851", "c1") == "http://127.0.0.1:22851/cases/c1/phone"
    for bad in ("", "h.example.org", "https://h.example.org/#x", "https://h.example.org/?a=1",
                "https://u:p@h.example.org", "https://h.example.org/<script>", "file:///etc/passwd"):
        with pytest.raises(dl.DeliveryError):
            dl.public_base(bad)


def test_the_sms_text_is_chinese_first_and_fits_four_parts():
    url = "https://hotline.example.org/u/" + "A" * 24
    zh, en = dl.upload_link_text(url, "12-01 12:00")
    assert zh.startswith("【96608急诊热线】") and url in zh and url not in en
    assert len(f"{zh}\n{en}") <= 268
    group = dl.group_link_text(url, "12-01 12:00", "c1", dl.masked("13912345678"))
    assert "139****5678" in group and "13912345678" not in group and url in group


def test_since_words():
    assert dl.since_words(0) == ("0分", "0 min")
    assert dl.since_words(3599) == ("59分", "59 min")
    assert dl.since_words(3600 * 26 + 60 * 3) == ("26小时03分", "26 h 03 min")


def test_the_accepting_surgeon_is_texted_once_soon_and_only_on_a_mobile():
    from datetime import datetime, timedelta, timezone

    from photos.delivery import ACCEPTED_WINDOW, AcceptedCase, accepted_plan, phone_view_text

    now = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    case = AcceptedCase("C-1", "replant", now - timedelta(minutes=1), 3, "13800000003", "断肢(指)再植")
    assert accepted_plan(case, sent=False, now=now) is None
    assert accepted_plan(case, sent=True, now=now) == "sent"
    assert accepted_plan(case, sent=False, now=now + ACCEPTED_WINDOW) == "too_old"
    for phone in ("043188888888", None, "138\r\n00000003"):
        assert accepted_plan(AcceptedCase("C-1", None, now, 3, phone), sent=False, now=now) == "not_mobile"
    zh, en = phone_view_text("https://h.example.org/cases/C-1/phone", "C-1", "断肢(指)再植")
    assert "https://h.example.org/cases/C-1/phone" in zh and "C-1" in en and "断肢(指)再植" in zh
