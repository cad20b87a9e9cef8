"""Callback tasks (回拨任务): the list, one-click 回拨, assign to me, close with a note.

Who sees and acts on a task (`may_act`): admins, supervisors and department
heads every task; a surgeon the tasks they own and the tasks of the teams
whose roster names them (`rostered_teams`: a shift, an override or a
rotation not over for more than `ROSTER_MEMORY`) -- a callback is the team's
work until someone owns it. Anything else is a 403 through `deny()`
(audited), and the list shows a surgeon only those tasks. The caller's
number is shown as the call list shows it (`caller_raw_safe`).

回拨 is a POST with the CSRF token: it only marks the
task `placing` in the database -- the service, which alone may originate,
rings the surgeon within a second or two (hotline/callbacks.py). A surgeon
who clicks is rung themself and becomes the owner; staff ring the owner.
Every change is audited by the store in its own transaction.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from sqlalchemy import Engine, or_, select

from console.auth import current_user, deny, signed_in
from console.calls import local, team_word
from console.i18n import add_words, t
from db.callbacks import VIEWS, CallbackListRow, CallbackStore, Changed, UnknownCallback
from db.models import OverrideRow, RotationRow, ShiftRow
from network.callbacks import (
    NOTE_MAX,
    AlreadyPlacing,
    CallbackError,
    CallbackStatus,
    CallbackTask,
    NoSurgeon,
    NotDialable,
    NumberUnknown,
    TaskClosed,
)

bp = Blueprint("callbacks", __name__, url_prefix="/callbacks")
NAV = [("callbacks.index", "callbacks", ())]

add_words({
    "callbacks": {"zh": "回拨任务", "en": "Callbacks"},
    "callbacks.view.active": {"zh": "待处理", "en": "To do"},
    "callbacks.view.overdue": {"zh": "已超时", "en": "Overdue"},
    "callbacks.view.mine": {"zh": "我的", "en": "Mine"},
    "callbacks.view.closed": {"zh": "已关闭", "en": "Closed"},
    "callbacks.view.all": {"zh": "全部", "en": "All"},
    "callbacks.due": {"zh": "应回拨时间", "en": "Due"},
    "callbacks.reason": {"zh": "原因", "en": "Reason"},
    "callbacks.reason.voicemail": {"zh": "留言", "en": "Voicemail"},
    "callbacks.reason.abandoned": {"zh": "未接通挂机", "en": "Abandoned"},
    "callbacks.reason.requested": {"zh": "来电者要求回拨", "en": "Asked to be called back"},
    "callbacks.caller": {"zh": "来电者", "en": "Caller"},
    "callbacks.unknown_number": {"zh": "号码未知", "en": "number unknown"},
    "callbacks.team": {"zh": "专业组", "en": "Team"},
    "callbacks.owner": {"zh": "负责医生", "en": "Owner"},
    "callbacks.nobody": {"zh": "未指派", "en": "nobody"},
    "callbacks.attempts": {"zh": "回拨次数", "en": "Attempts"},
    "callbacks.status": {"zh": "状态", "en": "Status"},
    "callbacks.note": {"zh": "备注", "en": "Note"},
    "callbacks.case": {"zh": "来电记录", "en": "Call"},
    "callbacks.status.open": {"zh": "待回拨", "en": "open"},
    "callbacks.status.placing": {"zh": "正在呼叫医生…", "en": "calling the surgeon…"},
    "callbacks.status.placed": {"zh": "回拨进行中", "en": "callback in progress"},
    "callbacks.status.done": {"zh": "已完成", "en": "done"},
    "callbacks.status.failed": {"zh": "多次未接通", "en": "failed"},
    "callbacks.status.cancelled": {"zh": "已取消", "en": "cancelled"},
    "callbacks.overdue": {"zh": "已超时", "en": "overdue"},
    "callbacks.place": {"zh": "回拨", "en": "Call back"},
    "callbacks.assign_me": {"zh": "指派给我", "en": "Assign to me"},
    "callbacks.close": {"zh": "关闭", "en": "Close"},
    "callbacks.cancel": {"zh": "无需回拨（取消）", "en": "Not needed (cancel)"},
    "callbacks.close_note": {"zh": "处理说明", "en": "What was done"},
    "callbacks.none": {"zh": "没有回拨任务", "en": "No callback tasks"},
    "callbacks.placing_started": {"zh": "正在呼叫医生…医生接听并按1后将呼叫来电者。刷新查看结果。",
                                  "en": "Calling the surgeon… once they press 1 the caller is "
                                        "rung. Reload for the result."},
    "callbacks.err.number_unknown": {"zh": "来电号码未知，无法回拨", "en": "The caller's number is unknown"},
    "callbacks.err.not_dialable": {"zh": "该号码不是国内手机或固话，请人工回拨",
                                   "en": "Not a domestic mobile or landline: call it by hand"},
    "callbacks.err.already": {"zh": "该任务正在回拨中", "en": "This callback is already being placed"},
    "callbacks.err.closed": {"zh": "该任务已关闭", "en": "This task is closed"},
    "callbacks.err.no_surgeon": {"zh": "请先指派负责医生", "en": "Assign an owner first"},
    "callbacks.err.changed": {"zh": "任务已被他人修改，请刷新", "en": "Someone changed it meanwhile; reload"},
    "callbacks.err.note": {"zh": f"请填写处理说明（最多 {NOTE_MAX} 字）",
                           "en": f"Write what was done (at most {NOTE_MAX} characters)"},
    "callbacks.err.not_surgeon": {"zh": "只有医生账号可以指派给自己",
                                  "en": "Only a surgeon's account can take a task"},
    "callbacks.linked": {"zh": "回拨记录", "en": "Callbacks"},
    "callbacks.linked_from": {"zh": "回拨自来电", "en": "Callback for the call"},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


def store() -> CallbackStore:
    from console import services

    hub = services()
    return CallbackStore(hub.engine, clock=hub.clock)


# A surgeon keeps their team's callbacks for a while after their last shift in it.
ROSTER_MEMORY = timedelta(days=30)
# The list is filtered after reading for a surgeon: read enough to fill it.
SURGEON_LIST_READ = 1000


def rostered_teams(engine: Engine, surgeon_id: int | None, now: datetime) -> frozenset[str]:
    """The teams whose roster names the surgeon: a shift or override ending after
    now - ROSTER_MEMORY, or a rotation not ended before then (members are a text list)."""
    if surgeon_id is None:
        return frozenset()
    since = now - ROSTER_MEMORY
    teams: set[str] = set()
    with engine.connect() as conn:
        for table in (ShiftRow, OverrideRow):
            teams.update(conn.execute(select(table.team).distinct().where(
                table.surgeon_id == surgeon_id, table.ends_at > since)).scalars())
        for team, members in conn.execute(select(RotationRow.team, RotationRow.members).where(
                or_(RotationRow.until_date.is_(None), RotationRow.until_date >= since.date()))):
            if str(surgeon_id) in (m.strip() for m in (members or "").split(",")):
                teams.add(team)
    return frozenset(teams)


def may_act(sees_all: bool, surgeon_id: int | None, task: CallbackTask,
            teams: Collection[str]) -> bool:
    """Staff (`sees_all`) on every task; a surgeon on tasks they own or of their teams."""
    if sees_all:
        return True
    if surgeon_id is None:
        return False
    return task.owner_surgeon_id == surgeon_id or (task.team is not None and task.team in teams)


def visible_rows(rows: list[CallbackListRow], sees_all: bool, surgeon_id: int | None,
                 teams: Collection[str]) -> list[CallbackListRow]:
    return [row for row in rows if may_act(sees_all, surgeon_id, row.task, teams)]


def error_word(exc: Exception) -> str:
    """The console's word for a refused change."""
    if isinstance(exc, NumberUnknown):
        return "callbacks.err.number_unknown"
    if isinstance(exc, NotDialable):
        return "callbacks.err.not_dialable"
    if isinstance(exc, AlreadyPlacing):
        return "callbacks.err.already"
    if isinstance(exc, TaskClosed):
        return "callbacks.err.closed"
    if isinstance(exc, NoSurgeon):
        return "callbacks.err.no_surgeon"
    if isinstance(exc, Changed):
        return "callbacks.err.changed"
    return "callbacks.err.note"


