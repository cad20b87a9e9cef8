"""One caller's data on request (PIPL art. 45, right of access and copy), as a zip.

The zip holds `cases.json` (every case of that number: ring attempts, menu
events, notes, referral and its events, callback task, the notices sent about
it, and the callback calls placed back to it, the wound photos it sent), the
recording and voicemail files of those cases, the photos themselves (opened
from their seals, `photos/`), and README.txt (zh + en). Written atomically (a
temporary file, then a hard link that refuses an existing name), mode 0600.

What is left out on purpose: other people's personal information -- the
surgeons' phone numbers on ring attempts, and which staff account placed or
closed a task or changed a referral (PIPL art. 45 gives the caller *their*
information). Audited before the file appears (action "privacy_export",
subject "number", subject_id the masked number); neither the audit log nor
the log ever holds the full number.
"""
from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select

from db.models import (CallbackRow, CaseNoteRow, CasePhotoRow, CaseRow, DialAttemptRow,
                       MenuEventRow, NoticeRow, ReferralEventRow, ReferralRow)
from db.users import audit_row
from oncall.model import HOTLINE_TZ
from photos.files import OutsidePhotos, read_photo
from privacy.files import Where, locate
from routing.callers import mask_number, normalise_number, safe_text

if TYPE_CHECKING:
    from vault import Vault

logger = logging.getLogger(__name__)

ACTION = "privacy_export"
MAX_NUMBER_INPUT = 64  # characters; a phone number with separators is far shorter
_MEMBER_SAFE = re.compile(r"[^A-Za-z0-9._-]")
AUDIO_SUFFIXES = frozenset({".wav", ".mp3", ".gsm", ".ogg", ".opus", ".sln"})
_LINK_DEPTH = 5  # callback chains: a callback of a callback ... (bounded, never a loop)


class ExportError(ValueError):
    """The export cannot be made as asked (the message says why; it never echoes the number)."""


def read_recording(path: Path) -> bytes:
    """The audio of a stored recording (plain bytes for now; the vault will decrypt here)."""
    return path.read_bytes()


# -- pure --------------------------------------------------------------------------


def check_number(raw: object) -> str:
    """The normalised number (routing.callers.normalise_number) or ExportError.

    Refuses what is not text, longer than MAX_NUMBER_INPUT, or not a phone
    number (SQL or shell metacharacters, look-alike digits such as '１３９').
    """
    if not isinstance(raw, str):
        raise ExportError("the number must be text")
    if len(raw) > MAX_NUMBER_INPUT:
        raise ExportError(f"not a phone number (longer than {MAX_NUMBER_INPUT} characters) "
                          "/ 不是有效的电话号码")
    number = normalise_number(raw)
    if number is None:
        raise ExportError("not a phone number: ASCII digits, an optional leading +, spaces or "
                          "dashes / 不是有效的电话号码")
    return number


def member_name(case_id: str, kind: str, stored: str) -> str:
    """The zip member of a case's audio: recordings/<case id>-<call|voicemail><suffix>."""
    suffix = Path(stored).suffix.lower()
    if suffix not in AUDIO_SUFFIXES:
        suffix = ".bin"
    return f"recordings/{_MEMBER_SAFE.sub('_', case_id)}-{kind}{suffix}"


