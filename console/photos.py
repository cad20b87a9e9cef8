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

The surgeon's phone view (`/cases/<id>/phone`, the case page's rule) shows
the case on a phone; its photos arrive without a reload by polling
`/cases/<id>/phone/photos.json?after=<newest id>` every 3 s (static
phone_view.js: the CSP forbids inline script), and its disposition form
writes through console.cases' own note checks and writer. "Send the photo
link to the caller" (`POST /cases/<id>/send-upload-link`) makes a new link
and texts it (photos.sending), at most 3 times per 10 minutes per case.

Register with `register(app, csrf)` (console.pages.PAGE_MODULES).
"""
from __future__ import annotations

import hashlib
import io
import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import (Blueprint, Flask, abort, current_app, jsonify, redirect, render_template,
                   request, send_file, url_for)
from werkzeug.exceptions import RequestEntityTooLarge

from console.auth import audit, client_ip, current_user, deny, limiter, signed_in
from console.cases import MAX_NOTE as MAX_CASE_NOTE
from console.cases import (current_disposition, load_case, may_add_note, may_see, posted_note,
                           recordings_dir, write_note)
from console.i18n import add_words, current_lang, t
from db.photos import CasePhoto, LinkClosed, PhotoStore
from photos.delivery import DeliveryError, public_base, since_words, upload_url
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
    "case.event.photo": {"zh": "伤情照片", "en": "Wound photo"},
    "photos.phone_view": {"zh": "手机查看", "en": "Phone view"},
    "photos.phone_view_hint": {"zh": "在手机上打开此页，照片到达时自动显示",
                               "en": "Open this page on your phone: photos appear as they arrive"},
    "photos.send_link": {"zh": "发送照片上传链接给来电者", "en": "Send the photo link to the caller"},
    "photos.send.sent": {"zh": "照片上传链接已发送", "en": "The photo link was sent"},
    "photos.send.failed": {"zh": "发送失败，请稍后重试", "en": "Sending failed; try again shortly"},
    "photos.send.none": {"zh": "无法发送：来电者不是手机号码，或未配置短信/企业微信",
                         "en": "Cannot send: the caller is not on a mobile, or SMS/WeChat is not set up"},
    "photos.send.too_many": {"zh": "发送过于频繁，请稍后再试", "en": "Sent too often; try again later"},
    "photos.send.no_url": {"zh": "无法发送：未配置控制台的公网地址 (HOTLINE_CONSOLE_PUBLIC_URL)",
                           "en": "Cannot send: the console's public address is not configured "
                                 "(HOTLINE_CONSOLE_PUBLIC_URL)"},
    "photos.send.no_url_link": {"zh": "无法生成链接：未配置控制台的公网地址 (HOTLINE_CONSOLE_PUBLIC_URL)",
                                "en": "No link was made: the console's public address is not "
                                      "configured (HOTLINE_CONSOLE_PUBLIC_URL)"},
    "phone.since_injury": {"zh": "受伤至今", "en": "Since the injury"},
    "phone.since_call": {"zh": "来电至今", "en": "Since the call"},
    "phone.live": {"zh": "新照片会自动出现，无需刷新", "en": "New photos appear without reloading"},
    "phone.offline": {"zh": "暂时无法获取新照片，正在重试", "en": "Cannot fetch new photos; retrying"},
    "phone.stopped": {"zh": "已停止更新，请重新登录", "en": "Updates stopped; sign in again"},
    "phone.saved": {"zh": "已保存", "en": "Saved"},
    "phone.full_case": {"zh": "完整病例", "en": "The whole case"},
})

SEND_LIMIT_PER_CASE = "3 per 10 minutes"  # each send texts the caller: no SMS bombing by button
SEND_STATES = ("sent", "failed", "none", "no_url", "no_url_link", "too_many")


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
    if request.endpoint == "photos.send_link":
        case_id = (request.view_args or {}).get("case_id", "")
        return redirect(_back(case_id, "too_many"), code=303)
    # Otherwise the upload page: the caller gets their page, not the console's.
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
                           links=links, local=_local, may_link=may_add_note(current_user(), case),
                           link_state=request.args.get("link", "") if request.args.get("link")
                           in SEND_STATES else "")


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
    base = public_url()
    if not base:
        # Never the address this request came in on (the Host header is the
        # sender's word): no public address, no link -- and none is made.
        return redirect(url_for("photos.case_photos", case_id=case.case_id, link="no_url_link"),
                        code=303)
    try:
        token, link = store.create_link(case.case_id, by=user.actor, ip=client_ip())
    except LinkError:
        abort(404)
    url = upload_url(base, token)
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


# --------------------------------------------------------------------------- the case timeline


def photo_events(case_id: str) -> list[dict]:
    """The case's photos as timeline events (console.cases' page adds them to its own)."""
    if recordings_dir() is None:
        return []
    return [{"at": p.at, "kind": "photo", "photo_id": p.id, "sender": p.sender,
             "sender_word": _sender_word(p.sender), "note": p.note}
            for p in _store().photos_of(case_id)]


def _sender_word(sender: str) -> str:
    if sender == "caller":
        return t("photos.sender.caller")
    return f"{t('photos.sender.surgeon')} {sender.partition(':')[2]}"


# --------------------------------------------------------------------------- the surgeon's phone view


def _since(case) -> tuple[datetime, bool]:
    """(from when, whether it is the injury): the referral's time of injury, else the call's start."""
    from console import services
    from db.referrals import ReferralStore

    listed = ReferralStore(services().engine).get_by_case(case.case_id)
    injured_at = listed.referral.patient.injured_at if listed is not None else None
    return (injured_at, True) if injured_at is not None else (case.started_at, False)


def _photo_json(case_id: str, p: CasePhoto) -> dict:
    return {"id": p.id, "at": _local(p.at), "sender": _sender_word(p.sender), "note": p.note,
            "thumb": url_for("photos.thumb", case_id=case_id, photo_id=p.id),
            "full": url_for("photos.photo", case_id=case_id, photo_id=p.id)}


@bp.get("/cases/<case_id>/phone")
@signed_in()
def phone_view(case_id: str):
    case = _visible_case(case_id)
    audit("view_case", "case", case.case_id, page="phone")  # as the case page (console.cases)
    return _phone_page(case)


def _phone_page(case, *, status: int = 200, note_error: str | None = None, note_text: str = ""):
    from console import listed_number, services
    from console.calls import team_word
    from db.calls_query import DISPOSITIONS, case_context, case_notes

    hub = services()
    # An app without a recordings dir (a test's) has no photos to show: the rest of the page still works.
    photos = _store().photos_of(case.case_id) if recordings_dir() is not None else []
    since, injury = _since(case)
    notes = case_notes(hub.engine, case.case_id, hub.vault)
    context = case_context(hub.engine, case.case_id)
    words = since_words((hub.clock() - since).total_seconds())
    link_state = request.args.get("link", "")
    return render_template(
        "phone_case.html", case=case, photos=[_photo_json(case.case_id, p) for p in photos],
        after=photos[-1].id if photos else 0, caller=listed_number(case.caller.raw_safe),
        hospital=context.hospital_name, team=team_word(case.team, context.team_name_zh,
                                                       context.team_name_en),
        since_iso=since.isoformat(), since_label=t("phone.since_injury" if injury else "phone.since_call"),
        since_text=words[0] if current_lang() == "zh" else words[1],
        notes=notes, disposition=current_disposition(notes), dispositions=DISPOSITIONS,
        may_add_note=may_add_note(current_user(), case), started=_local(case.started_at),
        link_state=link_state if link_state in SEND_STATES else "",
        saved=request.args.get("saved") == "1", local=_local, note_error=note_error,
        note_text=note_text,
    ), status


@bp.get("/cases/<case_id>/phone/photos.json")
@signed_in()
def phone_photos(case_id: str):
    """The case's photos after `?after=<id>` (the page's newest), for the phone view's polling."""
    case = _visible_case(case_id)
    raw = request.args.get("after", "0")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 10:
        abort(400)
    photos = _store().photos_after(case.case_id, int(raw))
    response = jsonify({"photos": [_photo_json(case.case_id, p) for p in photos]})
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/cases/<case_id>/phone/notes")
@signed_in()
def phone_note(case_id: str):
    """The phone view's disposition and note: the case page's checks and writer (console.cases)."""
    case = _visible_case(case_id)
    user, text, disposition, error = posted_note(case)
    if error is not None:
        return _phone_page(case, status=400, note_error=error, note_text=text[:MAX_CASE_NOTE])
    write_note(case, user, text, disposition)
    return redirect(url_for("photos.phone_view", case_id=case.case_id, saved=1) + "#notes", code=303)