def _render(view: str, *, message: str | None = None, error: str | None = None,
            status: int = 200):
    from console import services

    user = current_user()
    hub = services()
    now = hub.clock()
    sees_all = user.role.sees_all_cases
    rows = store().list(view, surgeon_id=user.surgeon_id, now=now,
                        **({} if sees_all else {"limit": SURGEON_LIST_READ}))
    if not sees_all:
        rows = visible_rows(rows, False, user.surgeon_id,
                            rostered_teams(hub.engine, user.surgeon_id, now))[:200]
    return render_template(
        "callbacks.html", rows=rows, view=view, views=VIEWS, now=now, local=local,
        team_word=team_word, message=message, error=error, note_max=NOTE_MAX,
        placing=CallbackStatus.PLACING, status_word=lambda s: t(f"callbacks.status.{s.value}"),
        reason_word=lambda r: t(f"callbacks.reason.{r.value}"),
    ), status


def _view() -> str:
    view = request.values.get("view", "active")
    return view if view in VIEWS else "active"


@bp.get("/")
@signed_in()
def index():
    placing = request.args.get("placing", "")
    return _render(_view(), message=t("callbacks.placing_started") if placing.isdigit() else None)


def _task_id(task_id: str) -> int:
    """The task's id if the user may act on it: else 404 (unknown) or 403 (audited)."""
    from console import services

    # ASCII only: str.isdigit() also takes "²" (int() then raises) and "１" (read as 1).
    if not (task_id.isascii() and task_id.isdigit()) or len(task_id) > 10:
        abort(404)
    task = store().get(int(task_id))
    if task is None:
        abort(404)
    user = current_user()
    hub = services()
    if not user.role.sees_all_cases and not may_act(
            False, user.surgeon_id, task, rostered_teams(hub.engine, user.surgeon_id, hub.clock())):
        deny(f"callback {task.id}: neither the surgeon's nor their team's")
    return task.id


