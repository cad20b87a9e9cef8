"""Referrals in the console (转诊/转运): the list, and the panel on a case's page.

`/referrals/` lists referrals, open ones first, with the patient's essentials
and the time since injury coloured by ischaemia urgency (`network.referrals`).
`static/referrals.js` makes that time tick without a reload; the page is
right without it.

The panel on the case page (`referral_panel.html`, filled by `referral_panel`)
turns a case into a referral ("转为转诊"), then offers a button for each status
the state machine allows next, with a note; every form carries the version
the page was drawn from, so a change made in between is refused (409) rather
than overwritten. The events timeline shows who changed what, and when.

Who may act: admins, supervisors and department heads on every referral; a
surgeon on the referrals of cases they took part in (the case page's rule,
`console.cases.took_part`) and on referrals assigned to them. Anything else
is a 403 through `deny()` (audited). Only staff assign the receiving team and
surgeon. The list shows a surgeon just the referrals they may act on.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping
from zoneinfo import ZoneInfo

from flask import Blueprint, Flask, abort, redirect, render_template, request, url_for
from sqlalchemy import select

from cases.lifecycle import Case
from console.auth import STAFF, client_ip, current_user, deny, signed_in
from console.calls import local, team_word
from console.cases import load_case, may_see, took_part
from console.i18n import add_words, current_lang, t
from db.models import PartnerHospitalRow, SurgeonRow, TeamRow
from db.referrals import (
    AlreadyReferred,
    CaseNotFound,
    InvalidAssignment,
    Listed,
    ReferralNotFound,
    ReferralStore,
    StaleReferral,
)
from db.users import User
from network.referrals import (
    ISCHAEMIA_HOURS,
    MAX_INJURY,
    MAX_NOTE,
    SEX_LABELS,
    STATUS_LABELS,
    IllegalTransition,
    Ischaemia,
    InvalidPatient,
    Patient,
    ReasonRequired,
    Referral,
    ReferralError,
    ReferralStatus,
    Sex,
    UnknownStatus,
    Urgency,
    elapsed_words,
    ischaemia,
    parse_status,
    patient,
)
from oncall.model import HOTLINE_TZ

bp = Blueprint("referrals", __name__, url_prefix="/referrals")
NAV = [("referrals.index", "ref.nav", ())]
LOCAL = ZoneInfo(HOTLINE_TZ)
LEVELS = (Urgency.OK, Urgency.URGENT, Urgency.CRITICAL, Urgency.BEYOND)  # referrals.js's order
AGE_RE = re.compile(r"[0-9]{1,3}", re.ASCII)
# <input type="datetime-local">: local wall time in Asia/Shanghai, minutes or seconds.
LOCAL_TIME_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2})?", re.ASCII)
ID_RE = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)
TEAM_RE = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)

add_words({
    "ref.nav": {"zh": "转诊", "en": "Referrals"},
    "ref.title": {"zh": "转诊 / 转运", "en": "Referrals and transfers"},
    "ref.panel": {"zh": "转诊 / 转运", "en": "Referral and transfer"},
    "ref.none": {"zh": "没有符合条件的转诊", "en": "No referrals match"},
    "ref.status": {"zh": "状态", "en": "Status"},
    "ref.hospital": {"zh": "合作医院", "en": "Partner hospital"},
    "ref.team": {"zh": "接收专业组", "en": "Receiving team"},
    "ref.surgeon": {"zh": "接收医生", "en": "Receiving surgeon"},
    "ref.patient": {"zh": "患者", "en": "Patient"},
    "ref.age": {"zh": "年龄", "en": "Age"},
    "ref.age_unit": {"zh": "岁", "en": "y"},
    "ref.sex": {"zh": "性别", "en": "Sex"},
    "ref.injury": {"zh": "伤情", "en": "Injury"},
    "ref.injured_at": {"zh": "受伤时间（北京时间）", "en": "Time of injury (Beijing time)"},
    "ref.since_injury": {"zh": "伤后时间", "en": "Since injury"},
    "ref.unknown": {"zh": "不详", "en": "unknown"},
    "ref.case": {"zh": "病例记录", "en": "Case"},
    "ref.updated": {"zh": "最近更新", "en": "Last change"},
    "ref.all": {"zh": "全部", "en": "All"},
    "ref.open_only": {"zh": "仅未结束", "en": "Open only"},
    "ref.filter": {"zh": "筛选", "en": "Filter"},
    "ref.only_yours": {"zh": "仅显示您参与或接收的转诊", "en": "Only the referrals you took part in or receive"},
    "ref.create": {"zh": "转为转诊", "en": "Make this a referral"},
    "ref.create_hint": {"zh": "将本次来电登记为合作医院转诊，并填写患者基本信息",
                        "en": "Record this call as a partner hospital's referral, with the patient's essentials"},
    "ref.note": {"zh": "备注 / 原因", "en": "Note / reason"},
    "ref.note_hint": {"zh": "拒绝或取消时必须填写原因", "en": "A reason is required to decline or cancel"},
    "ref.next": {"zh": "更改状态", "en": "Change the status"},
    "ref.final": {"zh": "该转诊已结束", "en": "This referral is closed"},
    "ref.events": {"zh": "转诊记录", "en": "Referral timeline"},
    "ref.at": {"zh": "时间", "en": "When"},
    "ref.by": {"zh": "操作人", "en": "By"},
    "ref.save_patient": {"zh": "保存患者信息", "en": "Save the essentials"},
    "ref.edit_patient": {"zh": "修改患者信息", "en": "Edit the patient's essentials"},
    "ref.assign": {"zh": "指定接收专业组 / 医生", "en": "Assign the receiving team / surgeon"},
    "ref.assign_save": {"zh": "保存", "en": "Save"},
    "ref.nobody": {"zh": "（未指定）", "en": "(none)"},
    "ref.version": {"zh": "版本", "en": "Version"},
    "ref.stale": {"zh": "该转诊已被他人修改，请查看最新状态后重试",
                  "en": "Someone changed this referral meanwhile; check its state and try again"},
    "ref.exists": {"zh": "该病例已转为转诊", "en": "This case is a referral already"},
    "ref.bad_age": {"zh": "年龄：0–120 的整数，或留空表示不详", "en": "Age: whole years 0–120, or empty for unknown"},
    "ref.bad_time": {"zh": "受伤时间格式无效", "en": "The time of injury is not a valid time"},
    "ref.bad_form": {"zh": "表单内容无效，请刷新页面后重试", "en": "The form is not valid; reload the page and try again"},
    "ref.urgency.none": {"zh": "", "en": ""},
    "ref.urgency.ok": {"zh": "时限内", "en": "within the limit"},
    "ref.urgency.urgent": {"zh": "紧急", "en": "urgent"},
    "ref.urgency.critical": {"zh": "危急：接近缺血时限", "en": "critical: near the ischaemia limit"},
    "ref.urgency.beyond": {"zh": "已超过常温缺血时限", "en": "past the warm ischaemia limit"},
    "ref.part.digit": {"zh": "断指（常温缺血时限约12小时）", "en": "digit (warm ischaemia limit about 12 h)"},
    "ref.part.limb": {"zh": "断肢（常温缺血时限约6小时）", "en": "limb (warm ischaemia limit about 6 h)"},
    "ref.part.unknown": {"zh": "部位未明，按断肢时限（约6小时）", "en": "part not stated: limb limit (about 6 h)"},
    **{f"ref.status.{s.value}": {"zh": zh, "en": en} for s, (zh, en) in STATUS_LABELS.items()},
    **{f"ref.to.{s.value}": {"zh": f"改为：{zh}", "en": f"Mark {en}"}
       for s, (zh, en) in STATUS_LABELS.items()},
    **{f"ref.sex.{s.value}": {"zh": zh, "en": en} for s, (zh, en) in SEX_LABELS.items()},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


def _store() -> ReferralStore:
    from console import services

    hub = services()
    return ReferralStore(hub.engine, clock=hub.clock)


# --------------------------------------------------------------------------- who may do what


def may_act(user: User, referral: Referral, case: Case | None) -> bool:
    """Staff on every referral; a surgeon on those of cases they took part in, or assigned
    to them."""
    if user.role in STAFF:
        return True
    sid = user.surgeon_id
    if sid is None:
        return False
    return referral.surgeon_id == sid or (case is not None and took_part(case, sid))


def may_create(user: User, case: Case) -> bool:
    """Whoever may see the case may make it a referral (staff, and the surgeons who took part)."""
    return may_see(user, case)


def may_assign(user: User) -> bool:
    return user.role in STAFF


# --------------------------------------------------------------------------- words


def status_word(status: str) -> str:
    return t(f"ref.status.{status}")


def sex_word(sex: Sex) -> str:
    return t(f"ref.sex.{sex.value}")


def elapsed_word(info: Ischaemia) -> str:
    zh, en = elapsed_words(info.elapsed)
    return en if current_lang() == "en" else zh


def _iso(at: datetime | None) -> str:
    return at.astimezone(LOCAL).isoformat() if at is not None else ""


def since_attrs(referral: Referral, info: Ischaemia) -> dict[str, str]:
    """data-* attributes for static/referrals.js (it recomputes the text and colour)."""
    attrs = {"data-injured-at": _iso(referral.patient.injured_at), "data-lang": current_lang()}
    if info.urgency is not Urgency.NONE:
        attrs["data-hours"] = ",".join(f"{h:g}" for h in ISCHAEMIA_HOURS[info.part])
        # The words of each level, in order, so the script can keep the label
        # next to the counter in step with its colour.
        attrs["data-words"] = "|".join(t(f"ref.urgency.{u.value}") for u in LEVELS)
    return attrs


def _local_input(at: datetime | None) -> str:
    return at.astimezone(LOCAL).strftime("%Y-%m-%dT%H:%M") if at is not None else ""


# --------------------------------------------------------------------------- forms


class FormProblem(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def parse_patient(form: Mapping[str, str], now: datetime) -> Patient:
    """The essentials from a form (age, sex, injury, injured_at as local wall time), checked."""
    age_text = (form.get("age") or "").strip()
    if age_text and not AGE_RE.fullmatch(age_text):
        raise FormProblem(t("ref.bad_age"))
    when_text = (form.get("injured_at") or "").strip()
    injured_at = None
    if when_text:
        if not LOCAL_TIME_RE.fullmatch(when_text):
            raise FormProblem(t("ref.bad_time"))
        try:
            injured_at = datetime.fromisoformat(when_text).replace(tzinfo=LOCAL)
        except ValueError:
            raise FormProblem(t("ref.bad_time")) from None
    try:
        return patient(age=int(age_text) if age_text else None, sex=form.get("sex") or None,
                       injury=form.get("injury", ""), injured_at=injured_at, now=now)
    except InvalidPatient as exc:
        raise FormProblem(_message(exc)) from None


def _message(exc: ReferralError) -> str:
    return exc.message if current_lang() == "en" else exc.message_zh


def _version(form: Mapping[str, str]) -> int:
    text = form.get("version", "")
    if not ID_RE.fullmatch(text):
        raise FormProblem(t("ref.bad_form"))
    return int(text)


# --------------------------------------------------------------------------- the case panel


@dataclass(frozen=True)
class Choice:
    value: str
    label: str


def _choices() -> tuple[list[Choice], list[Choice]]:
    from console import services

    with services().engine.connect() as conn:
        teams = [Choice(r.code, team_word(r.code, r.name_zh, r.name_en))
                 for r in conn.execute(select(TeamRow).order_by(TeamRow.code))]
        surgeons = [Choice(str(r.id), f"{r.name} (#{r.id})")
                    for r in conn.execute(select(SurgeonRow).order_by(SurgeonRow.id))]
    return teams, surgeons


def referral_panel(case: Case, user: User, *, error: str | None = None,
                   form: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What `referral_panel.html` needs for this case and user (the case page calls this)."""
    from console import services

    listed = _store().get_by_case(case.case_id)
    now = services().clock()
    panel: dict[str, Any] = {
        "listed": listed, "error": error, "form": form or {}, "sexes": list(Sex),
        "max_injury": MAX_INJURY, "max_note": MAX_NOTE, "status_word": status_word,
        "sex_word": sex_word, "local": local, "local_input": _local_input,
        "may_create": listed is None and may_create(user, case),
        "may_act": False, "may_assign": False,
    }
    if listed is not None:
        referral = listed.referral
        info = ischaemia(referral, now)
        panel.update(
            referral=referral, info=info, elapsed=elapsed_word(info),
            since_attrs=since_attrs(referral, info),
            may_act=may_act(user, referral, case), may_assign=may_assign(user),
            team_name=team_word(referral.team, listed.team_name_zh, listed.team_name_en),
        )
        if panel["may_assign"]:
            panel["teams"], panel["surgeons"] = _choices()
    return panel


