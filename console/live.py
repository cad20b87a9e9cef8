"""The live page (实时): calls in progress now, from AMI, and who is on call now per team.

`/live/` renders the board once; `static/live.js` then fetches
`/live/calls.json` every 2 s (same session cookie, same roles) and redraws it
without a reload. Staff only: admins, supervisors and department heads.

Where the calls come from (the seam): one `LiveSource` per app, kept in
`app.extensions["hotline_live"]` (a `LiveHub`) and started by the first
request that needs it, stopped at interpreter exit (or `LiveHub.stop()`).
By default it is `console.livecalls.AmiLiveSource` on the instance's AMI with
the console's own account (`HotlineConfig.console_ami_secret()`); an app
without a `HotlineConfig` says AMI is not configured. Tests and embedders set
`app.config["HOTLINE_LIVE_SOURCE"]` to a `LiveSource` (anything with
`snapshot()`, `start()`, `stop()`, e.g. `StaticLiveSource`) or to a factory
`app -> LiveSource`.

If AMI cannot be reached the page says so and still shows the chains.
"""
from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, current_app, jsonify, render_template, url_for
from werkzeug.routing import BuildError

from console.auth import STAFF, signed_in
from console.i18n import add_words, current_lang, t
from console.livecalls import (
    LiveCall,
    LiveSnapshot,
    LiveSource,
    ami_source,
    cases_by_linkedid,
)
from oncall.checks import ROLE_ZH
from oncall.model import HOTLINE_TZ, OnCall, Role, Roster
from oncall.rotation import team_zone

bp = Blueprint("live", __name__, url_prefix="/live")
NAV = [("live.index", "live", STAFF)]
LIVE_SOURCE = "HOTLINE_LIVE_SOURCE"  # app.config: a LiveSource, or app -> LiveSource
EXTENSION = "hotline_live"
REFRESH_MS = 2000
LOCAL = ZoneInfo(HOTLINE_TZ)
CASE_ENDPOINT = "cases.detail"  # the case page, if the app has one (url_for(..., case_id=))

add_words({
    "live.title": {"zh": "实时来电与值班", "en": "Live calls and on call now"},
    "live.calls": {"zh": "正在进行的来电", "en": "Calls in progress"},
    "live.no_calls": {"zh": "当前没有来电", "en": "No calls in progress"},
    "live.caller": {"zh": "来电号码", "en": "Caller"},
    "live.state": {"zh": "状态", "en": "State"},
    "live.duration": {"zh": "时长", "en": "Duration"},
    "live.team": {"zh": "专业组", "en": "Team"},
    "live.case": {"zh": "病例记录", "en": "Case"},
    "live.with": {"zh": "呼叫 / 通话对象", "en": "Ringing / talking to"},
    "live.state.ivr": {"zh": "语音导航 / 等候", "en": "In the menu / waiting"},
    "live.state.ringing": {"zh": "正在呼叫医生", "en": "Ringing a surgeon"},
    "live.state.answering": {"zh": "医生已接起，待按1确认", "en": "Surgeon picked up, pressing 1"},
    "live.state.bridged": {"zh": "通话中", "en": "Talking"},
    "live.state.voicemail": {"zh": "留言中", "en": "Leaving a message"},
    "live.forged": {"zh": "来电号码含异常字符", "en": "caller ID with forged lines"},
    "live.nurse": {"zh": "值班护士", "en": "Duty nurse"},
    "live.on_call": {"zh": "当前值班（按呼叫顺序）", "en": "On call now (in ring order)"},
    "live.nobody": {"zh": "无人值班", "en": "Nobody on call"},
    "live.role": {"zh": "岗位", "en": "Role"},
    "live.surgeon": {"zh": "医生", "en": "Surgeon"},
    "live.phone": {"zh": "电话", "en": "Phone"},
    "live.until": {"zh": "值班至", "en": "Until"},
    "live.updated": {"zh": "更新于", "en": "Updated"},
    "live.offline": {"zh": "无法刷新（网络中断或登录已过期），请刷新页面",
                     "en": "Cannot refresh (network down or signed out); reload the page"},
    "live.ami.ok": {"zh": "已连接呼叫系统（AMI）", "en": "Connected to the call system (AMI)"},
    "live.ami.starting": {"zh": "正在连接呼叫系统（AMI）…", "en": "Connecting to the call system (AMI)…"},
    "live.ami.unreachable": {"zh": "无法连接呼叫系统（AMI），实时来电暂不可见；值班信息仍然有效",
                             "en": "The call system (AMI) is unreachable: live calls cannot be "
                                   "shown; who is on call below is still valid"},
    "live.ami.refused": {"zh": "呼叫系统（AMI）拒绝了控制台账户（请重新生成配置并重载 Asterisk）",
                         "en": "The call system (AMI) refused the console's account "
                               "(re-render the config and reload Asterisk)"},
    "live.ami.not_configured": {"zh": "未配置呼叫系统（AMI），实时来电不可见",
                                "en": "No call system (AMI) is configured: live calls cannot be shown"},
    "live.role.primary": {"zh": ROLE_ZH[Role.PRIMARY], "en": "Primary"},
    "live.role.backup": {"zh": ROLE_ZH[Role.BACKUP], "en": "Backup"},
    "live.role.attending": {"zh": ROLE_ZH[Role.ATTENDING], "en": "Attending"},
    "live.role.department_head": {"zh": ROLE_ZH[Role.DEPARTMENT_HEAD], "en": "Department head"},
})


