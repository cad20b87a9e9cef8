"""Upload links and image rules (photos.links, photos.rules): pure, time passed in."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

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