def _render_case(case: Case, *, error: str, form: Mapping[str, str], status: int):
    from console.cases import _render

    return _render(case, referral={"error": error, "form": form}, status=status)


def _back(case_id: str):
    return redirect(url_for("cases.detail", case_id=case_id) + "#referral", code=303)


def _acting(referral_id: int) -> tuple[Listed, Case]:
    """The referral and its case, if the user may act on it (else 404 / 403, audited)."""
    listed = _store().get(referral_id)
    if listed is None:
        abort(404)
    case = load_case(listed.referral.case_id)
    if case is None:
        abort(404)
    if not may_act(current_user(), listed.referral, case):
        deny(f"referral {referral_id}: the surgeon took no part in it")
    return listed, case


def _form() -> dict[str, str]:
    keep = ("age", "sex", "injury", "injured_at", "note", "status", "team", "surgeon")
    return {key: request.form.get(key, "")[:MAX_NOTE] for key in keep}


# --------------------------------------------------------------------------- routes


@bp.post("/cases/<case_id>")
@signed_in()
def create(case_id: str):
    from console import services

    case = load_case(case_id)
    if case is None:
        abort(404)
    user = current_user()
    if not may_create(user, case):
        deny(f"case {case.case_id}: may not refer it")
    form = _form()
    try:
        essentials = parse_patient(request.form, services().clock())
        _store().create(case.case_id, actor=user.actor, patient=essentials,
                        note=request.form.get("note", ""), ip=client_ip())
    except FormProblem as exc:
        return _render_case(case, error=exc.message, form=form, status=400)
    except InvalidPatient as exc:
        return _render_case(case, error=_message(exc), form=form, status=400)
    except AlreadyReferred:
        return _render_case(case, error=t("ref.exists"), form=form, status=409)
    except CaseNotFound:
        abort(404)
    return _back(case.case_id)


