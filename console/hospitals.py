"""The partner hospitals (合作医院) pages and the block list (黑名单).

Who sees what:
- every signed-in user: the directory, a hospital's numbers, contact doctors
  and figures (aggregates only);
- supervisors, department heads and admins: also a hospital's recent cases
  (a surgeon sees only the cases they took part in, as on the call list);
- supervisors and admins: the CSV import, adding and removing numbers, the
  export, and the block list.

The import is two steps: the upload shows the plan (or every problem) and
carries the file on to the confirmation in a hidden field with a digest of
the plan; the confirmation plans the same bytes again against the directory
as it is then and writes only if that plan is the one shown -- otherwise it
shows the new plan. Every write is audited by the stores, in its own
transaction; the export is audited before it is served.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import (Blueprint, Flask, Response, abort, flash, get_flashed_messages, redirect,
                   render_template, request, url_for)
from sqlalchemy import select

from console.auth import STAFF, audit, current_user, signed_in
from console.calls import outcome_word
from console.figures import num, pct, read_selection, secs
from console.i18n import add_words, current_lang, t
from db.blocklist import (AlreadyBlocked, BlockList, BlockListError, NotBlocked,
                          NumberRegistered)
from db.hospitals import (HospitalError, HospitalStore, NumberTaken, PlanRefused,
                          UnknownHospital)
from db.models import DialAttemptRow
from db.users import UserRole
from network.hospitals import HospitalPlan, export_csv
from oncall.model import HOTLINE_TZ

bp = Blueprint("hospitals", __name__, url_prefix="/hospitals")
EDITORS = (UserRole.ADMIN, UserRole.SUPERVISOR)
NAV = [("hospitals.index", "hospitals.nav", ()),
       ("hospitals.blocklist", "blocklist.nav", EDITORS)]
LOCAL = ZoneInfo(HOTLINE_TZ)
RECENT = 20

add_words({
    "hospitals.nav": {"zh": "合作医院", "en": "Partner hospitals"},
    "blocklist.nav": {"zh": "黑名单", "en": "Block list"},
    "hospitals.title": {"zh": "合作医院名录", "en": "Partner hospital directory"},
    "hospitals.id": {"zh": "编号", "en": "ID"},
    "hospitals.name": {"zh": "名称", "en": "Name"},
    "hospitals.level": {"zh": "等级", "en": "Level"},
    "hospitals.city": {"zh": "城市", "en": "City"},
    "hospitals.numbers": {"zh": "登记号码", "en": "Registered numbers"},
    "hospitals.contacts": {"zh": "联系医生", "en": "Contact doctors"},
    "hospitals.contact_name": {"zh": "姓名", "en": "Name"},
    "hospitals.contact_title": {"zh": "职称", "en": "Title"},
    "hospitals.contact_phone": {"zh": "电话", "en": "Phone"},
    "hospitals.calls_month": {"zh": "本月来电", "en": "Calls this month"},
    "hospitals.none": {"zh": "暂无合作医院", "en": "No partner hospitals yet"},
    "hospitals.import": {"zh": "导入名录（CSV）", "en": "Import directory (CSV)"},
    "hospitals.export": {"zh": "导出名录（CSV）", "en": "Export directory (CSV)"},
    "hospitals.back": {"zh": "返回合作医院名录", "en": "Back to the directory"},
    "hospitals.figures": {"zh": "统计", "en": "Figures"},
    "hospitals.calls": {"zh": "来电", "en": "Calls"},
    "hospitals.connected": {"zh": "医生接听", "en": "Answered"},
    "hospitals.connected_share": {"zh": "接通率", "en": "Answer rate"},
    "hospitals.median": {"zh": "接通医生用时中位数（秒）", "en": "Median time to a surgeon (s)"},
    "hospitals.p90": {"zh": "第90百分位（秒）", "en": "90th percentile (s)"},
    "hospitals.referrals": {"zh": "转诊", "en": "Referrals"},
    "hospitals.last_call": {"zh": "最近来电", "en": "Last call"},
    "hospitals.from": {"zh": "从", "en": "From"},
    "hospitals.to": {"zh": "至", "en": "To"},
    "hospitals.show": {"zh": "查看", "en": "Show"},
    "hospitals.recent": {"zh": "最近来电记录", "en": "Recent cases"},
    "hospitals.no_cases": {"zh": "暂无来电记录", "en": "No cases"},
    "hospitals.started": {"zh": "来电时间", "en": "Started"},
    "hospitals.team": {"zh": "专业组", "en": "Team"},
    "hospitals.outcome": {"zh": "结果", "en": "Outcome"},
    "hospitals.add_number": {"zh": "登记号码", "en": "Register a number"},
    "hospitals.remove_number": {"zh": "删除", "en": "Remove"},
    "hospitals.number": {"zh": "号码", "en": "Number"},
    "hospitals.number_added": {"zh": "号码已登记", "en": "Number registered"},
    "hospitals.number_removed": {"zh": "号码已删除", "en": "Number removed"},
    "hospitals.file": {"zh": "CSV 文件", "en": "CSV file"},
    "hospitals.remove_missing": {"zh": "删除文件中未列出的医院", "en": "Remove hospitals the file does not list"},
    "hospitals.preview": {"zh": "预览", "en": "Preview"},
    "hospitals.confirm": {"zh": "确认导入", "en": "Import now"},
    "hospitals.format": {
        "zh": "每行一家医院：编号,名称,等级,城市,电话,联系医生。编码 UTF-8、GB18030 或 UTF-16；"
              "多个号码用 ; 或 、 分隔；联系医生写成“姓名 职称 电话”，多位用 ; 分隔。未列出的医院保持不变。",
        "en": "One line per hospital: id, name, level, city, numbers, contacts. UTF-8, GB18030 or "
              "UTF-16; several numbers separated by ; or 、; contacts as \"name title phone\", "
              "separated by ;. Hospitals the file does not list stay as they are."},
    "hospitals.problems": {"zh": "文件有错误，未导入任何内容", "en": "The file has problems; nothing was imported"},
    "hospitals.line": {"zh": "行", "en": "Line"},
    "hospitals.column": {"zh": "列", "en": "Column"},
    "hospitals.problem": {"zh": "问题", "en": "Problem"},
    "hospitals.added": {"zh": "新增", "en": "Added"},
    "hospitals.changed": {"zh": "修改", "en": "Changed"},
    "hospitals.unchanged": {"zh": "不变", "en": "Unchanged"},
    "hospitals.removed": {"zh": "删除", "en": "Removed"},
    "hospitals.before": {"zh": "原为", "en": "was"},
    "hospitals.nothing": {"zh": "与现有名录相同，无需导入", "en": "Same as the directory: nothing to import"},
    "hospitals.stale": {"zh": "名录在预览后已被修改，请核对新的预览后再确认",
                        "en": "The directory changed since the preview; check the new preview and confirm again"},
    "hospitals.imported": {"zh": "名录已导入", "en": "Directory imported"},
    "hospitals.no_file": {"zh": "请选择文件", "en": "Choose a file"},
    "blocklist.title": {"zh": "黑名单", "en": "Block list"},
    "blocklist.help": {
        "zh": "黑名单上的号码来电将被拒绝。合作医院的登记号码不能加入黑名单。移出黑名单后记录仍保留。",
        "en": "Calls from these numbers are refused. A partner hospital's registered number can "
              "never be blocked. Removed entries are kept as history."},
    "blocklist.number": {"zh": "号码", "en": "Number"},
    "blocklist.reason": {"zh": "原因", "en": "Reason"},
    "blocklist.add": {"zh": "加入黑名单", "en": "Block"},
    "blocklist.remove": {"zh": "移出黑名单", "en": "Unblock"},
    "blocklist.added_at": {"zh": "加入时间", "en": "Added"},
    "blocklist.added_by": {"zh": "操作人", "en": "By"},
    "blocklist.removed_at": {"zh": "移出时间", "en": "Removed"},
    "blocklist.removed_by": {"zh": "移出人", "en": "Removed by"},
    "blocklist.active": {"zh": "当前黑名单", "en": "Blocked now"},
    "blocklist.history": {"zh": "历史记录", "en": "History"},
    "blocklist.empty": {"zh": "黑名单为空", "en": "Nobody is blocked"},
    "blocklist.done_add": {"zh": "已加入黑名单", "en": "Number blocked"},
    "blocklist.done_remove": {"zh": "已移出黑名单", "en": "Number unblocked"},
    "blocklist.hospital": {"zh": "该号码属于合作医院", "en": "This number belongs to a partner hospital"},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


def _store() -> HospitalStore:
    from console import services
    hub = services()
    return HospitalStore(hub.engine, clock=hub.clock)


def _blocks() -> BlockList:
    from console import services
    hub = services()
    return BlockList(hub.engine, clock=hub.clock)


def _now() -> datetime:
    from console import services
    return services().clock()


def _local(at: datetime | None) -> str:
    return at.astimezone(LOCAL).strftime("%Y-%m-%d %H:%M") if at else ""


def _message(exc) -> str:
    return exc.message_zh if current_lang() == "zh" else exc.message


def _editor() -> bool:
    user = current_user()
    return user is not None and user.role in EDITORS


# --------------------------------------------------------------------------- directory


@bp.get("/")
@signed_in()
def index():
    now = _now().astimezone(LOCAL)
    month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    rows = _store().summaries(month, now + timedelta(seconds=1))
    return render_template("hospitals.html", rows=rows, editor=_editor(), num=num,
                           flashes=get_flashed_messages())


@bp.get("/<int:hospital_id>")
@signed_in()
def detail(hospital_id: int):
    store = _store()
    hospital = store.get(hospital_id)
    if hospital is None:
        abort(404)
    selection = read_selection(request.args, _now().astimezone(LOCAL).date())
    report = store.figures(hospital_id, selection.start, selection.end)
    cases = _visible_cases(store, hospital_id)
    return render_template("hospitals_detail.html", h=hospital, report=report, sel=selection,
                           cases=cases, editor=_editor(), local=_local, num=num, pct=pct, secs=secs,
                           outcome_word=outcome_word, flashes=get_flashed_messages())


def _visible_cases(store: HospitalStore, hospital_id: int):
    """Staff see the hospital's recent cases; a surgeon only those they took part in."""
    user = current_user()
    cases = store.recent_cases(hospital_id, RECENT if user.role in STAFF else 200)
    if user.role in STAFF:
        return cases
    if user.surgeon_id is None or not cases:
        return []
    from console import services
    with services().engine.connect() as conn:
        mine = set(conn.execute(select(DialAttemptRow.case_id).where(
            DialAttemptRow.surgeon_id == user.surgeon_id,
            DialAttemptRow.case_id.in_([c.case_id for c in cases]))).scalars())
    return [c for c in cases if c.case_id in mine or c.connected_surgeon_id == user.surgeon_id][:RECENT]


