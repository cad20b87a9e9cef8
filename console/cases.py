"""The case detail page (病例记录): timeline, caller and hospital, notes and disposition, recording.

Who sees a case: supervisors, department heads and admins every case; a
surgeon the cases they took part in (rung, or connected) -- anything else is
a 403 through `deny()`, which writes the refusal to the audit log. An unknown
case is a 404; a case id that is not of the form the case records use
(`CASE_ID_RE`) is a 404 before the database is asked.

The recording is served by `/cases/<id>/recording` with HTTP range requests
(the player seeks), `?download=1` as an attachment. Each request is audited
(`play_recording` / `download_recording`) *before* a byte is served; if the
audit cannot be written, the request fails and nothing is served. The
recording path in the database must lie inside the recordings directory
(`HotlineConfig.recordings_dir`, or `app.config["RECORDINGS_DIR"]` for an
app built without a config) once resolved -- symlinks and `..` included.
The player uses `preload="none"`, so opening the page plays (and audits) nothing.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

from flask import (Blueprint, Flask, abort, current_app, redirect, render_template, request,
                   send_file, url_for)

from carrier.twilio_recordings import remote_recordings
from cases.lifecycle import Case
from console.auth import audit, current_user, deny, signed_in
from console.calls import class_word, local, outcome_word, team_word
from console.i18n import add_words, t
from db.calls_query import (
    CASE_ID_RE,
    DISPOSITIONS,
    MAX_NOTE,
    CaseContext,
    CaseNote,
    add_case_note,
    case_context,
    case_notes,
)
from db.repo import CaseRepository
from db.users import User, UserRole
from routing.escalation import AttemptOutcome
from vault import VaultError, is_sealed_file, read_recording

logger = logging.getLogger(__name__)

bp = Blueprint("cases", __name__, url_prefix="/cases")
NAV: list = []  # a case is opened from the call list

NOTE_ROLES = (UserRole.ADMIN, UserRole.SUPERVISOR, UserRole.DEPARTMENT_HEAD)  # and participants
AUDIO_TYPES = {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".oga": "audio/ogg", ".opus": "audio/ogg", ".gsm": "audio/x-gsm"}
ROLES = ("primary", "backup", "attending", "department_head")
ATTEMPT_OUTCOMES = tuple(o.value for o in AttemptOutcome)
HANGUP_BY = ("caller", "surgeon", "system")

add_words({
    "case.back": {"zh": "返回来电记录", "en": "Back to the calls"},
    "case.started": {"zh": "来电时间", "en": "Started"},
    "case.ended": {"zh": "结束时间", "en": "Ended"},
    "case.caller": {"zh": "来电者", "en": "Caller"},
    "case.hospital": {"zh": "合作医院", "en": "Partner hospital"},
    "case.team": {"zh": "专业组", "en": "Team"},
    "case.outcome": {"zh": "结果", "en": "Outcome"},
    "case.language": {"zh": "语言", "en": "Language"},
    "case.timeline": {"zh": "时间线", "en": "Timeline"},
    "case.at": {"zh": "时间", "en": "When"},
    "case.event": {"zh": "事件", "en": "Event"},
    "case.detail": {"zh": "详情", "en": "Detail"},
    "case.event.started": {"zh": "来电", "en": "Call started"},
    "case.event.menu": {"zh": "菜单选择", "en": "Menu choice"},
    "case.event.ring": {"zh": "呼叫医生", "en": "Ringing"},
    "case.event.accepted": {"zh": "按1接听", "en": "Accepted"},
    "case.event.connected": {"zh": "已接通", "en": "Connected"},
    "case.event.voicemail": {"zh": "留言", "en": "Voicemail"},
    "case.event.ended": {"zh": "通话结束", "en": "Ended"},
    "case.ring_s": {"zh": "振铃秒数", "en": "rang (s)"},
    "case.answered": {"zh": "已摘机", "en": "picked up"},
    "case.nurse": {"zh": "值班护士", "en": "duty nurse"},
    "case.hangup_by": {"zh": "挂断方", "en": "Hung up by"},
    "case.hangup.caller": {"zh": "来电者", "en": "caller"},
    "case.hangup.surgeon": {"zh": "医生", "en": "surgeon"},
    "case.hangup.system": {"zh": "系统", "en": "system"},
    "case.role.primary": {"zh": "一线", "en": "primary"},
    "case.role.backup": {"zh": "二线", "en": "backup"},
    "case.role.attending": {"zh": "主治", "en": "attending"},
    "case.role.department_head": {"zh": "科主任", "en": "department head"},
    "case.attempt.accepted": {"zh": "按1接听", "en": "accepted"},
    "case.attempt.declined": {"zh": "按2拒绝", "en": "declined"},
    "case.attempt.no-answer": {"zh": "无应答", "en": "no answer"},
    "case.attempt.busy": {"zh": "占线", "en": "busy"},
    "case.attempt.failed": {"zh": "呼叫失败", "en": "failed"},
    "case.attempt.cancelled": {"zh": "已取消", "en": "cancelled"},
    "case.attempt.ringing": {"zh": "振铃中", "en": "ringing"},
    "case.recording": {"zh": "通话录音", "en": "Recording"},
    "case.download": {"zh": "下载录音", "en": "Download"},
    "case.no_recording": {"zh": "无录音", "en": "No recording"},
    "case.recording_missing": {"zh": "录音文件不可用", "en": "The recording file is not available"},
    "case.recording_at_carrier": {"zh": "录音尚在 Twilio，服务正在取回（几分钟内可播放）",
                                  "en": "The recording is still at Twilio; the service is "
                                        "fetching it (playable within minutes)"},
    "case.audited": {"zh": "每次播放和下载都会记入审计日志", "en": "Every play and download is audited"},
    "case.notes": {"zh": "医生记录与处置", "en": "Notes and disposition"},
    "case.no_notes": {"zh": "暂无记录", "en": "No notes yet"},
    "case.add_note": {"zh": "添加记录", "en": "Add a note"},
    "case.note_text": {"zh": "记录内容", "en": "Note"},
    "case.disposition": {"zh": "处置", "en": "Disposition"},
    "case.disposition.none": {"zh": "（不变）", "en": "(none)"},
    "case.disposition.consultation": {"zh": "已实时会诊", "en": "Consultation given"},
    "case.disposition.referral_accepted": {"zh": "同意转诊", "en": "Referral accepted"},
    "case.disposition.transfer_arranged": {"zh": "已安排转运", "en": "Transfer arranged"},
    "case.disposition.advice_only": {"zh": "仅提供建议", "en": "Advice only"},
    "case.current_disposition": {"zh": "当前处置", "en": "Current disposition"},
    "case.save": {"zh": "保存", "en": "Save"},
    "case.by": {"zh": "记录人", "en": "By"},
    "case.note_empty": {"zh": "请填写记录内容或选择处置", "en": "Write a note or choose a disposition"},
    "case.note_too_long": {"zh": f"记录内容最多 {MAX_NOTE} 个字符", "en": f"A note has at most {MAX_NOTE} characters"},
    "case.bad_disposition": {"zh": "处置类别无效", "en": "Unknown disposition"},
    "case.time_to_connect": {"zh": "接通用时", "en": "Time to surgeon"},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


# --------------------------------------------------------------------------- who may see what


def took_part(case: Case, surgeon_id: int | None) -> bool:
    """Whether the surgeon was rung for the case or connected to it."""
    return surgeon_id is not None and (case.connected_surgeon_id == surgeon_id
                                       or any(a.surgeon_id == surgeon_id for a in case.attempts))


def may_see(user: User, case: Case) -> bool:
    """Every case for staff; for a surgeon, the cases they took part in."""
    return user.role.sees_all_cases or took_part(case, user.surgeon_id)


def may_add_note(user: User, case: Case) -> bool:
    """Staff, and the surgeons who took part."""
    if user.role in NOTE_ROLES:
        return True
    return user.role is UserRole.SURGEON and may_see(user, case)


def load_case(case_id: str) -> Case | None:
    """The case, or None for an unknown one or an id no case can have."""
    from console import services

    if not CASE_ID_RE.fullmatch(case_id):
        return None
    return CaseRepository(services().engine).get(case_id)


def _visible_case(case_id: str) -> Case:
    case = load_case(case_id)
    if case is None:
        abort(404)
    if not may_see(current_user(), case):
        deny(f"case {case.case_id}: the surgeon took no part in it")
    return case


# --------------------------------------------------------------------------- the recording file


class OutsideRecordings(Exception):
    """A recording path that resolves outside the recordings directory."""


def recordings_dir() -> Path | None:
    from console import services

    config = services().config
    if config is not None:
        return config.recordings_dir
    configured = current_app.config.get("RECORDINGS_DIR")
    return Path(configured) if configured else None


def recording_file(case: Case) -> Path | None:
    """The case's recording as a file inside the recordings dir, or None if there is none.

    A relative path is taken from the recordings dir. Raises OutsideRecordings
    when the path (resolved: `..` and symlinks followed) leaves it.
    """
    base = recordings_dir()
    if not case.recording_path or base is None:
        return None
    try:
        root = base.resolve()
        path = Path(case.recording_path)
        if not path.is_absolute():
            path = root / path
        path = path.resolve()
    except (OSError, ValueError, RuntimeError):  # NUL in the path, a symlink loop
        return None
    if not path.is_relative_to(root):
        raise OutsideRecordings(case.case_id)
    return path if path.is_file() else None


def _playable(case: Case) -> bool:
    try:
        return recording_file(case) is not None
    except OutsideRecordings:
        return False


# --------------------------------------------------------------------------- timeline


def case_events(case: Case) -> list[dict[str, Any]]:
    """What happened, in time order (ties in the order of the call), as plain fields."""
    caller = case.caller
    events: list[dict[str, Any]] = [{
        "at": case.started_at, "kind": "started", "caller": caller.raw_safe,
        "caller_class": caller.caller_class.value, "hospital_id": caller.hospital_id,
        "language": case.language}]
    for m in case.menu:
        events.append({"at": m.at, "kind": "menu", "choice": m.choice, "label": m.label})
    for a in case.attempts:
        events.append({
            "at": a.started_at, "kind": "ring", "seq": a.seq, "attempt_kind": a.kind,
            "surgeon_id": a.surgeon_id, "name": a.name, "role": a.role,
            "outcome": a.outcome.value if a.outcome is not None else None,
            "ring_s": a.ring_s, "answered": a.answered, "ended_at": a.ended_at})
        if a.outcome is AttemptOutcome.ACCEPTED and a.ended_at is not None:
            events.append({"at": a.ended_at, "kind": "accepted", "seq": a.seq,
                           "surgeon_id": a.surgeon_id, "name": a.name})
    if case.connected_at is not None and case.connected_seq is not None:
        accepted = case.attempt(case.connected_seq)
        events.append({"at": case.connected_at, "kind": "connected", "seq": case.connected_seq,
                       "surgeon_id": case.connected_surgeon_id,
                       "name": accepted.name if accepted is not None else None})
    if case.voicemail_at is not None:
        events.append({"at": case.voicemail_at, "kind": "voicemail"})
    if case.ended_at is not None:
        events.append({"at": case.ended_at, "kind": "ended", "hangup_by": case.hangup_by,
                       "outcome": case.outcome})
    return sorted(events, key=lambda e: e["at"])


def current_disposition(notes: list[CaseNote]) -> CaseNote | None:
    """The newest note that records a disposition."""
    return next((n for n in reversed(notes) if n.disposition), None)


def time_to_connect_s(case: Case) -> float | None:
    if case.connected_at is None:
        return None
    return round((case.connected_at - case.started_at).total_seconds(), 3)


def _role_word(role: str) -> str:
    return t(f"case.role.{role}") if role in ROLES else role


def _attempt_word(outcome: str | None) -> str:
    if outcome is None:
        return t("case.attempt.ringing")
    return t(f"case.attempt.{outcome}") if outcome in ATTEMPT_OUTCOMES else outcome


def _hangup_word(by: str | None) -> str:
    return t(f"case.hangup.{by}") if by in HANGUP_BY else ""


def _disposition_word(disposition: str | None) -> str:
    return t(f"case.disposition.{disposition}") if disposition in DISPOSITIONS else ""


# --------------------------------------------------------------------------- the page


def _render(case: Case, *, note_error: str | None = None, note_text: str = "",
            note_disposition: str = "", status: int = 200,
            referral: dict[str, Any] | None = None):
    from console import services
    from console.callbacks import callback_panel
    from console.photos import photo_events
    from console.referrals import referral_panel

    engine = services().engine
    context: CaseContext = case_context(engine, case.case_id)
    notes = case_notes(engine, case.case_id, services().vault)
    user = current_user()
    return render_template(
        "case.html", case=case, context=context, notes=notes,
        events=sorted(case_events(case) + photo_events(case.case_id), key=lambda e: e["at"]),
        disposition=current_disposition(notes), dispositions=DISPOSITIONS,
        may_add_note=may_add_note(user, case), playable=_playable(case),
        at_carrier=any(r.kind == "call" for r in remote_recordings(case)),
        ttc=time_to_connect_s(case), note_error=note_error, note_text=note_text,
        note_disposition=note_disposition, max_note=MAX_NOTE, local=local,
        outcome_word=outcome_word, class_word=class_word, team_word=team_word,
        role_word=_role_word, attempt_word=_attempt_word, hangup_word=_hangup_word,
        disposition_word=_disposition_word,
        ref=referral_panel(case, user, **(referral or {})),
        cbp=callback_panel(case),
    ), status


@bp.get("/<case_id>")
@signed_in()
def detail(case_id: str):
    case = _visible_case(case_id)
    # As a recording play: the page holds the caller's whole number and the
    # notes, so it is audited first and shown only if that worked.
    audit("view_case", "case", case.case_id, page="case")
    return _render(case)


@bp.post("/<case_id>/notes")
@signed_in()
def add_note(case_id: str):
    case = _visible_case(case_id)
    user, text, disposition, error = posted_note(case)
    if error is not None:
        return _render(case, note_error=error, note_text=text[:MAX_NOTE],
                       note_disposition=disposition if disposition in DISPOSITIONS else "",
                       status=400)
    write_note(case, user, text, disposition)
    return redirect(url_for("cases.detail", case_id=case.case_id) + "#notes", code=303)


def posted_note(case: Case) -> tuple[User, str, str | None, str | None]:
    """The note this request's form posts for `case`: (user, text, disposition, why it
    cannot be written or None). A user who may not add one is denied (403, audited).
    The case page and the surgeon's phone view (console.photos) both read notes here."""
    user = current_user()
    if not may_add_note(user, case):
        deny(f"case {case.case_id}: may not add a note")
    text = request.form.get("text", "")
    disposition = request.form.get("disposition", "") or None
    return user, text, disposition, note_error(text, disposition)


