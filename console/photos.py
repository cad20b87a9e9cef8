"""Wound photos: the caller's upload page (`/u/<token>`) and the staff's photo routes.

The caller needs no account: the token in the link is the capability (144
random bits, one case, 2 hours, 20 photos; photos.links). Every way a token
can fail -- unknown, expired, revoked, used up -- gets the same 404 page, so
the page is no oracle for guessing. Uploads are rate-limited per link and per
address (Flask-Limiter, the limiter of console.auth), and one POST may be up
to `MAX_POST_BYTES` (the console's 2 MB limit is lifted for this view only,
before the body is read; a larger Content-Length is refused unread).

Staff see a case's photos under the rule of its recording (console.cases:
every case for staff, a surgeon the cases they took part in); each photo or
thumbnail served is audited (`view_photo`) before a byte leaves, opened from
its seal in memory, `Cache-Control: private, no-store`.

Register with `register(app, csrf)` (console.pages.PAGE_MODULES).
"""
from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import (Blueprint, Flask, abort, redirect, render_template, request,
                   send_file, url_for)
from werkzeug.exceptions import RequestEntityTooLarge

from console.auth import audit, client_ip, current_user, deny, limiter, signed_in
from console.cases import load_case, may_add_note, may_see, recordings_dir
from console.i18n import add_words
from db.photos import CasePhoto, LinkClosed, PhotoStore
from photos.files import OutsidePhotos
from photos.images import PhotoRejected, process
from photos.links import LinkError, LinkRefusal, looks_like_token, may_upload
from photos.rules import (MAX_BYTES, MAX_FILES_PER_POST, MAX_NOTE, MAX_POST_BYTES, NoteError,
                          PhotoRefusal, check_size, clean_note)
from vault import VaultError

logger = logging.getLogger(__name__)
SH = ZoneInfo("Asia/Shanghai")

bp = Blueprint("photos", __name__)
NAV: list = []  # photos are opened from a case

# A caller sends a few photos a few times; a guesser gets nowhere in 144 bits,
# but the page still should not answer one address thousands of times.
PAGE_LIMIT = "60 per 10 minutes"
UPLOAD_LIMIT_PER_ADDRESS = "20 per 10 minutes"
UPLOAD_LIMIT_PER_LINK = "20 per 10 minutes"

add_words({
    "photos.title": {"zh": "伤情照片", "en": "Wound photos"},
    "photos.none": {"zh": "暂无照片", "en": "No photos yet"},
    "photos.sender.caller": {"zh": "来电者", "en": "caller"},
    "photos.sender.surgeon": {"zh": "医生", "en": "surgeon"},
    "photos.audited": {"zh": "每次查看照片都会记入审计日志", "en": "Every view of a photo is audited"},
    "photos.new_link": {"zh": "生成上传链接", "en": "Make an upload link"},
    "photos.link_once": {"zh": "此链接只显示一次，请立即发送给来电者",
                         "en": "This link is shown once: send it to the caller now"},
    "photos.link_expires": {"zh": "有效期至", "en": "Valid until"},
    "photos.link_max": {"zh": "最多照片数", "en": "Photos at most"},
    "photos.links": {"zh": "上传链接", "en": "Upload links"},
    "photos.revoke": {"zh": "作废", "en": "Revoke"},
    "photos.revoked": {"zh": "已作废", "en": "revoked"},
    "photos.expired": {"zh": "已过期", "en": "expired"},
    "photos.open": {"zh": "有效", "en": "open"},
    "photos.back": {"zh": "返回病例", "en": "Back to the case"},
    "photos.size": {"zh": "尺寸", "en": "Size"},
    "photos.note": {"zh": "说明", "en": "Note"},
})


def register(app: Flask, csrf) -> None:
    # The upload form has no session and no CSRF token to carry: the token in
    # its URL is the capability, and a forged cross-site POST could only send
    # photos into the case whose link the forger already holds.
    csrf.exempt(upload)
    app.register_blueprint(bp)