@bp.post("/<int:referral_id>/status")
@signed_in()
def change_status(referral_id: int):
    listed, case = _acting(referral_id)
    user = current_user()
    form = _form()
    try:
        seen = _version(request.form)
        wanted = parse_status(request.form.get("status", ""))
        _store().change_status(referral_id, wanted, seen_version=seen, actor=user.actor,
                               note=request.form.get("note", ""), by_surgeon=user.surgeon_id,
                               ip=client_ip())
    except (FormProblem, UnknownStatus) as exc:
        message = exc.message if isinstance(exc, FormProblem) else t("ref.bad_form")
        return _render_case(case, error=message, form=form, status=400)
    except StaleReferral:
        return _render_case(case, error=t("ref.stale"), form=form, status=409)
    except (IllegalTransition, ReasonRequired, InvalidPatient) as exc:
        return _render_case(case, error=_message(exc), form=form, status=422)
    except ReferralNotFound:
        abort(404)
    return _back(case.case_id)


@bp.post("/<int:referral_id>/patient")
@signed_in()
def edit_patient(referral_id: int):
    from console import services

    listed, case = _acting(referral_id)
    form = _form()
    try:
        seen = _version(request.form)
        essentials = parse_patient(request.form, services().clock())
        _store().edit_patient(referral_id, essentials, seen_version=seen,
                              actor=current_user().actor, ip=client_ip())
    except FormProblem as exc:
        return _render_case(case, error=exc.message, form=form, status=400)
    except StaleReferral:
        return _render_case(case, error=t("ref.stale"), form=form, status=409)
    except ReferralNotFound:
        abort(404)
    return _back(case.case_id)


