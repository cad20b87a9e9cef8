"""The rosters pages (排班表): a week or month calendar per team, today's chain, gaps, trades.

    GET  /rosters/?team=facial&view=week|month&date=2026-03-02
    POST /rosters/trades/offer              a surgeon gives away a shift of theirs (顶班)
    POST /rosters/trades/swap               a surgeon asks another to swap (换班)
    POST /rosters/trades/<id>/take          the named surgeon (swap) or anyone (give-away) takes it
    POST /rosters/trades/<id>/approve       the team's department head approves a taken trade
    POST /rosters/trades/<id>/decline       the department head, or the surgeon a swap names

Every read and write goes through `hotline.rosterdesk.RosterDesk`, the same
code as the CLI and the JSON API; the domain (`oncall.roster_ops`) decides who
may do what. Whoever acts does so *as their own surgeon*: `by` is always the
signed-in user's `surgeon_id`, never a form field. An account without a
surgeon (most admins and supervisors) sees everything and acts on nothing
(403, audited). A refusal by the domain is shown on the page in the user's
language with 403 (the wrong person: audited as denied), 404 (no such trade)
or 409 (the roster's state says no) -- never a 500.

Times in forms are the team's local wall time (`datetime-local`, no offset).
"""
from __future__ import annotations

import re
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Callable

from zoneinfo import ZoneInfo

from flask import (Blueprint, Flask, abort, flash, get_flashed_messages, redirect,
                   render_template, request, url_for)
from werkzeug.exceptions import HTTPException

from console.auth import audit, current_user, signed_in
from console.i18n import add_words, current_lang, t
from db.roster_store import NotFound, StaleChange
from oncall import roster_ops
from oncall.checks import ROLE_ZH, Finding
from oncall.model import HOTLINE_TZ, Role, Roster
from oncall.roster_ops import OPEN, Trade, TradeKind, TradeStatus
from oncall.rotation import EffectiveShift, local_instant, team_zone
from routing.callers import safe_text

bp = Blueprint("rosters", __name__, url_prefix="/rosters")
NAV = [("rosters.index", "rosters", ())]

VIEWS = ("week", "month")
TEAM_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
LOCAL_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?")
MAX_ID = 2**31 - 1
MAX_NOTE = 512
MAX_TRADES = 100
ROLES = tuple(Role)
LOCAL = ZoneInfo(HOTLINE_TZ)  # "today" before a team is chosen