def _store() -> PhotoStore:
    from console import services

    hub = services()
    root = recordings_dir()
    if root is None:
        logger.error("photos: no recordings dir is configured; a photo cannot be kept")
        abort(503)
    return PhotoStore(hub.engine, root, hub.vault, hub.clock)


def _link_key() -> str:
    token = (request.view_args or {}).get("token", "")
    return "upload-link:" + hashlib.sha256(token[:64].encode("utf-8", "replace")).hexdigest()[:32]


def _local(at: datetime) -> str:
    return at.astimezone(SH).strftime("%Y-%m-%d %H:%M")


# --------------------------------------------------------------------------- the caller's page


def _gone():
    return render_template("photo_gone.html"), 404


@bp.route("/u/<token>", methods=["GET", "POST"])
@limiter.limit(PAGE_LIMIT)
@limiter.limit(UPLOAD_LIMIT_PER_ADDRESS, methods=["POST"])
@limiter.limit(UPLOAD_LIMIT_PER_LINK, key_func=_link_key, methods=["POST"])
def upload(token: str):
    if not looks_like_token(token):
        return _gone()
    store = _store()
    link = store.link_for(token)
    refusal = may_upload(link, store.clock())
    if refusal is not None or link is None:
        logger.info("upload link refused (%s)", (refusal or LinkRefusal.UNKNOWN).value)
        return _gone()
    if request.method == "GET":
        return _upload_page(link)
    # Lift the console's 2 MB limit for this view only; werkzeug refuses a larger
    # Content-Length before reading the body, and cuts a stream without one.
    request.max_content_length = MAX_POST_BYTES
    try:
        files = [f for f in request.files.getlist("photos") if f.filename or f.content_length]
        raw_note = request.form.get("note", "")
    except RequestEntityTooLarge:
        return _upload_page(link, error=PhotoRefusal.TOO_LARGE.words, status=413)
    if not files:
        return _upload_page(link, error=("请选择照片", "Choose a photo"), status=400)
    if len(files) > MAX_FILES_PER_POST:
        return _upload_page(link, error=(f"每次最多 {MAX_FILES_PER_POST} 张",
                                         f"At most {MAX_FILES_PER_POST} photos at a time"), status=400)
    try:
        note = clean_note(raw_note)
    except NoteError:
        return _upload_page(link, error=(f"说明最多 {MAX_NOTE} 字", f"A note has at most {MAX_NOTE} characters"),
                            status=400, note=raw_note[:MAX_NOTE])
    stored: list[CasePhoto] = []
    refused: list[tuple[int, tuple[str, str]]] = []
    for number, upload_file in enumerate(files, 1):
        data = upload_file.stream.read(MAX_BYTES + 1)
        try:
            size_refusal = check_size(len(data))
            if size_refusal is not None:
                raise PhotoRejected(size_refusal)
            photo = process(data)
        except PhotoRejected as exc:
            logger.info("case %s: an uploaded file was refused (%s)", link.case_id, exc.refusal.value)
            refused.append((number, exc.refusal.words))
            continue
        try:
            stored.append(store.add_photo(link, photo, note=note, ip=client_ip()))
        except LinkClosed as exc:
            logger.info("case %s: upload link %s closed mid-post (%s)", link.case_id, link.id,
                        exc.refusal.value)
            refused.append((number, ("链接已用完或已失效", "The link is used up or closed")))
            if not stored:
                return _gone()
            break
    link = store.link_for(token) or link
    status = 200 if stored else 422
    return _upload_page(link, stored=len(stored), refused=refused, status=status)