@bp.post("/<int:referral_id>/assign")
@signed_in(*STAFF)
def assign(referral_id: int):
    listed, case = _acting(referral_id)
    form = _form()
    team_text = request.form.get("team", "")
    surgeon_text = request.form.get("surgeon", "")
    if (team_text and not TEAM_RE.fullmatch(team_text)) or \
            (surgeon_text and not ID_RE.fullmatch(surgeon_text)):
        return _render_case(case, error=t("ref.bad_form"), form=form, status=400)
    try:
        seen = _version(request.form)
        _store().assign(referral_id, seen_version=seen, team=team_text or None,
                        surgeon_id=int(surgeon_text) if surgeon_text else None,
                        actor=current_user().actor, ip=client_ip())
    except FormProblem as exc:
        return _render_case(case, error=exc.message, form=form, status=400)
    except InvalidAssignment as exc:
        return _render_case(case, error=_message(exc), form=form, status=400)
    except StaleReferral:
        return _render_case(case, error=t("ref.stale"), form=form, status=409)
    except ReferralNotFound:
        abort(404)
    return _back(case.case_id)


@bp.get("/<int:referral_id>")
@signed_in()
def detail(referral_id: int):
    """A referral is shown on its case's page."""
    listed = _store().get(referral_id)
    if listed is None:
        abort(404)
    case = load_case(listed.referral.case_id)
    if case is None:
        abort(404)
    if not (may_see(current_user(), case) or may_act(current_user(), listed.referral, case)):
        deny(f"referral {referral_id}: the surgeon took no part in it")
    return _back(case.case_id)


