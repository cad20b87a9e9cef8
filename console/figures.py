"""The figures page (统计): the network's figures for a range of days, charts, CSV export.

Every role sees the network's figures. The range is local (Asia/Shanghai)
days: a preset (today, 7 days, 30 days, this year) or `from`/`to`; one team
or all. A query string that cannot be read is ignored -- the page shows the
default range and says so -- never an error. Charts are SVG drawn here on
the server (the CSP allows no script and no inline style; colours come from
console.css). The CSV export (UTF-8 with a BOM, for Excel) holds the page's
tables and is audited (`export_figures`).

What each figure counts: `cases.figures`; the SQL: `db.figures`.
"""
from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from flask import Blueprint, Flask, Response, render_template, request

from cases.figures import (
    DEFAULT_PRESET,
    DEPTH_BUCKETS,
    PRESETS,
    DayFigures,
    Figures,
    RangeError,
    Reach,
    Tally,
    check_range,
    parse_day,
    preset_range,
)
from console.auth import audit, signed_in
from console.i18n import add_words, current_lang, t
from db.figures import LOCAL, load_figures

bp = Blueprint("figures", __name__, url_prefix="/figures")
NAV = [("figures.index", "figures", ())]
TEAM_RE = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)
NURSE_TEAM = "nurse"  # ivr.calls.NURSE_TEAM: the duty nurse's menu option
TOP_HOSPITALS = 10
DAYS_PER_BAR_MAX = 400  # longer ranges are drawn month by month
_CSV_RISKY = ("=", "+", "-", "@", "\t", "\r")

add_words({
    "figures.range": {"zh": "时间范围", "en": "Range"},
    "figures.from": {"zh": "开始日期", "en": "From"},
    "figures.to": {"zh": "结束日期", "en": "To"},
    "figures.team": {"zh": "专业组", "en": "Team"},
    "figures.all_teams": {"zh": "全部专业组", "en": "All teams"},
    "figures.show": {"zh": "查询", "en": "Show"},
    "figures.preset.today": {"zh": "今天", "en": "Today"},
    "figures.preset.7d": {"zh": "近7天", "en": "7 days"},
    "figures.preset.30d": {"zh": "近30天", "en": "30 days"},
    "figures.preset.year": {"zh": "今年", "en": "This year"},
    "figures.bad_query": {"zh": "查询条件无法识别，已显示默认范围。",
                          "en": "The query could not be read; showing the default range."},
    "figures.export": {"zh": "导出 CSV", "en": "Export CSV"},
    "figures.summary": {"zh": "可发布的统计摘要", "en": "Summary for publication"},
    "figures.totals": {"zh": "总览", "en": "Totals"},
    "figures.calls": {"zh": "来电", "en": "Calls"},
    "figures.answered": {"zh": "医生接听", "en": "Answered"},
    "figures.answer_rate": {"zh": "接通率", "en": "Answer rate"},
    "figures.abandoned": {"zh": "未接通挂断", "en": "Abandoned"},
    "figures.voicemail": {"zh": "语音留言", "en": "Voicemail"},
    "figures.nurse": {"zh": "值班护士接听", "en": "Duty nurse"},
    "figures.fallback": {"zh": "应急转接", "en": "Fallback"},
    "figures.in_progress": {"zh": "通话中", "en": "In progress"},
    "figures.consultations": {"zh": "实时会诊", "en": "Real-time consultations"},
    "figures.referrals": {"zh": "转诊", "en": "Referrals"},
    "figures.transfers": {"zh": "转运", "en": "Transfers"},
    "figures.partner_calls": {"zh": "合作医院来电", "en": "Partner hospital calls"},
    "figures.partner_hospitals": {"zh": "来电合作医院", "en": "Partner hospitals that called"},
    "figures.reach": {"zh": "接通医生用时", "en": "Time to reach a surgeon"},
    "figures.median": {"zh": "中位数", "en": "Median"},
    "figures.p90": {"zh": "第90百分位", "en": "90th percentile"},
    "figures.depth": {"zh": "呼叫升级层级", "en": "Escalation depth"},
    "figures.mean_depth": {"zh": "平均层级", "en": "Mean depth"},
    "figures.per_day": {"zh": "每日来电", "en": "Calls per day"},
    "figures.per_month": {"zh": "每月来电", "en": "Calls per month"},
    "figures.per_team": {"zh": "按专业组", "en": "By team"},
    "figures.per_surgeon": {"zh": "按医生", "en": "By surgeon"},
    "figures.top_hospitals": {"zh": "来电最多的合作医院", "en": "Partner hospitals with most calls"},
    "figures.hospital": {"zh": "合作医院", "en": "Partner hospital"},
    "figures.surgeon": {"zh": "医生", "en": "Surgeon"},
    "figures.day": {"zh": "日期", "en": "Date"},
    "figures.metric": {"zh": "指标", "en": "Figure"},
    "figures.value": {"zh": "数值", "en": "Value"},
    "figures.seconds": {"zh": "秒", "en": "s"},
    "figures.no_calls": {"zh": "该范围内没有来电。", "en": "No calls in this range."},
    "figures.team.none": {"zh": "未选择专业组", "en": "No team chosen"},
    "figures.team.nurse": {"zh": "值班护士", "en": "Duty nurse"},
    "figures.chart.days": {"zh": "每日来电柱状图：浅色为全部来电，深色为医生接听",
                           "en": "Calls per day: light bars all calls, dark bars answered"},
    "figures.chart.reach": {"zh": "各专业组接通医生用时：条为中位数，竖线为第90百分位",
                            "en": "Time to reach a surgeon by team: bar median, tick 90th percentile"},
    "figures.csv.section.summary": {"zh": "摘要", "en": "Summary"},
    "figures.how": {"zh": "统计口径", "en": "How these are counted"},
    "figures.how.text": {
        "zh": "按来电开始时间（北京时间）计入日期。接听：值班医生按1接听；接通率 = 医生接听 / 来电。"
              "实时会诊：医生接听的来电，以及医生记录为“会诊”的病例；转诊：医生接听的转诊转运专线来电，"
              "以及记录为“接受转诊”的病例；转运：记录为“安排转运”的病例。接通医生用时 = 接通时间 − 来电时间；"
              "呼叫升级层级 = 接听者在呼叫顺序中的位置（1 = 第一位）。",
        "en": "Calls count on their local (Beijing time) start day. Answered: a surgeon pressed 1; "
              "answer rate = answered / calls. Real-time consultations: answered calls and cases a "
              "surgeon marked 'consultation'; referrals: answered calls on the referral line and "
              "cases marked 'referral accepted'; transfers: cases marked 'transfer arranged'. Time "
              "to reach a surgeon = connected - started; escalation depth = the position of the "
              "accepting attempt (1 = the first phone rung)."},
})