@bp.post("/<int:hospital_id>/numbers")
@signed_in(*EDITORS)
def add_number(hospital_id: int):
    number = request.form.get("number", "")[:64]
    try:
        _store().add_number(hospital_id, number, current_user().actor)
    except UnknownHospital:
        abort(404)
    except (HospitalError, NumberTaken) as exc:
        flash(_message(exc))
        return redirect(url_for("hospitals.detail", hospital_id=hospital_id))
    flash(t("hospitals.number_added"))
    return redirect(url_for("hospitals.detail", hospital_id=hospital_id))


@bp.post("/<int:hospital_id>/numbers/remove")
@signed_in(*EDITORS)
def remove_number(hospital_id: int):
    store = _store()
    number = request.form.get("number", "")[:64]
    hospital = store.get(hospital_id)
    if hospital is None or number not in hospital.numbers:
        abort(404)  # only a number shown on this hospital's page
    store.remove_number(number, current_user().actor)
    flash(t("hospitals.number_removed"))
    return redirect(url_for("hospitals.detail", hospital_id=hospital_id))


@bp.get("/export.csv")
@signed_in(*EDITORS)
def export():
    text = export_csv(_store().all())
    audit("export_hospitals", "hospital", "directory")  # before a byte is served
    stamp = _now().astimezone(LOCAL).strftime("%Y%m%d")
    return Response(text.encode("utf-8-sig"), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="hospitals-{stamp}.csv"'})


# --------------------------------------------------------------------------- import


def _digest(plan: HospitalPlan) -> str:
    """What the preview showed: the hospitals to add, change and remove."""
    shown = repr((plan.added, plan.changed, plan.removed)).encode()
    return hashlib.sha256(shown).hexdigest()


def _preview(data: bytes, remove_missing: bool, notice: str | None = None, status: int = 200):
    plan = _store().plan_import(data, remove_missing=remove_missing)
    return render_template(
        "hospitals_import.html", plan=plan, notice=notice, remove_missing=remove_missing,
        data=base64.b64encode(data).decode("ascii"), digest=_digest(plan)), (status if plan.ok else 422)


@bp.get("/import")
@signed_in(*EDITORS)
def import_form():
    return render_template("hospitals_import.html", plan=None, notice=None, remove_missing=False)


@bp.post("/import")
@signed_in(*EDITORS)
def import_preview():
    upload = request.files.get("file")
    data = upload.read() if upload is not None else b""
    remove_missing = request.form.get("remove_missing") == "1"
    if not data:
        return render_template("hospitals_import.html", plan=None, notice=t("hospitals.no_file"),
                               remove_missing=remove_missing), 400
    return _preview(data, remove_missing)


@bp.post("/import/confirm")
@signed_in(*EDITORS)
def import_confirm():
    try:
        data = base64.b64decode(request.form.get("data", ""), validate=True)
    except (binascii.Error, ValueError):
        abort(400)
    if not data:
        abort(400)
    remove_missing = request.form.get("remove_missing") == "1"
    store = _store()
    plan = store.plan_import(data, remove_missing=remove_missing)
    if not plan.ok or _digest(plan) != request.form.get("digest", ""):
        return _preview(data, remove_missing, notice=t("hospitals.stale"), status=409)
    try:
        store.apply(plan, current_user().actor)
    except PlanRefused:
        return _preview(data, remove_missing, notice=t("hospitals.stale"), status=409)
    summary = plan.summary()
    flash(f"{t('hospitals.imported')}: {t('hospitals.added')} {summary['added']}, "
          f"{t('hospitals.changed')} {summary['changed']}, {t('hospitals.removed')} {summary['removed']}")
    return redirect(url_for("hospitals.index"))


# --------------------------------------------------------------------------- block list


@bp.get("/blocklist")
@signed_in(*EDITORS)
def blocklist():
    return _blocklist_page()


def _blocklist_page(error: str | None = None, hospital: NumberRegistered | None = None,
                    form: dict | None = None, status: int = 200):
    blocks = _blocks()
    return render_template("hospitals_blocklist.html", active=blocks.entries(),
                           history=[e for e in blocks.entries(include_removed=True) if not e.active],
                           error=error, hospital=hospital, form=form or {}, local=_local,
                           flashes=get_flashed_messages()), status


@bp.post("/blocklist/add")
@signed_in(*EDITORS)
def block_add():
    number = request.form.get("number", "")[:64]
    reason = request.form.get("reason", "")[:2000]
    try:
        _blocks().add(number, reason, current_user().actor)
    except NumberRegistered as exc:
        return _blocklist_page(_message(exc), hospital=exc, form={"number": number, "reason": reason},
                               status=409)
    except AlreadyBlocked as exc:
        return _blocklist_page(_message(exc), form={"number": number, "reason": reason}, status=409)
    except BlockListError as exc:
        return _blocklist_page(_message(exc), form={"number": number, "reason": reason}, status=400)
    flash(t("blocklist.done_add"))
    return redirect(url_for("hospitals.blocklist"))


@bp.post("/blocklist/remove")
@signed_in(*EDITORS)
def block_remove():
    try:
        _blocks().remove(request.form.get("number", "")[:64], current_user().actor)
    except NotBlocked as exc:
        return _blocklist_page(_message(exc), status=409)
    except BlockListError as exc:
        return _blocklist_page(_message(exc), status=400)
    flash(t("blocklist.done_remove"))
    return redirect(url_for("hospitals.blocklist"))