add_words({
    "rosters.title": {"zh": "排班表", "en": "Rosters"},
    "rosters.team": {"zh": "专业组", "en": "Team"},
    "rosters.view": {"zh": "视图", "en": "View"},
    "rosters.week": {"zh": "周", "en": "Week"},
    "rosters.month": {"zh": "月", "en": "Month"},
    "rosters.date": {"zh": "日期", "en": "Date"},
    "rosters.show": {"zh": "显示", "en": "Show"},
    "rosters.previous": {"zh": "上一页", "en": "Previous"},
    "rosters.today": {"zh": "今天", "en": "Today"},
    "rosters.next": {"zh": "下一页", "en": "Next"},
    "rosters.no_teams": {"zh": "尚无专业组", "en": "No teams yet"},
    "rosters.chain_now": {"zh": "当前呼叫顺序（今日值班）", "en": "Today's chain (on call now)"},
    "rosters.nobody": {"zh": "无人值班", "en": "Nobody on call"},
    "rosters.findings": {"zh": "排班问题（空班等）", "en": "Gaps and other findings"},
    "rosters.no_findings": {"zh": "此时段无排班问题", "en": "No gaps or other findings in this period"},
    "rosters.calendar": {"zh": "排班日历", "en": "Calendar"},
    "rosters.role": {"zh": "岗位", "en": "Role"},
    "rosters.role.primary": {"zh": ROLE_ZH[Role.PRIMARY], "en": "Primary"},
    "rosters.role.backup": {"zh": ROLE_ZH[Role.BACKUP], "en": "Backup"},
    "rosters.role.attending": {"zh": ROLE_ZH[Role.ATTENDING], "en": "Attending"},
    "rosters.role.department_head": {"zh": ROLE_ZH[Role.DEPARTMENT_HEAD], "en": "Department head"},
    "rosters.trades": {"zh": "待处理的换班 / 顶班", "en": "Open swaps and give-aways"},
    "rosters.no_trades": {"zh": "没有待处理的申请", "en": "No open requests"},
    "rosters.kind.swap": {"zh": "换班", "en": "Swap"},
    "rosters.kind.give_away": {"zh": "顶班（让出）", "en": "Give-away"},
    "rosters.status.requested": {"zh": "待接受", "en": "Requested"},
    "rosters.status.taken": {"zh": "待科主任批准", "en": "Taken, awaiting approval"},
    "rosters.status.approved": {"zh": "已批准", "en": "Approved"},
    "rosters.status.declined": {"zh": "已拒绝", "en": "Declined"},
    "rosters.requester": {"zh": "申请人", "en": "Requested by"},
    "rosters.time": {"zh": "时段", "en": "Time"},
    "rosters.counterpart": {"zh": "对方及其时段", "en": "With, and their time"},
    "rosters.taker": {"zh": "接受人", "en": "Taken by"},
    "rosters.note": {"zh": "备注", "en": "Note"},
    "rosters.status": {"zh": "状态", "en": "Status"},
    "rosters.actions": {"zh": "操作", "en": "Actions"},
    "rosters.take": {"zh": "接受", "en": "Take"},
    "rosters.approve": {"zh": "批准", "en": "Approve"},
    "rosters.decline": {"zh": "拒绝", "en": "Decline"},
    "rosters.offer": {"zh": "让出此班（顶班）", "en": "Offer this shift"},
    "rosters.offer_title": {"zh": "让出班次（顶班）", "en": "Give away a shift"},
    "rosters.swap_title": {"zh": "申请换班", "en": "Request a swap"},
    "rosters.start": {"zh": "开始", "en": "Start"},
    "rosters.end": {"zh": "结束", "en": "End"},
    "rosters.with": {"zh": "换班对象", "en": "Swap with"},
    "rosters.their_start": {"zh": "对方班次开始", "en": "Their shift starts"},
    "rosters.their_end": {"zh": "对方班次结束", "en": "Their shift ends"},
    "rosters.their_role": {"zh": "对方岗位", "en": "Their role"},
    "rosters.same_role": {"zh": "（同一岗位）", "en": "(the same role)"},
    "rosters.submit_offer": {"zh": "提交顶班", "en": "Offer"},
    "rosters.submit_swap": {"zh": "提交换班申请", "en": "Request the swap"},
    "rosters.my_shifts": {"zh": "我在此时段的班次", "en": "My shifts in this period"},
    "rosters.local_times": {"zh": "时间均为专业组当地时间", "en": "Times are the team's local time"},
    "rosters.acting_as": {"zh": "您以医生身份操作：", "en": "You act as surgeon: "},
    "rosters.view_only": {
        "zh": "您的账户未关联医生：可查看全部排班，但不能申请、接受或批准换班（这些操作须以医生本人身份进行）。",
        "en": "Your account is not linked to a surgeon: you see every roster but cannot request, "
              "take or approve swaps (those are done by a surgeon, as themselves)."},
    "rosters.head_hint": {"zh": "您是本组科主任，可批准或拒绝已被接受的申请。",
                          "en": "You are this team's department head: you approve or decline taken trades."},
    "rosters.need_surgeon": {"zh": "此操作须由医生本人进行，您的账户未关联医生。",
                             "en": "This is done by a surgeon as themselves; your account is not "
                                   "linked to a surgeon."},
    "rosters.done.offer": {"zh": "已提交顶班", "en": "The shift is offered"},
    "rosters.done.swap": {"zh": "已提交换班申请", "en": "The swap is requested"},
    "rosters.done.take": {"zh": "已接受", "en": "Taken"},
    "rosters.done.approve": {"zh": "已批准", "en": "Approved"},
    "rosters.done.decline": {"zh": "已拒绝", "en": "Declined"},
    "rosters.refused": {"zh": "操作未执行", "en": "Not done"},
    "rosters.bad_form": {"zh": "表单填写有误", "en": "The form is not filled in correctly"},
    "rosters.other_month": {"zh": "（非本月）", "en": "(other month)"},
    "rosters.finding.gap": {"zh": "空班", "en": "Gap"},
    "rosters.finding.double_booked": {"zh": "重复排班", "en": "Double booked"},
    "rosters.finding.on_leave": {"zh": "请假无人顶班", "en": "Leave not covered"},
    "rosters.finding.short_chain": {"zh": "呼叫顺序过短", "en": "Short chain"},
    "rosters.finding.unknown_surgeon": {"zh": "未知医生", "en": "Unknown surgeon"},
    "rosters.finding.bad_time_zone": {"zh": "时区无效", "en": "Bad time zone"},
    "rosters.weekday": {"zh": "一,二,三,四,五,六,日", "en": "Mon,Tue,Wed,Thu,Fri,Sat,Sun"},
})

