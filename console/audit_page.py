"""The audit log page (admins): the console's log and the roster's, newest first."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, render_template, request

from console.auth import signed_in
from console.i18n import add_words
from db.users import UserRole
from oncall.model import HOTLINE_TZ

bp = Blueprint("audit", __name__, url_prefix="/audit")
NAV = [("audit.index", "audit_log", (UserRole.ADMIN,))]
PAGE = 50
ACTIONS = ("sign_in", "sign_in_failed", "sign_in_throttled", "sign_out", "denied", "csrf_refused",
           "view_case", "play_recording", "download_recording", "add_note", "export_calls",
           # the network around the call (issue 6)
           "import", "add_number", "remove_number", "block", "unblock",
           "referral_create", "referral_status", "referral_assign", "referral_patient",
           "callback_created", "callback_assign", "callback_place", "callback_originate",
           "callback_result", "callback_case", "callback_close", "callback_cancel",
           "incident_on", "incident_off")

add_words({
    "audit.console": {"zh": "控制台操作", "en": "Console"},
    "audit.roster": {"zh": "排班变更", "en": "Roster changes"},
    "audit.at": {"zh": "时间", "en": "When"},
    "audit.actor": {"zh": "操作人", "en": "Who"},
    "audit.action": {"zh": "操作", "en": "Action"},
    "audit.subject": {"zh": "对象", "en": "Subject"},
    "audit.ip": {"zh": "地址", "en": "Address"},
    "audit.detail": {"zh": "详情", "en": "Detail"},
    "audit.all": {"zh": "全部", "en": "All"},
    "audit.filter": {"zh": "筛选", "en": "Filter"},
    "audit.previous": {"zh": "上一页", "en": "Previous"},
    "audit.next": {"zh": "下一页", "en": "Next"},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


@bp.get("/")
@signed_in(UserRole.ADMIN)
def index():
    from console import services

    hub = services()
    action = request.args.get("action", "")
    if action not in ACTIONS:
        action = ""
    try:
        page = max(0, min(int(request.args.get("page", "0")), 10_000))
    except ValueError:
        page = 0
    since = hub.clock() - timedelta(days=90)
    entries, total = hub.audit.entries(action=action or None, since=since, limit=PAGE,
                                       offset=page * PAGE)
    roster = hub.desk.audit(limit=PAGE)
    return render_template("audit.html", entries=entries, total=total, page=page, pages=PAGE,
                           action=action, actions=ACTIONS, roster=roster, local=_local)


def _local(at: datetime) -> str:
    return at.astimezone(ZoneInfo(HOTLINE_TZ)).strftime("%Y-%m-%d %H:%M:%S")