def note_error(text: str, disposition: str | None) -> str | None:
    """Why this note cannot be written (the page's words), or None. Also the phone view's check."""
    if len(text) > MAX_NOTE:
        return t("case.note_too_long")
    if disposition is not None and disposition not in DISPOSITIONS:
        return t("case.bad_disposition")
    if not text.strip() and disposition is None:
        return t("case.note_empty")
    return None


def write_note(case: Case, user: User, text: str, disposition: str | None) -> int:
    """Write a checked note (note_error) and audit it (`add_note`); the surgeon's phone
    view (console.photos) writes its notes here too: one notes table, one audit."""
    from console import services

    hub = services()
    note_id = add_case_note(hub.engine, case.case_id, user_id=user.id,
                            surgeon_id=user.surgeon_id, text=text.strip(),
                            disposition=disposition, at=hub.clock(), vault=hub.vault)
    audit("add_note", "case", case.case_id, note=note_id, disposition=disposition,
          chars=len(text.strip()))
    return note_id


@bp.get("/<case_id>/recording")
@signed_in()
def recording(case_id: str):
    case = _visible_case(case_id)
    path: Path | None = None
    try:
        path = recording_file(case)
    except OutsideRecordings:
        logger.warning("case %s: its recording path lies outside the recordings dir; refused",
                       case.case_id)
        deny(f"case {case.case_id}: recording outside the recordings dir")
    if path is None:
        abort(404)
    download = request.args.get("download") == "1"
    detail: dict[str, Any] = {"bytes": request.headers.get("Range", "")[:64]} \
        if request.headers.get("Range") else {}
    # First the audit, then the file: if this raises, nothing is served.
    audit("download_recording" if download else "play_recording", "case", case.case_id, **detail)
    from console import services

    # A sealed recording (vault/) is opened in memory: the plain audio never
    # touches the disk. Range requests still work on the opened bytes.
    try:
        source = io.BytesIO(read_recording(path, services().vault)) \
            if is_sealed_file(path) else path
    except (VaultError, OSError) as exc:
        logger.error("case %s: its recording cannot be opened (%s)", case.case_id,
                     type(exc).__name__)
        abort(500)
    response = send_file(source, mimetype=AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                         conditional=True, as_attachment=download,
                         download_name=f"{case.case_id}{path.suffix.lower()}", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response