# Most specific first: a refusal is worded by the first class of its MRO found here.
_REFUSALS: dict[type, tuple[str, str]] = {
    roster_ops.OwnTrade: ("You cannot take or swap with your own request", "不能接受自己的申请或与自己换班"),
    roster_ops.NotCounterpart: ("Only the surgeon this swap names may take or decline it",
                                "只有被申请换班的医生可以接受或拒绝"),
    roster_ops.NotDepartmentHead: ("Only the team's department head approves or declines",
                                   "只有本组科主任可以批准或拒绝"),
    roster_ops.NotAllowed: ("You may not do that", "无权执行此操作"),
    roster_ops.UnknownTeam: ("No such team", "专业组不存在"),
    roster_ops.UnknownSurgeon: ("No such surgeon", "医生不存在"),
    roster_ops.UnknownTrade: ("No such request", "换班申请不存在"),
    roster_ops.InvalidTransition: ("The request is no longer at that step", "该申请当前状态不允许此操作"),
    roster_ops.Expired: ("That time is already over", "该时段已经结束"),
    roster_ops.NotHeld: ("That surgeon does not hold that shift over the whole time",
                         "该医生在此时段并不值此班"),
    roster_ops.OnLeave: ("The surgeon is on leave then", "该医生此时段请假"),
    roster_ops.OnCallElsewhere: ("The surgeon is on call in another team then", "该医生此时段在其他专业组值班"),
    roster_ops.AlreadyOffered: ("An open request already covers part of that time",
                                "已有待处理的申请包含该时段"),
    roster_ops.Conflict: ("That clashes with other time", "与其他班次或请假冲突"),
    roster_ops.RosterOpError: ("Refused", "操作被拒绝"),
}


class FormError(ValueError):
    """A form field is missing or malformed (400); the message names the field."""


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


def _hub():
    from console import services
    return services()


# --------------------------------------------------------------------------- the page


@dataclass
class View:
    """Which page: a team, week or month, a date in it."""

    team: str | None
    view: str
    day: date

    def args(self, **changes: Any) -> dict[str, str]:
        values = {"team": self.team, "view": self.view, "date": self.day.isoformat(), **changes}
        return {k: v for k, v in values.items() if v}


@dataclass
class Entry:
    role: str
    role_label: str
    surgeon_id: int
    name: str
    start: str
    end: str
    mine: bool
    source: str


@dataclass
class Day:
    day: date
    in_period: bool
    today: bool
    entries: list[Entry] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def of_role(self, role: str) -> list[Entry]:
        return [e for e in self.entries if e.role == role]

    @property
    def gap(self) -> bool:
        return bool(self.findings)