def register(app: Flask, csrf) -> None:
    app.register_blueprint(bp)


# ----------------------------------------------------------------------------- the query


@dataclass(frozen=True)
class Selection:
    start: date
    end: date
    preset: str  # one of PRESETS, or "" for a custom range
    team: str | None
    unreadable: bool  # part of the query string was ignored


def read_selection(args: Mapping[str, str], today: date) -> Selection:
    """The page's range and team from its query string; what cannot be read is ignored."""
    unreadable = False
    team = args.get("team", "") or None
    if team is not None and not TEAM_RE.fullmatch(team):
        team, unreadable = None, True
    raw_from, raw_to = args.get("from", ""), args.get("to", "")
    if raw_from or raw_to:
        try:
            start = parse_day(raw_from or raw_to)
            end = parse_day(raw_to or raw_from)
            check_range(start, end)
            return Selection(start, end, "", team, unreadable)
        except RangeError:
            unreadable = True
    preset = args.get("preset", "") or DEFAULT_PRESET
    if preset not in PRESETS:
        preset, unreadable = DEFAULT_PRESET, True
    start, end = preset_range(preset, today)
    return Selection(start, end, preset, team, unreadable)


def _today() -> date:
    from console import services
    return services().clock().astimezone(LOCAL).date()


def _load(selection: Selection) -> Figures:
    from console import services
    return load_figures(services().engine, selection.start, selection.end, selection.team)


# ----------------------------------------------------------------------------- the views


@bp.get("/")
@signed_in()
def index():
    selection = read_selection(request.args, _today())
    figures = _load(selection)
    return render_template(
        "figures.html", f=figures, sel=selection, presets=PRESETS, team_choices=_team_choices(figures, selection),
        team_name=lambda code: team_name(figures, code), day_chart=day_chart(figures.days),
        reach_chart=reach_chart(figures, current_lang()), top_hospitals=figures.hospitals[:TOP_HOSPITALS],
        summaries={"zh": figures.summary("zh"), "en": figures.summary("en")},
        num=num, pct=pct, secs=secs, mean=mean, depth_words=depth_words())