def public_url() -> str:
    """The console's public address (`HOTLINE_CONSOLE_PUBLIC_URL`; a test app's
    `CONSOLE_PUBLIC_URL`), checked, without a trailing '/'; "" if none is usable.

    Every absolute link the console builds starts here, never at the request's
    Host header: that is whoever sent the request's word, so a link built
    from it could send a caller's photos to another site."""
    from console import services

    config = services().config
    configured = config.console_public_url if config is not None \
        else current_app.config.get("CONSOLE_PUBLIC_URL", "")
    if not configured:
        return ""
    try:
        return public_base(configured)
    except DeliveryError:
        logger.warning("the console's public URL is not a usable http(s) URL: no links are built")
        return ""


def _send_key() -> str:
    return "send-upload-link:" + (request.view_args or {}).get("case_id", "")[:64]


def _back(case_id: str, state: str) -> str:
    page = "photos.case_photos" if request.form.get("back") == "photos" else "photos.phone_view"
    return url_for(page, case_id=case_id, link=state)


@bp.post("/cases/<case_id>/send-upload-link")
@signed_in()
@limiter.limit(SEND_LIMIT_PER_CASE, key_func=_send_key)
def send_link(case_id: str):
    """A surgeon asks (during the call) for the caller to get an upload link: a new link by
    SMS to the caller's mobile and into the team's WeChat group; audited (photos.sending)."""
    from console import services
    from photos.sending import sender_from_config

    case = _visible_case(case_id)
    user = current_user()
    if not may_add_note(user, case):
        deny(f"case {case.case_id}: may not send an upload link")
    config = services().config
    if config is None or not public_url():
        # Never the address this request came in on: the Host header is the
        # sender's word (and behind the TLS proxy it is the loopback address).
        return redirect(_back(case.case_id, "no_url"), code=303)
    try:
        sender = sender_from_config(_store(), config, [case.team] if case.team else [])
        delivery = sender.send(case.case_id, case.caller.number, case.team, by=user.actor,
                               group=True, ip=client_ip())
    except DeliveryError:
        return redirect(_back(case.case_id, "none"), code=303)
    except LinkError:
        abort(404)
    return redirect(_back(case.case_id, "sent" if delivery.sent else "failed"), code=303)