def _parse_view(source) -> View:
    team = source.get("team") or None
    if team is not None and not TEAM_RE.fullmatch(team):
        abort(404)
    view = source.get("view") or "week"
    if view not in VIEWS:
        abort(400)
    raw = source.get("date") or ""
    day = _hub().clock().astimezone(LOCAL).date()
    if raw:
        try:
            day = date.fromisoformat(raw) if len(raw) == 10 else None
        except ValueError:
            day = None
        if day is None or not 2000 <= day.year < 2100:
            abort(400)
    return View(team, view, day)


@bp.get("/")
@signed_in()
def index():
    page = _parse_view(request.args)
    return _render(page)


def _period(page: View) -> tuple[date, int]:
    """First day shown and how many: a Monday-to-Sunday week, or the month's whole weeks."""
    if page.view == "week":
        return page.day - timedelta(days=page.day.weekday()), 7
    first = page.day.replace(day=1)
    last = first.replace(day=monthrange(first.year, first.month)[1])
    start = first - timedelta(days=first.weekday())
    end = last + timedelta(days=6 - last.weekday())
    return start, (end - start).days + 1


def _render(page: View, *, message: str | None = None, detail: str | None = None,
            status: int = 200, strict: bool = True):
    """The page; `strict`: an unknown team is 404 (a GET), else the first team is shown."""
    hub = _hub()
    desk = hub.desk
    user = current_user()
    now = hub.clock()
    roster_now, chains = desk.chains(now)
    teams = sorted(roster_now.teams)
    if not teams:
        return render_template("rosters.html", page=page, teams=[], message=message,
                               detail=detail, flashes=get_flashed_messages()), status
    if page.team is not None and page.team not in roster_now.teams:
        if strict:
            abort(404)
        page.team = None
    if page.team is None:
        page.team = teams[0]
    team = roster_now.teams[page.team]
    tz = team_zone(team)
    first, count = _period(page)
    start = local_instant(first, time(0), tz)
    end = local_instant(first + timedelta(days=count), time(0), tz)
    roster, pieces = desk.pieces(page.team, start, end)
    _, findings = desk.check(start, end, [page.team])
    trades = desk.trades(status=[s.value for s in OPEN], team=page.team, limit=MAX_TRADES)
    me = user.surgeon_id if user else None
    heads = roster_ops.department_heads(roster_now, page.team, now)
    today = now.astimezone(tz).date()

    days = []
    for i in range(count):
        d = first + timedelta(days=i)
        lo, hi = local_instant(d, time(0), tz), local_instant(d + timedelta(days=1), time(0), tz)
        cell = Day(d, _in_period(page, d), d == today)
        for p in pieces:
            if p.start < hi and p.end > lo:
                cell.entries.append(_entry(roster, p, max(p.start, lo), min(p.end, hi), lo, tz, me))
        cell.entries.sort(key=lambda e: (Role(e.role).ring_order, e.start, e.surgeon_id))
        cell.findings = [f for f in findings if f.start < hi and f.end > lo]
        days.append(cell)

    mine = [p for p in pieces if me is not None and p.surgeon_id == me]
    return render_template(
        "rosters.html", page=page, teams=[(c, _team_name(roster_now, c)) for c in teams],
        team_name=_team_name(roster_now, page.team), days=days,
        weeks=[days[i:i + 7] for i in range(0, len(days), 7)], roles=[r.value for r in ROLES],
        chain=chains.get(page.team, []), findings=findings, trades=trades,
        me=me, heads=heads, mine=mine, message=message, detail=detail,
        flashes=get_flashed_messages(), surgeons=sorted(roster_now.surgeons.values(),
                                                        key=lambda s: s.id),
        local=lambda at: at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
        form_time=lambda at: at.astimezone(tz).strftime("%Y-%m-%dT%H:%M"),
        finding_text=_finding_text, can=_can, name=lambda sid: _name(roster_now, sid),
        pager=_pager(page), weekdays=t("rosters.weekday").split(","),
    ), status


def _in_period(page: View, d: date) -> bool:
    return page.view == "week" or (d.year, d.month) == (page.day.year, page.day.month)