def readme_text(masked: str, now: datetime, n_cases: int, n_files: int,
                missing: int) -> str:
    local = now.astimezone(ZoneInfo(HOTLINE_TZ)).strftime("%Y-%m-%d %H:%M")
    return f"""96608 急诊创伤整形修复热线 —— 个人信息副本
96608 emergency trauma & plastic-surgery hotline -- copy of personal information

号码 / Number: {masked}
生成时间 / Made at: {local} (Asia/Shanghai)
病例记录 / Case records: {n_cases}
录音文件 / Audio files: {n_files}{f'''
未能附上的录音 / Audio not included: {missing} (已按保存期限删除或无法读取 / deleted at the end of its retention period, or unreadable)''' if missing else ''}

内容 (依据《个人信息保护法》第四十五条提供):
- cases.json: 该号码的每一次来电记录: 菜单选择、呼叫医生的经过 (医生姓名与职务,
  不含医生的电话号码)、接通与挂断时间、医生备注、转诊及其状态变化、回拨任务、
  就该来电发出的通知, 以及热线回拨该号码的通话。时间均为 UTC (ISO 8601)。
- recordings/: 通话录音 (<病例号>-call.*) 与语音留言 (<病例号>-voicemail.*)。
  录音保存 3 年, 病例记录保存 15 年, 到期删除。
- photos/: 来电者发送的伤情照片 (<病例号>-<照片号>.jpg), 与录音同期删除。

Contents (provided under art. 45 of the Personal Information Protection Law):
- cases.json: every call from this number: menu choices, the surgeons rung
  (name and role, without their phone numbers), when it connected and ended,
  the surgeons' notes, the referral and its status changes, the callback
  task, the notices sent about the call, and the calls the hotline placed
  back to this number. Times are UTC (ISO 8601).
- recordings/: call recordings (<case id>-call.*) and voicemails
  (<case id>-voicemail.*). Recordings are kept 3 years and case records
  15 years, then deleted.
- photos/: the wound photos the caller sent (<case id>-<photo id>.jpg),
  deleted with the recordings.

此文件含敏感个人信息 (医疗健康), 请妥善保管。
This file holds sensitive personal information (health): keep it safe.
"""


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _plain(row: Any, columns: Iterable[str]) -> dict[str, Any]:
    return {c: _iso(getattr(row, c)) for c in columns}


_CASE_FIELDS = ("case_id", "caller_number", "caller_class", "caller_raw_safe", "partner_hospital_id",
                "language", "team", "started_at", "connected_at", "connected_surgeon_id",
                "ended_at", "hangup_by", "outcome", "recording_s", "voicemail_at", "linked_case_id")
_ATTEMPT_FIELDS = ("seq", "kind", "surgeon_id", "name", "role", "started_at", "ended_at", "ring_s",
                   "answered", "outcome")  # not `phone`: the surgeon's, not the caller's
_REFERRAL_FIELDS = ("id", "hospital_id", "status", "team", "surgeon_id", "patient_age",
                    "patient_sex", "injury", "injured_at", "created_at", "updated_at")
_CALLBACK_FIELDS = ("id", "reason", "due_at", "status", "created_at", "number", "team",
                    "attempts", "placed_at", "callback_case_id", "closed_at", "note")


# -- adapter -------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    masked_number: str
    cases: int
    files: int
    missing_files: int
    bytes: int
    out: Path


def _case_ids(conn: Any, number: str) -> list[str]:
    """Cases from the number, cases whose callback task calls it, and callbacks placed back to them."""
    ids = set(conn.execute(select(CaseRow.case_id).where(CaseRow.caller_number == number)).scalars())
    ids |= set(conn.execute(select(CallbackRow.case_id).where(CallbackRow.number == number)).scalars())
    frontier = set(ids)
    for _ in range(_LINK_DEPTH):
        if not frontier:
            break
        found = set()
        for chunk in _chunked(sorted(frontier)):
            found |= set(conn.execute(select(CaseRow.case_id)
                                      .where(CaseRow.linked_case_id.in_(chunk))).scalars())
        frontier = found - ids
        ids |= frontier
    return sorted(ids)