class LiveHub:
    """One live source per app: built and started by the first request, stopped at exit."""

    def __init__(self, app: Flask) -> None:
        self._app = app
        self._lock = threading.Lock()
        self._source: LiveSource | None = None

    def source(self) -> LiveSource:
        with self._lock:
            if self._source is None:
                hook = self._app.config.get(LIVE_SOURCE)
                if hook is None:
                    from console import services
                    source: LiveSource = ami_source(services().config)
                elif hasattr(hook, "snapshot"):
                    source = hook
                else:
                    source = hook(self._app)
                source.start()
                _stop_at_exit(self)
                self._source = source
            return self._source

    def stop(self) -> None:
        with self._lock:
            source, self._source = self._source, None
        if source is not None:
            source.stop()


def _stop_at_exit(hub: LiveHub) -> None:
    ref = weakref.ref(hub)  # the app may go away first (tests build many)

    def stop() -> None:
        alive = ref()
        if alive is not None:
            alive.stop()
    atexit.register(stop)


def hub(app: Flask | None = None) -> LiveHub:
    return (app or current_app).extensions[EXTENSION]


def register(app: Flask, csrf) -> None:
    app.extensions[EXTENSION] = LiveHub(app)
    app.register_blueprint(bp)


# --------------------------------------------------------------------------- views


@bp.get("/")
@signed_in(*STAFF)
def index():
    return render_template("live.html", board=board(), refresh_ms=REFRESH_MS)


@bp.get("/calls.json")
@signed_in(*STAFF)
def calls_json():
    return jsonify(board())


# --------------------------------------------------------------------------- the board


def board() -> dict[str, Any]:
    """What the page shows, as JSON-ready data (the page and the script draw the same).

    Callers' numbers (and names: a caller ID's name is often the number again)
    are masked here for a role that sees them masked, so the page's first
    render and its 2-second redraw from `/live/calls.json` show the same.
    """
    from console import listed_number, services

    snapshot = hub().source().snapshot()
    now = services().clock()
    roster, chains = services().desk.chains(now)
    cases = cases_by_linkedid(services().engine, [c.linkedid for c in snapshot.calls]) \
        if snapshot.calls else {}
    phones = {s.phone: s for s in roster.surgeons.values()}
    return {
        "at": _iso(now),
        "ami": _ami(snapshot),
        "calls": [_call(c, cases.get(c.linkedid), roster, phones, listed_number)
                  for c in snapshot.calls],
        "chains": [_chain(roster, code, members) for code, members in chains.items()],
    }


def _ami(snapshot: LiveSnapshot) -> dict[str, Any]:
    return {"ok": snapshot.ok, "status": snapshot.status.value,
            "message": t("live.ami." + snapshot.status.value),
            "polled_at": _iso(snapshot.polled_at)}


def _team_name(roster: Roster, code: str | None) -> str:
    if not code:
        return ""
    if code == "nurse":
        return t("live.nurse")
    team = roster.teams.get(code)
    if team is None:
        return code
    return team.name_zh if current_lang() == "zh" else team.name_en


def _case_url(case_id: str) -> str | None:
    if CASE_ENDPOINT not in current_app.view_functions:
        return None
    try:
        return url_for(CASE_ENDPOINT, case_id=case_id)
    except BuildError:
        return None


def _call(call: LiveCall, case, roster: Roster, phones,
          shown: Callable[[str | None], str]) -> dict[str, Any]:
    surgeon = phones.get(call.target) if call.target else None
    team = case.team if case else None
    return {
        "linkedid": call.linkedid,
        "caller": shown(call.caller),
        "caller_name": shown(call.caller_name),
        "state": call.state.value,
        "state_label": t("live.state." + call.state.value),
        "duration_s": call.duration_s,
        "duration": _clock_text(call.duration_s),
        "team": team,
        "team_name": _team_name(roster, team),
        "case_id": case.case_id if case else None,
        "case_url": _case_url(case.case_id) if case else None,
        "target": call.target,
        "target_name": surgeon.name if surgeon else None,
        "channels": call.channels,
        "forged": call.forged,
    }


def _chain(roster: Roster, code: str, members: list[OnCall]) -> dict[str, Any]:
    tz = team_zone(roster.teams[code])
    return {
        "team": code,
        "name": _team_name(roster, code),
        "members": [{
            "position": n,
            "role": m.role.value,
            "role_label": t("live.role." + m.role.value),
            "surgeon_id": m.surgeon.id,
            "name": m.surgeon.name,
            "phone": m.surgeon.phone,
            "until": m.shift.end.astimezone(tz).strftime("%m-%d %H:%M"),
        } for n, m in enumerate(members, 1)],
    }


def _clock_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.astimezone(LOCAL).isoformat(timespec="seconds")
