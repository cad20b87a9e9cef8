"""The roster JSON API, `/api/v1/roster`: what `hotline roster ...` does, over HTTP.

Every roster read and write goes through `hotline.rosterdesk.RosterDesk`
(the same code as the CLI), with the token's name as the audit actor
(`api:<name>`). Times in answers are ISO-8601 in the hotline's zone
(Asia/Shanghai, +08:00); times in requests are ISO-8601, and one without an
offset is Asia/Shanghai local time.

Input is validated field by field before anything is read: types (an id is a
JSON integer, not a string, a float or a boolean), ranges, enums, lengths,
and unknown fields are refused -- a typo must not be silently ignored on a
roster. Errors are JSON (see `console.ApiError`); anything from the request
that an error repeats is escaped and cut (`routing.callers.safe_text`).

Who may do what (console.tokens): admin and supervisor everything; a
department_head token reads and approves/declines trades as its surgeon; a
surgeon token reads, offers/swaps/takes/declines as its surgeon and adds or
removes its own leave; a calendar token reads the .ics feeds only.
"""
from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Response, jsonify, request

from console import ApiError, services
from console.tokens import (
    ADMINS,
    ANY_ROLE,
    READERS,
    acting_surgeon,
    current_token,
    forbidden,
    require,
)
from db.roster_store import ImportRefused, NotFound, NotOwner, PartOfTrade, StaleChange
from db.tokens import TokenRole
from oncall import roster_ops
from oncall.checks import Finding
from oncall.model import HOTLINE_TZ, OnCall, Rank, Role, Team
from oncall.roster_import import Directory, ImportPlan, Problem, Severity
from oncall.roster_ops import Trade, TradeStatus
from oncall.rotation import EffectiveShift, Leave, Override, Rotation
from routing.callers import safe_text

logger = logging.getLogger(__name__)

bp = Blueprint("api_roster", __name__, url_prefix="/api/v1/roster")

UTC = timezone.utc
LOCAL = ZoneInfo(HOTLINE_TZ)
MAX_ID = 2**31 - 1  # an INTEGER column on both databases
MAX_NOTE = 512  # the note columns
MAX_TIME_CHARS = 40
EARLIEST, LATEST = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
MAX_PROBLEMS = 1000  # problems listed for a refused import (the count says how many in all)
MAX_PREVIEW = 1000  # shifts listed for a dry run
TEAM_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
HHMM_RE = re.compile(r"\d{2}:\d{2}")
MONTH_RE = re.compile(r"\d{4}-\d{2}")
INT_RE = re.compile(r"[+-]?\d{1,12}")
AUDIT_SUBJECTS = ("trade", "override", "leave", "rotation", "shifts", "team")
SURGEON_ROLES = ADMINS + (TokenRole.SURGEON,)
HEAD_ROLES = ADMINS + (TokenRole.DEPARTMENT_HEAD,)


# --------------------------------------------------------------------------- validation


def bad(message: str, message_zh: str) -> ApiError:
    return ApiError(400, "invalid_request", message, message_zh)


def _shown(value: Any) -> str:
    """`value` as an error may repeat it: escaped, at most 40 characters."""
    return safe_text(value if isinstance(value, str) else repr(value)[:80], 40)