def _pager(page: View) -> dict[str, dict[str, str]]:
    if page.view == "week":
        prev, nxt = page.day - timedelta(days=7), page.day + timedelta(days=7)
    else:
        first = page.day.replace(day=1)
        prev = (first - timedelta(days=1)).replace(day=1)
        nxt = (first + timedelta(days=32)).replace(day=1)
    return {"previous": page.args(date=prev.isoformat()), "next": page.args(date=nxt.isoformat()),
            "today": page.args(date="")}


def _entry(roster: Roster, piece: EffectiveShift, lo: datetime, hi: datetime, day_start: datetime,
           tz, me: int | None) -> Entry:
    end = "24:00" if hi - day_start >= timedelta(hours=24) else hi.astimezone(tz).strftime("%H:%M")
    return Entry(piece.role.value, t("rosters.role." + piece.role.value), piece.surgeon_id,
                 _name(roster, piece.surgeon_id), lo.astimezone(tz).strftime("%H:%M"), end,
                 piece.surgeon_id == me, piece.source.value)


def _name(roster: Roster, sid: int | None) -> str:
    if sid is None:
        return ""
    surgeon = roster.surgeons.get(sid)
    return surgeon.name if surgeon else f"#{sid}"


def _team_name(roster: Roster, code: str) -> str:
    team = roster.teams[code]
    return team.name_zh if current_lang() == "zh" else team.name_en


def _finding_text(finding: Finding) -> str:
    return (finding.message_zh or finding.message) if current_lang() == "zh" else finding.message


def _can(trade: Trade, me: int | None, heads) -> dict[str, bool]:
    """Which buttons to show; the domain still decides when one is pressed."""
    if me is None:
        return {"take": False, "approve": False, "decline": False}
    named = trade.kind is TradeKind.SWAP and trade.counterpart == me
    requested = trade.status is TradeStatus.REQUESTED
    return {
        "take": requested and me != trade.requester
        and (trade.kind is TradeKind.GIVE_AWAY or named),
        "approve": trade.status is TradeStatus.TAKEN and me in heads,
        "decline": trade.status in OPEN and (me in heads or (requested and named)),
    }


# --------------------------------------------------------------------------- acting


def _back() -> View:
    """The page the form was on (hidden fields), checked like a GET; defaults if odd."""
    try:
        return _parse_view(request.form)
    except HTTPException:  # abort(400/404): the action still answers, on the default page
        return View(None, "week", _hub().clock().astimezone(LOCAL).date())


def _act(step: str, do: Callable[[int, str], Trade]):
    user = current_user()
    assert user is not None
    page = _back()
    if user.surgeon_id is None:
        audit("denied", "path", request.path[:64], method=request.method,
              reason="roster action without a surgeon")
        return _render(page, message=t("rosters.need_surgeon"), status=403, strict=False)
    try:
        do(user.surgeon_id, user.actor)
    except roster_ops.RosterOpError as exc:
        status = _refusal_status(exc)
        if status == 403:
            audit("denied", "path", request.path[:64], method=request.method,
                  reason=f"{type(exc).__name__}: {exc}"[:200])
        return _render(page, message=_refusal_text(exc), detail=safe_text(str(exc), 300),
                       status=status, strict=False)
    except StaleChange:
        return _render(page, message=t("rosters.refused"),
                       detail=("该申请已被他人更改，请刷新后重试" if current_lang() == "zh"
                               else "the request changed meanwhile; reload and try again"),
                       status=409, strict=False)
    except NotFound:
        return _render(page, message=_refusal_text(roster_ops.UnknownTrade()), status=404,
                       strict=False)
    except ValueError as exc:  # FormError, or the domain's own checks (end before start)
        return _render(page, message=t("rosters.bad_form"), detail=safe_text(str(exc), 300),
                       status=400, strict=False)
    flash(t("rosters.done." + step))
    return redirect(url_for("rosters.index", **page.args()), 303)


def _refusal_status(exc: roster_ops.RosterOpError) -> int:
    if isinstance(exc, roster_ops.NotAllowed):
        return 403
    if isinstance(exc, (roster_ops.UnknownTeam, roster_ops.UnknownSurgeon, roster_ops.UnknownTrade)):
        return 404
    return 409