@bp.post("/<task_id>/place")
@signed_in()
def place(task_id: str):
    user = current_user()
    try:
        store().request_placement(_task_id(task_id), user.actor, surgeon_id=user.surgeon_id)
    except UnknownCallback:
        abort(404)
    except CallbackError as exc:
        return _render(_view(), error=t(error_word(exc)), status=409)
    return redirect(url_for("callbacks.index", view=_view(), placing=task_id), code=303)


@bp.post("/<task_id>/assign")
@signed_in()
def assign(task_id: str):
    user = current_user()
    if user.surgeon_id is None:
        return _render(_view(), error=t("callbacks.err.not_surgeon"), status=400)
    try:
        store().assign(_task_id(task_id), user.surgeon_id, user.actor)
    except UnknownCallback:
        abort(404)
    except CallbackError as exc:
        return _render(_view(), error=t(error_word(exc)), status=409)
    return redirect(url_for("callbacks.index", view=_view()), code=303)


@bp.post("/<task_id>/close")
@signed_in()
def close(task_id: str):
    user = current_user()
    note = request.form.get("note", "")
    cancelled = request.form.get("cancelled") == "1"
    if "\x00" in note:  # PostgreSQL text cannot hold a NUL: refuse it here, not with a 500
        return _render(_view(), error=t("callbacks.err.note"), status=400)
    try:
        store().close(_task_id(task_id), user.actor, note, cancelled=cancelled)
    except UnknownCallback:
        abort(404)
    except CallbackError as exc:
        status = 400 if type(exc) is CallbackError else 409
        return _render(_view(), error=t(error_word(exc)), status=status)
    return redirect(url_for("callbacks.index", view=_view()), code=303)


def callback_panel(case) -> dict:
    """What the case page shows about callbacks ("回拨记录"): the task opened for
    this case and the callback cases placed for it, or the case this one calls back."""
    tasks = store()
    return {"task": tasks.for_case(case.case_id), "linked": tasks.linked_cases(case.case_id),
            "linked_from": case.linked_case_id,
            "status_word": lambda s: t(f"callbacks.status.{s.value}"),
            "reason_word": lambda r: t(f"callbacks.reason.{r.value}")}