def parse_time(value: Any, name: str) -> datetime:
    """An ISO-8601 time (naive: Asia/Shanghai), as UTC."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TIME_CHARS:
        raise bad(f"{name}: an ISO-8601 time is required, e.g. 2026-03-01T08:00+08:00",
                  f"{name}：需要 ISO-8601 时间，例如 2026-03-01T08:00+08:00")
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad(f"{name}: not an ISO-8601 time: {_shown(value)}",
                  f"{name}：时间格式无效：{_shown(value)}") from None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=LOCAL)
    try:
        when = when.astimezone(UTC)
    except OverflowError:
        when = EARLIEST - timedelta(days=1)
    if not EARLIEST <= when < LATEST:
        raise bad(f"{name}: the time must lie between 2000 and 2100",
                  f"{name}：时间须在 2000 年至 2100 年之间")
    return when


def parse_date(value: Any, name: str) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            day = date.fromisoformat(value)
            if 2000 <= day.year < 2100:
                return day
        except ValueError:
            pass
    raise bad(f"{name}: a date YYYY-MM-DD (2000-2099) is required, got {_shown(value)}",
              f"{name}：需要日期 YYYY-MM-DD（2000–2099 年），收到 {_shown(value)}")


def parse_month(value: Any, name: str = "month") -> date:
    if isinstance(value, str) and MONTH_RE.fullmatch(value):
        year, month = int(value[:4]), int(value[5:])
        if 2000 <= year < 2100 and 1 <= month <= 12:
            return date(year, month, 1)
    raise bad(f"{name}: a month YYYY-MM is required, got {_shown(value)}",
              f"{name}：需要月份 YYYY-MM，收到 {_shown(value)}")


def parse_hhmm(value: Any, name: str) -> time:
    if isinstance(value, str) and HHMM_RE.fullmatch(value):
        hour, minute = int(value[:2]), int(value[3:])
        if hour < 24 and minute < 60:
            return time(hour, minute)
    raise bad(f"{name}: a time of day HH:MM is required, got {_shown(value)}",
              f"{name}：需要时刻 HH:MM，收到 {_shown(value)}")


def parse_role(value: Any, name: str = "role") -> Role:
    """A role by its code or its Chinese word (一线, 二线, 主治, 科主任)."""
    if isinstance(value, str) and len(value) <= 32:
        role = Directory.role(value)
        if role is not None:
            return role
    raise bad(f"{name}: one of {', '.join(r.value for r in Role)} is required, got {_shown(value)}",
              f"{name}：岗位须为 一线/二线/主治/科主任（{', '.join(r.value for r in Role)}），"
              f"收到 {_shown(value)}")


def parse_team(value: Any, name: str = "team") -> str:
    if isinstance(value, str) and TEAM_RE.fullmatch(value):
        return value
    raise bad(f"{name}: a team code (letters, digits, '-', '_'; at most 32) is required, "
              f"got {_shown(value)}",
              f"{name}：需要专业组代码（字母、数字、-、_，最多 32 个字符），收到 {_shown(value)}")


def parse_int(value: Any, name: str, lo: int = 1, hi: int = MAX_ID) -> int:
    # bool is an int in Python; `true` is not an id.
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise bad(f"{name}: a whole number from {lo} to {hi} is required, got {_shown(value)}",
                  f"{name}：需要 {lo} 到 {hi} 之间的整数，收到 {_shown(value)}")
    return value


def parse_int_text(value: str, name: str, lo: int = 1, hi: int = MAX_ID) -> int:
    """An integer written in a URL (path or query)."""
    if not INT_RE.fullmatch(value):
        raise bad(f"{name}: a whole number from {lo} to {hi} is required, got {_shown(value)}",
                  f"{name}：需要 {lo} 到 {hi} 之间的整数，收到 {_shown(value)}")
    return parse_int(int(value), name, lo, hi)


def parse_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise bad(f"{name}: text of at most {limit} characters is required",
                  f"{name}：需要不超过 {limit} 个字符的文本")
    return value


class Body:
    """A request's JSON object, read field by field; unknown fields are refused."""

    def __init__(self, allowed: Iterable[str], *, optional: bool = False) -> None:
        raw = request.get_data(cache=True)  # over MAX_CONTENT_LENGTH: 413
        if not raw.strip():
            if not optional:
                raise bad("a JSON object body is required", "请求体须为 JSON 对象")
            self.data: dict[str, Any] = {}
        else:
            try:
                data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
            except (UnicodeDecodeError, ValueError, RecursionError):
                raise bad("the body is not valid JSON (UTF-8)",
                          "请求体不是有效的 JSON（UTF-8）") from None
            if not isinstance(data, dict):
                raise bad("the body must be a JSON object", "请求体须为 JSON 对象")
            self.data = data
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            names = ", ".join(_shown(k) for k in unknown[:5])
            raise bad(f"unknown field(s): {names}", f"未知字段：{names}")

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def _get(self, key: str, required: bool) -> Any:
        value = self.data.get(key)
        if value is None and required:
            raise bad(f"{key}: required", f"{key}：必填")
        return value

    def int(self, key: str, *, required: bool = True, lo: int = 1, hi: int = MAX_ID) -> int | None:
        value = self._get(key, required)
        return None if value is None else parse_int(value, key, lo, hi)

    def time(self, key: str) -> datetime:
        return parse_time(self._get(key, True), key)

    def date(self, key: str, *, required: bool = True) -> date | None:
        value = self._get(key, required)
        return None if value is None else parse_date(value, key)

    def role(self, key: str, default: Role | None = None) -> Role | None:
        value = self._get(key, False)
        return default if value is None else parse_role(value, key)

    def team(self, key: str = "team") -> str:
        return parse_team(self._get(key, True), key)

    def text(self, key: str, limit: int = MAX_NOTE) -> str:
        value = self._get(key, False)
        return "" if value is None else parse_text(value, key, limit)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def arg(name: str) -> str | None:
    """A query parameter; an empty one counts as absent."""
    value = request.args.get(name)
    return value if value else None