def _refusal_text(exc: Exception) -> str:
    for cls in type(exc).__mro__:
        if cls in _REFUSALS:
            en, zh = _REFUSALS[cls]
            return zh if current_lang() == "zh" else en
    return t("rosters.refused")


def _form_team() -> tuple[str, ZoneInfo]:
    """The form's team and its zone (form times are its wall time)."""
    team = request.form.get("team", "")
    if not TEAM_RE.fullmatch(team):
        raise FormError("team: a team code is required")
    now = _hub().clock()
    roster = _hub().desk.snapshot(now, now + timedelta(seconds=1))
    if team not in roster.teams:
        raise roster_ops.UnknownTeam(f"no team {team}")
    return team, team_zone(roster.teams[team])


def _form_role(name: str, *, required: bool = True) -> Role | None:
    value = request.form.get(name, "")
    if not value:
        if required:
            raise FormError(f"{name}: required")
        return None
    try:
        return Role(value)
    except ValueError:
        raise FormError(f"{name}: one of {', '.join(r.value for r in Role)}") from None


def _form_time(name: str, tz: ZoneInfo) -> datetime:
    """A `datetime-local` value (YYYY-MM-DDTHH:MM), read as `tz`'s wall time; as UTC."""
    value = request.form.get(name, "").strip()
    if not LOCAL_TIME_RE.fullmatch(value):
        raise FormError(f"{name}: a date and time YYYY-MM-DDTHH:MM is required")
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise FormError(f"{name}: not a valid date and time") from None
    if not 2000 <= when.year < 2100:
        raise FormError(f"{name}: the time must lie between 2000 and 2100")
    return local_instant(when.date(), when.time().replace(second=0), tz)


def _form_int(name: str) -> int:
    value = request.form.get(name, "").strip()
    if not value.isdigit() or not 1 <= int(value) <= MAX_ID:
        raise FormError(f"{name}: a surgeon is required")
    return int(value)


def _form_note() -> str:
    note = request.form.get("note", "")
    if len(note) > MAX_NOTE:
        raise FormError(f"note: at most {MAX_NOTE} characters")
    return note


def _trade_id(trade_id: int) -> int:
    if not 1 <= trade_id <= MAX_ID:
        raise roster_ops.UnknownTrade(f"no trade {trade_id}")
    return trade_id


@bp.post("/trades/offer")
@signed_in()
def offer():
    def do(by: int, actor: str) -> Trade:
        team, tz = _form_team()
        return _hub().desk.offer(by=by, team=team, role=_form_role("role"),
                                 start=_form_time("start", tz), end=_form_time("end", tz),
                                 note=_form_note(), actor=actor)
    return _act("offer", do)


@bp.post("/trades/swap")
@signed_in()
def swap():
    def do(by: int, actor: str) -> Trade:
        team, tz = _form_team()
        return _hub().desk.swap(by=by, team=team, role=_form_role("role"),
                                start=_form_time("start", tz), end=_form_time("end", tz),
                                with_surgeon=_form_int("with_surgeon"),
                                their_start=_form_time("their_start", tz),
                                their_end=_form_time("their_end", tz),
                                their_role=_form_role("their_role", required=False),
                                note=_form_note(), actor=actor)
    return _act("swap", do)


@bp.post("/trades/<int:trade_id>/take")
@signed_in()
def take(trade_id: int):
    return _act("take", lambda by, actor: _hub().desk.take(_trade_id(trade_id), by=by, actor=actor))


@bp.post("/trades/<int:trade_id>/approve")
@signed_in()
def approve(trade_id: int):
    return _act("approve",
                lambda by, actor: _hub().desk.approve(_trade_id(trade_id), by=by, actor=actor))


@bp.post("/trades/<int:trade_id>/decline")
@signed_in()
def decline(trade_id: int):
    return _act("decline", lambda by, actor: _hub().desk.decline(
        _trade_id(trade_id), by=by, note=_form_note(), actor=actor))