@bp.get("/export.csv")
@signed_in()
def export():
    selection = read_selection(request.args, _today())
    figures = _load(selection)
    body = figures_csv(figures)
    audit("export_figures", "figures", f"{selection.start}..{selection.end}",
          team=selection.team or "", bytes=len(body))
    name = f"figures-{selection.start}-{selection.end}" + (f"-{selection.team}" if selection.team else "")
    return Response(body, content_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"'})


# ----------------------------------------------------------------------------- words and numbers


def team_name(figures: Figures, code: str | None) -> str:
    if code is None:
        return t("figures.team.none")
    names = figures.team_names.get(code)
    if names is not None:
        return names[1] if current_lang() == "en" else names[0]
    if code == NURSE_TEAM:
        return t("figures.team.nurse")
    return code


def _team_choices(figures: Figures, selection: Selection) -> list[tuple[str, str]]:
    codes = list(figures.team_names) + [NURSE_TEAM]
    codes += [tf.team for tf in figures.teams if tf.team is not None]
    if selection.team:
        codes.append(selection.team)
    seen: dict[str, str] = {}
    for code in codes:
        seen.setdefault(code, team_name(figures, code))
    return sorted(seen.items())


def num(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def secs(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def mean(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def depth_words() -> list[str]:
    """Column labels of the escalation depth distribution: 1, 2, 3, 4, 5+."""
    return [str(n) for n in range(1, DEPTH_BUCKETS)] + [f"{DEPTH_BUCKETS}+"]


# ----------------------------------------------------------------------------- charts


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    calls_y: float
    calls_h: float
    answered_y: float
    answered_h: float
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    top: int
    bottom: int
    left: int
    bars: tuple
    grid: tuple  # (y, label)
    labels: tuple  # (x, label, text-anchor)
    by_month: bool = False


def _tick(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _nice_max(value: int) -> int:
    """The smallest 1, 2 or 5 x 10^k at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    exponent = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * exponent >= value:
            return step * exponent
    return 10 * exponent


def _buckets(days: Sequence[DayFigures]) -> tuple[list[tuple[str, int, int]], bool]:
    """(label, calls, answered) per day, or per month for long ranges."""
    if len(days) <= DAYS_PER_BAR_MAX:
        return [(d.day.isoformat(), d.calls, d.connected) for d in days], False
    months: dict[str, list[int]] = {}
    for d in days:
        totals = months.setdefault(d.day.strftime("%Y-%m"), [0, 0])
        totals[0] += d.calls
        totals[1] += d.connected
    return [(label, calls, answered) for label, (calls, answered) in months.items()], True


def day_chart(days: Sequence[DayFigures], width: int = 960, height: int = 220) -> Chart:
    """Bars of calls (and answered calls inside them) per day, as SVG geometry."""
    left, top, bottom = 48, 10, 24
    rows, by_month = _buckets(days)
    plot_w, plot_h = width - left - 8, height - top - bottom
    peak = _nice_max(max((calls for _, calls, _ in rows), default=0))
    slot = plot_w / max(len(rows), 1)
    gap = slot * 0.15 if slot >= 4 else 0
    bars = []
    for i, (label, calls, answered) in enumerate(rows):
        calls_h = plot_h * calls / peak
        answered_h = plot_h * answered / peak
        bars.append(Bar(x=round(left + i * slot + gap / 2, 2), width=round(max(slot - gap, 0.5), 2),
                        calls_y=round(top + plot_h - calls_h, 2), calls_h=round(calls_h, 2),
                        answered_y=round(top + plot_h - answered_h, 2), answered_h=round(answered_h, 2),
                        title=f"{label}: {calls:,} / {answered:,}"))
    grid = tuple((round(top + plot_h - plot_h * k / 4, 2), _tick(peak * k / 4)) for k in range(5))
    ticks = sorted({0, len(rows) // 2, len(rows) - 1}) if rows else []
    # The first label starts at its bar, the last ends at its bar: neither is cut off.
    anchors = {0: "start", len(rows) - 1: "end"}
    labels = tuple((round(left + (i + 0.5) * slot if i not in anchors else
                          (left if i == 0 else left + plot_w), 2), rows[i][0], anchors.get(i, "middle"))
                   for i in ticks)
    return Chart(width, height, top, bottom, left, tuple(bars), grid, labels, by_month)


@dataclass(frozen=True)
class ReachRow:
    label: str
    y: float
    median_w: float
    p90_x: float | None
    text: str


@dataclass(frozen=True)
class ReachChart:
    width: int
    height: int
    left: int
    rows: tuple
    grid: tuple  # (x, label)


def reach_chart(figures: Figures, lang: str, width: int = 960) -> ReachChart:
    """Per team: a bar to the median time to reach a surgeon, a tick at the 90th percentile."""
    teams = [(team_name(figures, tf.team), tf.reach) for tf in figures.teams if tf.reach.answered]
    left, row_h, right = 180, 28, 120
    height = max(row_h * len(teams) + 30, 60)
    peak = _nice_max(math.ceil(max((r.p90_s or r.median_s or 0 for _, r in teams), default=0)))
    plot_w = width - left - right
    unit = t("figures.seconds")
    rows = []
    for i, (label, reach) in enumerate(teams):
        median = reach.median_s or 0.0
        rows.append(ReachRow(
            label=label, y=10 + i * row_h, median_w=round(plot_w * median / peak, 2),
            p90_x=None if reach.p90_s is None else round(left + plot_w * reach.p90_s / peak, 2),
            text=f"{secs(reach.median_s)} / {secs(reach.p90_s)} {unit}"))
    grid = tuple((round(left + plot_w * k / 4, 2), _tick(peak * k / 4)) for k in range(5))
    return ReachChart(width, height, left, tuple(rows), grid)


# ----------------------------------------------------------------------------- CSV


def _cell(value: object) -> object:
    # Names come from the database; a leading = + - @ would be a formula in Excel.
    if isinstance(value, str) and value.startswith(_CSV_RISKY):
        return "'" + value
    return value


def _tally_cells(tally: Tally) -> list[object]:
    rate = tally.answer_rate
    return [tally.calls, tally.connected, "" if rate is None else round(rate, 4), tally.abandoned,
            tally.voicemail, tally.nurse, tally.fallback, tally.in_progress, tally.consultations,
            tally.referrals, tally.transfers, tally.partner_calls]


def _reach_cells(reach: Reach) -> list[object]:
    def rounded(value: float | None, places: int) -> object:
        return "" if value is None else round(value, places)
    return [reach.answered, rounded(reach.median_s, 3), rounded(reach.p90_s, 3),
            rounded(reach.mean_depth, 3), *reach.depth]


def figures_csv(figures: Figures) -> bytes:
    """The page's tables, one after another, as CSV (UTF-8 with a BOM, for Excel)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")

    def row(*cells: object) -> None:
        writer.writerow([_cell(c) for c in cells])

    depth = [f"{t('figures.depth')} {label}" for label in depth_words()]
    tally_head = [t("figures.calls"), t("figures.answered"), t("figures.answer_rate"),
                  t("figures.abandoned"), t("figures.voicemail"), t("figures.nurse"),
                  t("figures.fallback"), t("figures.in_progress"), t("figures.consultations"),
                  t("figures.referrals"), t("figures.transfers"), t("figures.partner_calls")]
    reach_head = [t("figures.answered"), f"{t('figures.reach')} {t('figures.median')} (s)",
                  f"{t('figures.reach')} {t('figures.p90')} (s)", t("figures.mean_depth"), *depth]

    row(t("figures.csv.section.summary"))
    row("zh", figures.summary("zh"))
    row("en", figures.summary("en"))
    row(t("figures.from"), figures.start.isoformat())
    row(t("figures.to"), figures.end.isoformat())
    row(t("figures.team"), figures.team or t("figures.all_teams"))
    row()
    row(t("figures.totals"))
    row(*tally_head, t("figures.partner_hospitals"), *reach_head)
    row(*_tally_cells(figures.tally), figures.partner_hospitals, *_reach_cells(figures.reach))
    row()
    row(t("figures.per_team"))
    row(t("figures.team"), "", *tally_head, *reach_head)
    for tf in figures.teams:
        row(tf.team or "", team_name(figures, tf.team), *_tally_cells(tf.tally), *_reach_cells(tf.reach))
    row()
    row(t("figures.per_surgeon"))
    row("id", t("figures.surgeon"), *reach_head)
    for sf in figures.surgeons:
        row(sf.surgeon_id, sf.name, *_reach_cells(sf.reach))
    row()
    row(t("figures.partner_hospitals"))
    row("id", t("figures.hospital"), t("figures.calls"))
    for hf in figures.hospitals:
        row(hf.hospital_id, hf.name, hf.calls)
    row()
    row(t("figures.per_day"))
    row(t("figures.day"), t("figures.calls"), t("figures.answered"), t("figures.abandoned"),
        t("figures.voicemail"))
    for df in figures.days:
        row(df.day.isoformat(), df.calls, df.connected, df.abandoned, df.voicemail)
    return ("\ufeff" + out.getvalue()).encode("utf-8")