def arg_int(name: str, default: int, lo: int, hi: int) -> int:
    value = arg(name)
    return default if value is None else parse_int_text(value, name, lo, hi)


def arg_time(name: str, default: datetime | None = None) -> datetime | None:
    value = arg(name)
    return default if value is None else parse_time(value, name)


def window(start: datetime, end: datetime, max_days: int = 400) -> tuple[datetime, datetime]:
    if not start < end:
        raise bad("end must be after start", "结束时间须晚于开始时间")
    if end - start > timedelta(days=max_days):
        raise bad(f"the window may span at most {max_days} days",
                  f"时间范围最多 {max_days} 天")
    return start, end


# --------------------------------------------------------------------------- JSON out


def iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(LOCAL).isoformat()


def team_json(team: Team) -> dict[str, Any]:
    return {"code": team.code, "name_zh": team.name_zh, "name_en": team.name_en,
            "ring_s": team.ring_s, "repeats": team.repeats, "tz": team.tz,
            "requires_approval": team.requires_approval, "department_head": team.department_head}


def member_json(position: int, member: OnCall) -> dict[str, Any]:
    return {"position": position, "surgeon_id": member.surgeon.id, "name": member.surgeon.name,
            "role": member.role.value, "phone": member.surgeon.phone,
            "rank": Rank(member.surgeon.rank).value,
            "start": iso(member.shift.start), "end": iso(member.shift.end)}


def piece_json(piece: EffectiveShift, names: Mapping[int, Any]) -> dict[str, Any]:
    surgeon = names.get(piece.surgeon_id)
    return {"surgeon_id": piece.surgeon_id, "name": surgeon.name if surgeon else None,
            "role": piece.role.value, "start": iso(piece.start), "end": iso(piece.end),
            "source": piece.source.value}


def finding_json(finding: Finding) -> dict[str, Any]:
    return {"kind": finding.kind.value, "team": finding.team, "other_team": finding.other_team,
            "surgeon_id": finding.surgeon_id, "start": iso(finding.start), "end": iso(finding.end),
            "message": finding.message, "message_zh": finding.message_zh}


def override_json(override: Override) -> dict[str, Any]:
    return {"team": override.team, "role": override.role.value,
            "surgeon_id": override.surgeon_id, "replaces": override.replaces,
            "start": iso(override.start), "end": iso(override.end), "note": override.note}


def leave_json(leave: Leave) -> dict[str, Any]:
    return {"surgeon_id": leave.surgeon_id, "start": iso(leave.start), "end": iso(leave.end),
            "note": leave.note}


def rotation_json(rotation_id: int, rotation: Rotation) -> dict[str, Any]:
    return {"id": rotation_id, "team": rotation.team, "role": rotation.role.value,
            "kind": rotation.kind, "members": list(rotation.members),
            "start": rotation.start.isoformat(),
            "until": rotation.until.isoformat() if rotation.until else None,
            "handoff_times": [t.strftime("%H:%M") for t in rotation.handoff_times],
            "every_days": rotation.every_days, "layer": rotation.layer, "name": rotation.name}