def _upload_page(link, *, error: tuple[str, str] | None = None, stored: int = 0,
                 refused: list | None = None, status: int = 200, note: str = ""):
    from console import services

    still_open = may_upload(link, services().clock()) is None
    return render_template("photo_upload.html", error=error, stored=stored, refused=refused or [],
                           left=link.left, still_open=still_open, until=_local(link.expires_at),
                           max_files=MAX_FILES_PER_POST, max_note=MAX_NOTE, note=note,
                           max_mb=MAX_BYTES // (1024 * 1024)), status


@bp.errorhandler(429)
def too_many(_exc):
    # Only the upload page is limited in this blueprint: the caller gets their page, not the console's.
    return render_template("photo_upload.html", error=("请求过于频繁，请稍后再试",
                                                      "Too many uploads; try again later"),
                           stored=0, refused=[], left=0, still_open=False, until="",
                           max_files=MAX_FILES_PER_POST, max_note=MAX_NOTE, note="",
                           max_mb=MAX_BYTES // (1024 * 1024)), 429


# --------------------------------------------------------------------------- staff


def _visible_case(case_id: str):
    # The recording's rule (console.cases): 404 for an unknown case, 403 (audited) for a surgeon
    # who took no part in it.
    case = load_case(case_id)
    if case is None:
        abort(404)
    if not may_see(current_user(), case):
        deny(f"case {case.case_id}: the surgeon took no part in it")
    return case


@bp.get("/cases/<case_id>/photos")
@signed_in()
def case_photos(case_id: str):
    case = _visible_case(case_id)
    store = _store()
    now = store.clock()
    links = [(link, "revoked" if link.revoked_at else ("expired" if now >= link.expires_at else "open"))
             for link in store.links_of(case.case_id)]
    return render_template("photo_case.html", case=case, photos=store.photos_of(case.case_id),
                           links=links, local=_local, may_link=may_add_note(current_user(), case))


def _serve(case_id: str, photo_id: int, thumb: bool):
    case = _visible_case(case_id)
    store = _store()
    photo = store.photo(case.case_id, photo_id)
    if photo is None:
        abort(404)
    # First the audit, then the file: if the audit cannot be written, nothing is served.
    audit("view_photo", "case", case.case_id, photo=photo.id, thumb=thumb)
    try:
        data = store.read(photo, thumb=thumb)
    except OutsidePhotos:
        logger.warning("case %s: photo %s lies outside the recordings dir; refused", case.case_id,
                       photo.id)
        abort(404)
    except (VaultError, OSError) as exc:
        logger.error("case %s: photo %s cannot be opened (%s)", case.case_id, photo.id,
                     type(exc).__name__)
        abort(500)
    response = send_file(io.BytesIO(data), mimetype="image/jpeg", max_age=0,
                         download_name=f"{case.case_id}-{photo.id}{'-thumb' if thumb else ''}.jpg")
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.get("/cases/<case_id>/photos/<int:photo_id>")
@signed_in()
def photo(case_id: str, photo_id: int):
    return _serve(case_id, photo_id, thumb=False)


@bp.get("/cases/<case_id>/photos/<int:photo_id>/thumb")
@signed_in()
def thumb(case_id: str, photo_id: int):
    return _serve(case_id, photo_id, thumb=True)


@bp.post("/cases/<case_id>/upload-link")
@signed_in()
def new_link(case_id: str):
    case = _visible_case(case_id)
    user = current_user()
    if not may_add_note(user, case):
        deny(f"case {case.case_id}: may not make an upload link")
    store = _store()
    try:
        token, link = store.create_link(case.case_id, by=user.actor, ip=client_ip())
    except LinkError:
        abort(404)
    url = url_for("photos.upload", token=token, _external=True)
    return render_template("photo_link.html", case=case, url=url, link=link,
                           until=_local(link.expires_at)), 201


@bp.post("/cases/<case_id>/upload-links/<int:link_id>/revoke")
@signed_in()
def revoke_link(case_id: str, link_id: int):
    case = _visible_case(case_id)
    user = current_user()
    if not may_add_note(user, case):
        deny(f"case {case.case_id}: may not revoke an upload link")
    if not _store().revoke_link(case.case_id, link_id, by=user.actor, ip=client_ip()):
        abort(404)
    return redirect(url_for("photos.case_photos", case_id=case.case_id), code=303)