@dataclass(frozen=True)
class ListQuery:
    status: ReferralStatus | None
    hospital_id: int | None
    team: str | None
    open_only: bool


def parse_list_query(args: Mapping[str, str]) -> ListQuery:
    """Filters from the query string; a value that cannot be one is ignored (a page, not an API)."""
    status = None
    if args.get("status"):
        try:
            status = parse_status(args.get("status"))
        except UnknownStatus:
            status = None
    hospital = args.get("hospital", "")
    team = args.get("team", "")
    return ListQuery(status, int(hospital) if ID_RE.fullmatch(hospital) else None,
                     team if TEAM_RE.fullmatch(team) else None, args.get("open") == "1")


@bp.get("/")
@signed_in()
def index():
    from console import services

    hub = services()
    user = current_user()
    query = parse_list_query(request.args)
    only = None if user.role in STAFF else (user.surgeon_id or 0)
    rows = _store().list(status=query.status, hospital_id=query.hospital_id, team=query.team,
                         open_only=query.open_only, only_surgeon=only)
    now = hub.clock()
    shown = []
    for listed in rows:
        info = ischaemia(listed.referral, now)
        shown.append({"listed": listed, "info": info, "elapsed": elapsed_word(info),
                      "since_attrs": since_attrs(listed.referral, info),
                      "team_name": team_word(listed.referral.team, listed.team_name_zh,
                                             listed.team_name_en)})
    teams, _ = _choices()
    with hub.engine.connect() as conn:
        hospitals = [Choice(str(r.id), r.name) for r in conn.execute(
            select(PartnerHospitalRow.id, PartnerHospitalRow.name).order_by(PartnerHospitalRow.id))]
    return render_template(
        "referrals.html", rows=shown, query=query, statuses=list(ReferralStatus), teams=teams,
        hospitals=hospitals, only_yours=only is not None, status_word=status_word,
        sex_word=sex_word, local=local)