def trade_json(trade: Trade) -> dict[str, Any]:
    return {
        "id": trade.id, "kind": trade.kind.value, "status": trade.status.value,
        "team": trade.team, "requester": trade.requester, "role": trade.role.value,
        "start": iso(trade.start), "end": iso(trade.end),
        "counterpart": trade.counterpart,
        "counter_role": trade.counter_role.value if trade.counter_role else None,
        "counter_start": iso(trade.counter_start), "counter_end": iso(trade.counter_end),
        "taker": trade.taker, "decided_by": trade.decided_by, "decided_at": iso(trade.decided_at),
        "requested_at": iso(trade.requested_at), "note": trade.note,
        "overrides": [override_json(o) for o in trade.overrides],
    }


def problem_json(problem: Problem) -> dict[str, Any]:
    return {"line": problem.line, "column": problem.column, "message": problem.message,
            "message_zh": problem.message_zh, "severity": problem.severity.value}


def created(body: dict[str, Any]) -> tuple[Response, int]:
    return jsonify(body), 201


# --------------------------------------------------------------------------- errors


_OP_ZH = {
    roster_ops.NotAllowed: "无权执行此操作",
    roster_ops.UnknownTeam: "专业组不存在",
    roster_ops.UnknownSurgeon: "医生不存在",
    roster_ops.UnknownTrade: "换班申请不存在",
    roster_ops.InvalidTransition: "该换班申请当前状态不允许此操作",
    roster_ops.Expired: "该时段已经结束",
    roster_ops.NotHeld: "该医生在此时段并不值此班",
    roster_ops.Conflict: "与其他班次或请假冲突",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


@bp.errorhandler(roster_ops.RosterOpError)
def roster_op_refused(exc: roster_ops.RosterOpError):
    if isinstance(exc, roster_ops.NotAllowed):
        status = 403
    elif isinstance(exc, (roster_ops.UnknownTeam, roster_ops.UnknownSurgeon,
                          roster_ops.UnknownTrade)):
        status = 404
    else:  # Conflict, InvalidTransition, Expired, NotHeld: the roster's state says no
        status = 409
    message_zh = next((zh for cls, zh in _OP_ZH.items() if isinstance(exc, cls)), "操作被拒绝")
    return ApiError(status, _snake(type(exc).__name__), safe_text(str(exc), 300),
                    message_zh).response()


@bp.errorhandler(StaleChange)
def stale(exc: StaleChange):
    return ApiError(409, "stale_change", "the trade changed meanwhile; reload and try again",
                    "该换班申请已被他人更改，请刷新后重试").response()


@bp.errorhandler(NotFound)
def not_found(exc: NotFound):
    return ApiError(404, "not_found", safe_text(str(exc), 200), "未找到").response()


@bp.errorhandler(ImportRefused)
def import_refused(exc: ImportRefused):
    return _refused(exc.problems)


@bp.errorhandler(ValueError)
def invalid_value(exc: ValueError):
    # Validation the domain does itself (a rotation ending before it starts,
    # a window too long): the message is ours, cut to be safe.
    return ApiError(400, "invalid_request", safe_text(str(exc), 300), "请求无效").response()


def _refused(problems: Iterable[Problem]) -> Response:
    problems = sorted(problems, key=lambda p: (p.line, p.column))
    errors = sum(1 for p in problems if p.severity is Severity.ERROR)
    return ApiError(
        422, "import_refused",
        f"{errors} error(s) in the file; nothing was written",
        f"文件中有 {errors} 处错误，未做任何修改",
        problems=[problem_json(p) for p in problems[:MAX_PROBLEMS]],
        problems_total=len(problems)).response()


def no_team(team: str) -> ApiError:
    return ApiError(404, "unknown_team", f"no team {_shown(team)}", f"专业组不存在：{_shown(team)}")


# --------------------------------------------------------------------------- reads


@bp.get("/teams")
@require(*READERS)
def teams():
    now = services().clock()
    roster = services().desk.snapshot(now, now + timedelta(seconds=1))
    return jsonify({"teams": [team_json(roster.teams[c]) for c in sorted(roster.teams)]})


@bp.get("/now")
@require(*READERS)
def now_on_call():
    at = arg_time("at") or services().clock()
    team = arg("team")
    codes = [parse_team(team)] if team is not None else None
    roster, chains = services().desk.chains(at, codes)
    if team is not None and team not in chains:
        raise no_team(team)
    return jsonify({"at": iso(at), "teams": [
        {**team_json(roster.teams[code]),
         "chain": [member_json(n, m) for n, m in enumerate(members, 1)]}
        for code, members in chains.items()]})


@bp.get("/teams/<team>/shifts")
@require(*READERS)
def team_shifts(team: str):
    team = parse_team(team)
    desk = services().desk
    start, end = arg_time("start"), arg_time("end")
    if start is not None or end is not None:
        if start is None or end is None:
            raise bad("start and end go together", "start 与 end 须同时给出")
        if arg("day") is not None:
            raise bad("give start/end or day/days, not both", "start/end 与 day/days 只能二选一")
        start, end = window(start, end)
    else:
        day = parse_date(arg("day"), "day") if arg("day") else \
            services().clock().astimezone(LOCAL).date()
        days = arg_int("days", 7, 1, 366)
        start, end = desk.day_window(team, day, days)
    roster, pieces = desk.pieces(team, start, end)
    return jsonify({"team": team, "start": iso(start), "end": iso(end),
                    "shifts": [piece_json(p, roster.surgeons) for p in pieces]})


@bp.get("/check")
@require(*READERS)
def check():
    days = arg_int("days", 7, 1, 366)
    team = arg("team")
    start = arg_time("start") or services().clock()
    roster, findings = services().desk.check(start, start + timedelta(days=days),
                                             [parse_team(team)] if team else None)
    if team is not None and team not in roster.teams:
        raise no_team(team)
    return jsonify({"start": iso(start), "end": iso(start + timedelta(days=days)),
                    "findings": [finding_json(f) for f in findings]})


# RosterDesk has no list methods for trades, the audit log and rotations yet;
# like `hotline roster trades/audit/rotation list`, these reads use the desk's
# store (reads only -- every write goes through the desk's own methods).


@bp.get("/trades")
@require(*READERS)
def trades():
    statuses = None
    if arg("status"):
        words = arg("status").split(",")  # type: ignore[union-attr]
        valid = {s.value for s in TradeStatus}
        if len(words) > len(valid) or not set(words) <= valid:
            raise bad(f"status: any of {', '.join(sorted(valid))} (comma-separated)",
                      f"status：须为 {', '.join(sorted(valid))} 之一（可用逗号分隔）")
        statuses = words
    team = parse_team(arg("team")) if arg("team") else None
    limit = arg_int("limit", 100, 1, 500)
    found = services().desk.trades(status=statuses, team=team, limit=limit)
    return jsonify({"trades": [trade_json(t) for t in found]})


@bp.get("/audit")
@require(*READERS)
def audit():
    subject = arg("subject")
    if subject is not None and subject not in AUDIT_SUBJECTS:
        raise bad(f"subject: one of {', '.join(AUDIT_SUBJECTS)}",
                  f"subject：须为 {', '.join(AUDIT_SUBJECTS)} 之一")
    subject_id = arg("subject_id")
    if subject_id is not None and len(subject_id) > 64:
        raise bad("subject_id: at most 64 characters", "subject_id：最多 64 个字符")
    limit = arg_int("limit", 100, 1, 500)
    entries = services().desk.audit(subject=subject, subject_id=subject_id, limit=limit)
    return jsonify({"entries": [
        {"id": e.id, "at": iso(e.at), "actor": e.actor, "surgeon_id": e.surgeon_id,
         "action": e.action, "subject": e.subject, "subject_id": e.subject_id,
         "before": json.loads(e.before) if e.before else None,
         "after": json.loads(e.after) if e.after else None}
        for e in entries]})


@bp.get("/rotations")
@require(*READERS)
def rotations():
    team = parse_team(arg("team")) if arg("team") else None
    return jsonify({"rotations": [rotation_json(rid, r)
                                  for rid, r in services().desk.rotations(team)]})


# --------------------------------------------------------------------------- calendar feeds


def _feed_window() -> tuple[datetime, datetime, str]:
    now = services().clock()
    start = arg_time("start") or now - timedelta(days=7)
    end = arg_time("end") or start + timedelta(days=60)
    lang = arg("lang") or "zh"
    if lang not in ("zh", "en"):
        raise bad("lang: zh or en", "lang：须为 zh 或 en")
    return (*window(start, end), lang)


def _calendar(data: bytes, filename: str) -> Response:
    response = Response(data, content_type="text/calendar; charset=utf-8")
    response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
    # The URL may carry a token: keep the answer out of shared caches.
    response.headers["Cache-Control"] = "private, max-age=300"
    return response


@bp.get("/teams/<team>.ics")
@require(*ANY_ROLE, query_token=True)
def team_feed(team: str):
    team = parse_team(team)
    start, end, lang = _feed_window()
    data = services().desk.team_ical(team, start, end, lang=lang)
    return _calendar(data, f"{team}.ics")


@bp.get("/surgeons/<surgeon_id>.ics")
@require(*ANY_ROLE, query_token=True)
def surgeon_feed(surgeon_id: str):
    sid = parse_int_text(surgeon_id, "surgeon id")
    start, end, lang = _feed_window()
    data = services().desk.surgeon_ical(sid, start, end, lang=lang)
    return _calendar(data, f"surgeon-{sid}.ics")


# --------------------------------------------------------------------------- imports


def _upload() -> tuple[bytes, Mapping[str, str], str]:
    """The file (raw body, or multipart field `file`), its parameters and a source label.

    A raw body's parameters are in the query string; a multipart upload's may
    also be form fields. The form is parsed only for multipart: `curl
    --data-binary` labels a raw CSV as a form, which must not be parsed.
    """
    params: dict[str, str] = dict(request.args)
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise bad("multipart upload: the file goes in the field 'file'",
                      "多部分上传：文件须放在 file 字段")
        data = upload.read()
        params.update({k: v for k, v in request.form.items() if k != "file"})
        label = safe_text(upload.filename or "upload", 64)
    else:
        data = request.get_data()
        label = "upload"
    if not data.strip():
        raise bad("the file is empty", "文件为空")
    return data, params, f"api:{label}"


def _param(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    return value if value else None


def _import_answer(outcome) -> Response:
    plan: ImportPlan = outcome.plan
    if not plan.ok:
        return _refused(plan.problems)
    teams = [{"team": team, "start": iso(lo), "end": iso(hi),
              "shifts": sum(1 for s in plan.shifts if s.team == team)}
             for team, (lo, hi) in sorted(plan.replace.items())]
    body: dict[str, Any] = {
        "written": outcome.written, "dry_run": not outcome.written, "teams": teams,
        "shifts": len(plan.shifts),
        "problems": [problem_json(p) for p in sorted(plan.problems, key=lambda p: (p.line, p.column))
                     ][:MAX_PROBLEMS],
    }
    if outcome.result is not None:
        body.update(removed=outcome.result.removed, shifts_written=outcome.result.written)
    else:
        body["preview"] = [
            {"team": s.team, "surgeon_id": s.surgeon_id, "role": s.role.value,
             "start": iso(s.start), "end": iso(s.end), "line": line}
            for s, line in list(zip(plan.shifts, plan.lines or [0] * len(plan.shifts)))[:MAX_PREVIEW]]
    return jsonify(body)


@bp.post("/import/csv")
@require(*ADMINS)
def import_csv():
    data, params, source = _upload()
    team = parse_team(_param(params, "team")) if _param(params, "team") else None
    month = parse_month(_param(params, "month")) if _param(params, "month") else None
    handoff = parse_hhmm(_param(params, "handoff"), "handoff") if _param(params, "handoff") \
        else time(8, 0)
    dry_run = _flag(params, "dry_run")
    outcome = services().desk.import_csv(data, actor=current_token().actor, team=team,
                                         month=month, handoff=handoff, dry_run=dry_run,
                                         source=source)
    return _import_answer(outcome)


@bp.post("/import/ical")
@require(*ADMINS)
def import_ical():
    data, params, source = _upload()
    team = parse_team(_param(params, "team")) if _param(params, "team") else None
    role = parse_role(_param(params, "role")) if _param(params, "role") else None
    span = None
    if _param(params, "month"):
        first = parse_month(_param(params, "month"))
        nxt = date(first.year + first.month // 12, first.month % 12 + 1, 1)
        span = (datetime.combine(first, time(0), LOCAL).astimezone(UTC),
                datetime.combine(nxt, time(0), LOCAL).astimezone(UTC))
    elif _param(params, "start") or _param(params, "end"):
        if not (_param(params, "start") and _param(params, "end")):
            raise bad("start and end go together", "start 与 end 须同时给出")
        span = window(parse_time(params["start"], "start"), parse_time(params["end"], "end"))
    dry_run = _flag(params, "dry_run")
    outcome = services().desk.import_ical(data, actor=current_token().actor, team=team, role=role,
                                          window=span, dry_run=dry_run, source=source)
    return _import_answer(outcome)


def _flag(params: Mapping[str, str], name: str) -> bool:
    value = (params.get(name) or "0").lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise bad(f"{name}: 1 or 0 is required", f"{name}：须为 1 或 0")


# --------------------------------------------------------------------------- trades


@bp.post("/trades")
@require(*SURGEON_ROLES)
def new_trade():
    body = Body(("kind", "by", "team", "role", "start", "end", "note", "with_surgeon",
                 "their_start", "their_end", "their_role"))
    kind = body.data.get("kind")
    if kind not in ("offer", "swap"):
        raise bad("kind: offer or swap", "kind：须为 offer（顶班）或 swap（换班）")
    by = acting_surgeon(body.int("by", required=False), what="trade")
    common = dict(by=by, team=body.team(), role=body.role("role", Role.PRIMARY),
                  start=body.time("start"), end=body.time("end"), note=body.text("note"),
                  actor=current_token().actor)
    desk = services().desk
    if kind == "offer":
        extra = [k for k in ("with_surgeon", "their_start", "their_end", "their_role") if body.has(k)]
        if extra:
            raise bad(f"an offer has no {', '.join(extra)}", f"顶班申请不需要 {', '.join(extra)}")
        trade = desk.offer(**common)
    else:
        trade = desk.swap(**common, with_surgeon=body.int("with_surgeon"),
                          their_start=body.time("their_start"), their_end=body.time("their_end"),
                          their_role=body.role("their_role"))
    return created({"trade": trade_json(trade)})


def _trade_step(trade_id: str, step: str):
    tid = parse_int_text(trade_id, "trade id")
    body = Body(("by", "note") if step == "decline" else ("by",), optional=True)
    by = acting_surgeon(body.int("by", required=False), what=step)
    desk, actor = services().desk, current_token().actor
    if step == "take":
        trade = desk.take(tid, by=by, actor=actor)
    elif step == "approve":
        trade = desk.approve(tid, by=by, actor=actor)
    else:
        trade = desk.decline(tid, by=by, note=body.text("note"), actor=actor)
    return jsonify({"trade": trade_json(trade)})


@bp.post("/trades/<trade_id>/take")
@require(*SURGEON_ROLES)
def take_trade(trade_id: str):
    return _trade_step(trade_id, "take")


@bp.post("/trades/<trade_id>/approve")
@require(*HEAD_ROLES)
def approve_trade(trade_id: str):
    return _trade_step(trade_id, "approve")


@bp.post("/trades/<trade_id>/decline")
@require(*ADMINS, TokenRole.DEPARTMENT_HEAD, TokenRole.SURGEON)
def decline_trade(trade_id: str):
    return _trade_step(trade_id, "decline")


# --------------------------------------------------------------------------- overrides, leave, rotations


@bp.post("/overrides")
@require(*ADMINS)
def add_override():
    body = Body(("team", "role", "surgeon_id", "start", "end", "replaces", "note"))
    override = _domain(lambda: Override(
        body.team(), body.role("role", Role.PRIMARY), body.int("surgeon_id"), body.time("start"),
        body.time("end"), replaces=body.int("replaces", required=False), note=body.text("note")))
    new_id = services().desk.add_override(override, actor=current_token().actor)
    return created({"id": new_id, "override": override_json(override)})


@bp.delete("/overrides/<override_id>")
@require(*ADMINS)
def remove_override(override_id: str):
    oid = parse_int_text(override_id, "override id")
    try:
        gone = services().desk.remove_override(oid, actor=current_token().actor)
    except PartOfTrade as exc:  # a trade's cover: it stays as the trade's record
        raise ApiError(409, "part_of_trade", safe_text(str(exc), 200),
                       "该顶班属于一项换班申请，不能单独删除") from None
    return jsonify({"id": oid, "removed": override_json(gone)})


@bp.post("/leave")
@require(*SURGEON_ROLES)
def add_leave():
    body = Body(("surgeon_id", "start", "end", "note"))
    token = current_token()
    claimed = body.int("surgeon_id", required=False)
    if token.role.bound:
        if claimed is not None and claimed != token.surgeon_id:
            raise forbidden("a surgeon may add only their own leave", "医生只能为自己请假")
        claimed = token.surgeon_id
    elif claimed is None:
        raise bad("surgeon_id: required", "surgeon_id：必填")
    leave = _domain(lambda: Leave(claimed, body.time("start"), body.time("end"), body.text("note")))
    new_id = services().desk.add_leave(leave, actor=token.actor, surgeon_id=token.surgeon_id)
    return created({"id": new_id, "leave": leave_json(leave)})


@bp.delete("/leave/<leave_id>")
@require(*SURGEON_ROLES)
def remove_leave(leave_id: str):
    lid = parse_int_text(leave_id, "leave id")
    token = current_token()
    try:
        # A bound token removes only its own leave, checked in the same
        # transaction; unknown and someone else's answer alike: 403.
        gone = services().desk.remove_leave(lid, actor=token.actor, surgeon_id=token.surgeon_id,
                                            owner=token.surgeon_id if token.role.bound else None)
    except NotOwner:
        raise forbidden("a surgeon may remove only their own leave", "医生只能取消自己的请假") from None
    return jsonify({"id": lid, "removed": leave_json(gone)})


@bp.post("/rotations")
@require(*ADMINS)
def add_rotation():
    body = Body(("team", "role", "members", "start", "handoff_times", "every_days", "layer",
                 "until", "name"))
    members = body.data.get("members")
    if not isinstance(members, list) or not 1 <= len(members) <= 100:
        raise bad("members: a list of 1 to 100 surgeon ids", "members：须为 1 到 100 个医生编号的列表")
    member_ids = tuple(parse_int(m, "members[]") for m in members)
    times = body.data.get("handoff_times", ["08:00"])
    if isinstance(times, str):
        times = [times]
    if not isinstance(times, list) or not 1 <= len(times) <= 24:
        raise bad("handoff_times: a list of 1 to 24 times HH:MM",
                  "handoff_times：须为 1 到 24 个 HH:MM 时刻的列表")
    handoffs = tuple(parse_hhmm(t, "handoff_times[]") for t in times)
    rotation = _domain(lambda: Rotation(
        body.team(), body.role("role", Role.PRIMARY), member_ids, body.date("start"), handoffs,
        body.int("every_days", required=False, lo=1, hi=366) or 1,
        body.int("layer", required=False, lo=0, hi=1000) or 0,
        body.date("until", required=False), body.text("name", 64)))
    new_id = services().desk.add_rotation(rotation, actor=current_token().actor)
    return created({"id": new_id, "rotation": rotation_json(new_id, rotation)})


@bp.post("/rotations/<rotation_id>/end")
@require(*ADMINS)
def end_rotation(rotation_id: str):
    rid = parse_int_text(rotation_id, "rotation id")
    body = Body(("until",))
    ended = services().desk.end_rotation(rid, body.date("until"), actor=current_token().actor)
    return jsonify({"rotation": rotation_json(rid, ended)})


def _domain(build):
    """Build a domain value; its own checks (end after start, ...) become 400."""
    try:
        return build()
    except ApiError:
        raise
    except ValueError as exc:
        raise bad(safe_text(str(exc), 200), "请求无效") from None