def _chunked(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def plain_note(stored: str, case_id: str) -> str:
    """A note's text as stored (the default; the vault's `open_note` replaces it when notes are sealed)."""
    return stored


def _case_document(conn: Any, case: Any, open_note: Callable[[str, str], str]) -> dict[str, Any]:
    doc = _plain(case, _CASE_FIELDS)
    doc["caller_raw"] = case.caller_raw  # the caller-ID as received: the caller's own data
    doc["menu_events"] = [_plain(r, ("seq", "at", "choice", "label")) for r in conn.execute(
        select(MenuEventRow).where(MenuEventRow.case_id == case.case_id).order_by(MenuEventRow.seq))]
    doc["attempts"] = [_plain(r, _ATTEMPT_FIELDS) for r in conn.execute(
        select(DialAttemptRow).where(DialAttemptRow.case_id == case.case_id)
        .order_by(DialAttemptRow.seq))]
    doc["notes"] = [{**_plain(r, ("at", "surgeon_id", "disposition")),
                     "text": open_note(r.text, case.case_id)} for r in conn.execute(
        select(CaseNoteRow).where(CaseNoteRow.case_id == case.case_id)
        .order_by(CaseNoteRow.at, CaseNoteRow.id))]
    referral = conn.execute(select(ReferralRow).where(ReferralRow.case_id == case.case_id)).first()
    doc["referral"] = None
    if referral is not None:
        doc["referral"] = _plain(referral, _REFERRAL_FIELDS)
        doc["referral"]["events"] = [_plain(r, ("at", "status", "note")) for r in conn.execute(
            select(ReferralEventRow).where(ReferralEventRow.referral_id == referral.id)
            .order_by(ReferralEventRow.at, ReferralEventRow.id))]
    callback = conn.execute(select(CallbackRow).where(CallbackRow.case_id == case.case_id)).first()
    doc["callback"] = _plain(callback, _CALLBACK_FIELDS) if callback is not None else None
    prefixes = [f"missed:{case.case_id}:"]
    if callback is not None:
        prefixes.append(f"callback-due:{callback.id}:")
    notices: dict[tuple[str, str], dict[str, Any]] = {}
    for prefix in prefixes:
        for r in conn.execute(select(NoticeRow).where(NoticeRow.key.startswith(prefix, autoescape=True))
                              .order_by(NoticeRow.id)):
            # One notice goes to several recipients with the same text: once is enough.
            notices.setdefault((r.kind, r.text_zh), _plain(
                r, ("kind", "created_at", "sent_at", "text_zh", "text_en")))
    doc["notices"] = list(notices.values())
    # The wound photos the caller sent (issue 11): listed here, the JPEGs in photos/.
    doc["photos"] = [{**_plain(r, ("at", "sender", "width", "height", "sha256")), "id": r.id,
                      "note": open_note(r.note, case.case_id), "path": r.path}
                     for r in conn.execute(select(CasePhotoRow).where(
                         CasePhotoRow.case_id == case.case_id)
                         .order_by(CasePhotoRow.at, CasePhotoRow.id))]
    return doc


def photo_member(case_id: str, photo_id: int) -> str:
    """The zip member of a case's photo: photos/<case id>-<photo id>.jpg."""
    return f"photos/{_MEMBER_SAFE.sub('_', case_id)}-{int(photo_id)}.jpg"


def export_patient(engine: Engine, raw_number: str, out: Path, recordings_dir: Path,
                   now: datetime, actor: str, *, ip: str = "",
                   read: Callable[[Path], bytes] = read_recording,
                   open_note: Callable[[str, str], str] = plain_note,
                   vault: "Vault | None" = None) -> ExportSummary:
    """Write the zip of one number's data to `out` (which must not exist) and audit it.

    `read` reads an audio file and `open_note(stored, case_id)` a note's text:
    the places where sealed (encrypted) data is opened; the case's wound photos
    are opened from their seals with `vault` (photos.files.read_photo; None:
    plain files only, a sealed photo raises VaultError). Raises ExportError
    for a bad number or target; the audit row is written
    (in its own transaction) before the file takes its name, so an export
    that is not audited is not delivered.
    """
    number = check_number(raw_number)
    masked = mask_number(number)
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ExportError("the output file exists already; choose a new name / 输出文件已存在")
    if not out.parent.is_dir():
        raise ExportError("the output file's directory does not exist / 输出目录不存在")
    with engine.connect() as conn:
        ids = _case_ids(conn, number)
        cases = []
        for chunk in _chunked(ids):
            cases += list(conn.execute(select(CaseRow).where(CaseRow.case_id.in_(chunk))))
        cases.sort(key=lambda c: (c.started_at, c.case_id))
        documents = [_case_document(conn, case, open_note) for case in cases]
    files: list[tuple[str, Path]] = []
    photo_files: list[tuple[str, bytes]] = []  # opened from their seals, in memory
    missing = 0
    for case, doc in zip(cases, documents):
        for kind, stored in (("call", case.recording_path), ("voicemail", case.voicemail_path)):
            key = "recording" if kind == "call" else "voicemail"
            if stored is None:
                # recording_s / voicemail_at without a path: deleted by the retention purge.
                purged = (case.recording_s if kind == "call" else case.voicemail_at) is not None
                doc[key] = {"included": False, "reason": "deleted (retention)"} if purged else None
                if purged:
                    missing += 1
                continue
            located = locate(Path(recordings_dir), stored)
            if located.where is Where.INSIDE:
                name = member_name(case.case_id, kind, stored)
                files.append((name, located.path))  # type: ignore[arg-type]
                doc[key] = {"included": True, "file": name}
            else:
                if located.where is Where.REFUSED:
                    logger.warning("privacy export: case %s %s path lies outside the recordings "
                                   "dir; not included", safe_text(case.case_id), kind)
                doc[key] = {"included": False, "reason": {
                    Where.MISSING: "file not found", Where.REMOTE: "still at the carrier",
                    Where.REFUSED: "not readable"}[located.where]}
                missing += 1
    for case, doc in zip(cases, documents):
        for photo in doc["photos"]:
            stored = photo.pop("path")
            try:
                data = read_photo(Path(recordings_dir), stored, case.case_id, vault)
            except OutsidePhotos:
                photo.update(included=False, reason="file not found")
                missing += 1
                continue
            name = photo_member(case.case_id, photo["id"])
            photo_files.append((name, data))
            photo.update(included=True, file=name)
    document = {"number": number, "made_at": now.isoformat(), "cases": documents}
    fd, tmp_name = tempfile.mkstemp(prefix=".privacy-export-", suffix=".tmp", dir=out.parent)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("README.txt", readme_text(masked, now, len(documents),
                                                           len(files) + len(photo_files), missing))
                archive.writestr("cases.json", json.dumps(document, ensure_ascii=False, indent=2))
                for name, path in files:
                    archive.writestr(name, read(path))
                for name, data in photo_files:
                    archive.writestr(name, data)
            handle.flush()
            os.fsync(handle.fileno())
        size = tmp.stat().st_size
        with engine.begin() as conn:
            audit_row(conn, now, actor, ACTION, "number", masked,
                      {"cases": len(documents), "files": len(files) + len(photo_files),
                       "missing_files": missing,
                       "bytes": size}, ip=ip)
        _claim(tmp, out)
        _fsync_dir(out.parent)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("privacy export of %s: %d cases, %d files", masked, len(documents),
                len(files) + len(photo_files))
    return ExportSummary(masked, len(documents), len(files) + len(photo_files), missing, size, out)


def _claim(tmp: Path, out: Path) -> None:
    """Give `tmp` the name `out`, never replacing a file that has that name."""
    try:
        os.link(tmp, out)  # fails on an existing name, unlike rename
        return
    except FileExistsError:
        raise ExportError("the output file appeared while exporting; nothing overwritten "
                          "/ 输出文件已存在") from None
    except OSError:
        pass  # a file system without hard links: reserve the name, then replace the reservation
    try:
        os.close(os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        raise ExportError("the output file appeared while exporting; nothing overwritten "
                          "/ 输出文件已存在") from None
    os.replace(tmp, out)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


