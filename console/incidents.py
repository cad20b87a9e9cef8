"""The major-incident page (重大突发事件) and the red banner every console page shows while one is on.

Supervisors and admins switch major-incident mode on (for one team or all,
with a note) and off; department heads see the page. Each switch goes through
`db.incidents.IncidentStore`: audited, and the department heads and the duty
desk alerted, in one transaction. The running service picks it up within
about a second (hotline/incidents.py).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, redirect, render_template, request, url_for

from console.auth import client_ip, current_user, signed_in
from console.i18n import add_words, t
from db.incidents import IncidentStore
from db.users import UserRole
from network.incidents import NOTE_MAX, Incident, IncidentError
from oncall.model import HOTLINE_TZ

bp = Blueprint("incidents", __name__, url_prefix="/incidents")
SWITCHERS = (UserRole.ADMIN, UserRole.SUPERVISOR)
VIEWERS = SWITCHERS + (UserRole.DEPARTMENT_HEAD,)
NAV = [("incidents.index", "incidents", VIEWERS)]
ALL_TEAMS = "all"

add_words({
    "incidents": {"zh": "重大突发事件", "en": "Major incidents"},
    "incident.banner": {"zh": "重大突发事件模式已启动", "en": "Major-incident mode is ON"},
    "incident.banner_detail": {"zh": "来电同时呼叫全部值班医生，来电者排队等候（合作医院优先）。",
                               "en": "Calls ring every on-call surgeon at once; callers queue "
                                     "(partner hospitals first)."},
    "incident.active": {"zh": "正在进行", "en": "In force"},
    "incident.none": {"zh": "当前无重大突发事件", "en": "No major incident in force"},
    "incident.history": {"zh": "历史记录", "en": "History"},
    "incident.scope": {"zh": "范围", "en": "Scope"},
    "incident.all_teams": {"zh": "全部专业组", "en": "All teams"},
    "incident.started": {"zh": "启动时间", "en": "Started"},
    "incident.started_by": {"zh": "启动人", "en": "Started by"},
    "incident.ended": {"zh": "解除时间", "en": "Ended"},
    "incident.ended_by": {"zh": "解除人", "en": "Ended by"},
    "incident.note": {"zh": "说明", "en": "Note"},
    "incident.switch_on": {"zh": "启动重大突发事件模式", "en": "Switch major-incident mode on"},
    "incident.switch_off": {"zh": "解除", "en": "Switch off"},
    "incident.on_done": {"zh": "已启动，科主任和值班台已收到通知。",
                         "en": "Switched on; the department heads and the duty desk are alerted."},
    "incident.off_done": {"zh": "已解除，恢复逐个呼叫。", "en": "Switched off; calls ring one by one again."},
    "incident.refused": {"zh": "操作被拒绝", "en": "Refused"},
    "incident.what": {"zh": "启动后：菜单先播放突发事件提示；该专业组来电同时呼叫所有值班医生；"
                            "来电者排队并听到排队位置，合作医院优先；科主任收到通知。每次操作均记入审计日志。",
                      "en": "When on: the menu plays an incident announcement; calls for the team ring "
                            "every on-call surgeon at once; callers queue and hear their place, partner "
                            "hospitals first; the department heads are alerted. Every switch is audited."},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)

    @app.context_processor
    def incident_banner() -> dict[str, Any]:
        # Every signed-in page: one small query (active incidents are few).
        if current_user() is None:
            return {"incident_banner": []}
        try:
            return {"incident_banner": _store().active()}
        except Exception:  # the banner never breaks a page; the page itself reports the database
            return {"incident_banner": []}


def _store() -> IncidentStore:
    from console import services

    hub = services()
    return IncidentStore(hub.engine, clock=hub.clock)


def _local(at: datetime | None) -> str:
    return at.astimezone(ZoneInfo(HOTLINE_TZ)).strftime("%Y-%m-%d %H:%M") if at else "-"


def scope_label(incident: Incident) -> str:
    return t("incident.all_teams") if incident.team is None else incident.team


@bp.get("/")
@signed_in(*VIEWERS)
def index():
    return _page()


def _page(message: str = "", error: str = "", status: int = 200):
    store = _store()
    user = current_user()
    return render_template(
        "incidents.html", active=store.active(), history=store.history(50), teams=store.teams(),
        can_switch=user is not None and user.role in SWITCHERS, local=_local, scope=scope_label,
        message=message, error=error, note_max=NOTE_MAX, all_teams=ALL_TEAMS), status


def _team_from_form(field: str) -> str | None:
    value = request.form.get(field, "")[:40]
    return None if value == ALL_TEAMS else value


@bp.post("/on")
@signed_in(*SWITCHERS)
def switch_on():
    try:
        _store().switch_on(_team_from_form("team"), current_user().actor,
                           request.form.get("note", "")[:NOTE_MAX], ip=client_ip())
    except IncidentError as exc:
        return _page(error=f"{t('incident.refused')}: {exc}", status=409)
    return redirect(url_for("incidents.index", done="on"))


@bp.post("/off")
@signed_in(*SWITCHERS)
def switch_off():
    try:
        _store().switch_off(_team_from_form("team"), current_user().actor, ip=client_ip())
    except IncidentError as exc:
        return _page(error=f"{t('incident.refused')}: {exc}", status=409)
    return redirect(url_for("incidents.index", done="off"))
