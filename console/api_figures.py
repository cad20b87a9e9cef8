"""The figures JSON API: `GET /api/v1/figures?from=YYYY-MM-DD&to=YYYY-MM-DD&team=CODE`.

The same figures as the console's figures page (`db.figures.load_figures`;
what each counts: `cases.figures`), for any token but a calendar one.
`from` and `to` are local (Asia/Shanghai) days, both included; both absent:
the last 30 days. Unlike the page, the API refuses what it cannot read
(400, JSON): an unknown or repeated parameter, a bad date, a reversed or
too-long range, a malformed team code. Times to reach a surgeon are seconds
(3 decimals); rates are fractions (4 decimals).

`OPENAPI_PATHS` is this endpoint's part of the OpenAPI 3.1 document (the
convention and the shared components: `console.api_console`).
"""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, jsonify, request

from cases.figures import (
    DEFAULT_PRESET,
    MAX_DAYS,
    Figures,
    RangeError,
    Reach,
    Tally,
    check_range,
    parse_day,
    preset_range,
)
from console import ApiError, services
from console.tokens import READERS, require
from db.figures import LOCAL, load_figures

bp = Blueprint("api_figures", __name__, url_prefix="/api/v1")
NAV: list = []
PARAMS = ("from", "to", "team")
TEAM_RE = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)
NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)


def register(app: Flask, csrf) -> None:
    csrf.exempt(bp)  # bearer tokens: a browser never sends one by itself
    app.register_blueprint(bp)


def _bad(message: str, message_zh: str) -> ApiError:
    return ApiError(400, "invalid_request", message, message_zh)


@bp.get("/figures")
@require(*READERS)
def figures():
    args = request.args
    unknown = [name for name in args if name not in PARAMS]
    if unknown:
        # Named back only when it looks like a name (a typo such as "tema").
        shown = repr(unknown[0]) if NAME_RE.fullmatch(unknown[0]) else "(not shown)"
        raise _bad(f"unknown parameter {shown} (known: from, to, team)",
                   f"未知参数 {shown}（可用：from、to、team）")
    repeated = [name for name in PARAMS if len(args.getlist(name)) > 1]
    if repeated:
        raise _bad(f"parameter {repeated[0]!r} given more than once", f"参数 {repeated[0]!r} 重复")
    raw_from, raw_to = args.get("from"), args.get("to")
    try:
        if raw_from is None and raw_to is None:
            today = services().clock().astimezone(LOCAL).date()
            start, end = preset_range(DEFAULT_PRESET, today)
        elif raw_from is None or raw_to is None:
            raise _bad("give both 'from' and 'to' (or neither: the last 30 days)",
                       "请同时提供 from 和 to（都不提供则为近30天）")
        else:
            start, end = check_range(parse_day(raw_from), parse_day(raw_to))
    except RangeError as exc:
        raise _bad(f"{exc} (from/to: YYYY-MM-DD, at most {MAX_DAYS} days)",
                   f"日期范围无效（from/to 格式为 YYYY-MM-DD，最多 {MAX_DAYS} 天）") from None
    team = args.get("team") or None
    if team is not None and not TEAM_RE.fullmatch(team):
        raise _bad("team: 1 to 32 of A-Z a-z 0-9 . _ -", "team：1 至 32 个字母、数字或 . _ -")
    return jsonify(figures_json(load_figures(services().engine, start, end, team)))


# ----------------------------------------------------------------------------- the body


def _round(value: float | None, places: int) -> float | None:
    return None if value is None else round(value, places)


def _tally(tally: Tally) -> dict[str, Any]:
    return {"calls": tally.calls, "answered": tally.connected,
            "answer_rate": _round(tally.answer_rate, 4), "abandoned": tally.abandoned,
            "voicemail": tally.voicemail, "duty_nurse": tally.nurse, "fallback": tally.fallback,
            "in_progress": tally.in_progress, "consultations": tally.consultations,
            "referrals": tally.referrals, "transfers": tally.transfers,
            "partner_hospital_calls": tally.partner_calls}


def _reach(reach: Reach) -> dict[str, Any]:
    labels = [str(n) for n in range(1, len(reach.depth))] + [f"{len(reach.depth)}+"]
    return {"answered": reach.answered,
            "time_to_surgeon_s": {"median": _round(reach.median_s, 3), "p90": _round(reach.p90_s, 3)},
            "escalation_depth": {"mean": _round(reach.mean_depth, 4),
                                 "distribution": dict(zip(labels, reach.depth))}}


def figures_json(figures: Figures) -> dict[str, Any]:
    def names(code: str | None) -> dict[str, str | None]:
        zh, en = figures.team_names.get(code or "", (None, None))
        return {"name_zh": zh, "name_en": en}

    return {
        "from": figures.start.isoformat(),
        "to": figures.end.isoformat(),
        "timezone": str(LOCAL),
        "team": figures.team,
        "summary": {"zh": figures.summary("zh"), "en": figures.summary("en")},
        "totals": {**_tally(figures.tally), "partner_hospitals": figures.partner_hospitals,
                   **_reach(figures.reach)},
        "teams": [{"team": tf.team, **names(tf.team), **_tally(tf.tally), **_reach(tf.reach)}
                  for tf in figures.teams],
        "surgeons": [{"surgeon_id": sf.surgeon_id, "name": sf.name, **_reach(sf.reach)}
                     for sf in figures.surgeons],
        "partner_hospitals": [{"hospital_id": hf.hospital_id, "name": hf.name, "calls": hf.calls}
                              for hf in figures.hospitals],
        "per_day": [{"date": df.day.isoformat(), "calls": df.calls, "answered": df.connected,
                     "abandoned": df.abandoned, "voicemail": df.voicemail} for df in figures.days],
    }


# ----------------------------------------------------------------------------- OpenAPI

_COUNT = {"type": "integer", "minimum": 0}
_SECONDS = {"type": ["number", "null"], "minimum": 0}
_TALLY_PROPS = {
    "calls": _COUNT, "answered": _COUNT,
    "answer_rate": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                    "description": "answered / calls (null without calls)"},
    "abandoned": _COUNT, "voicemail": _COUNT, "duty_nurse": _COUNT, "fallback": _COUNT,
    "in_progress": _COUNT,
    "consultations": {**_COUNT, "description": "answered calls and cases marked 'consultation'"},
    "referrals": {**_COUNT, "description": "answered referral-line calls and cases marked "
                                           "'referral accepted'"},
    "transfers": {**_COUNT, "description": "cases marked 'transfer arranged'"},
    "partner_hospital_calls": _COUNT,
}
_REACH_PROPS = {
    "answered": _COUNT,
    "time_to_surgeon_s": {
        "type": "object", "description": "connected_at - started_at of answered calls, seconds; "
                                         "percentiles interpolated like percentile_cont",
        "properties": {"median": _SECONDS, "p90": _SECONDS}, "required": ["median", "p90"]},
    "escalation_depth": {
        "type": "object", "description": "position of the accepting attempt (1 = first phone rung)",
        "properties": {"mean": {"type": ["number", "null"], "minimum": 1},
                       "distribution": {"type": "object", "description": "keys 1, 2, 3, 4, 5+",
                                        "additionalProperties": _COUNT}},
        "required": ["mean", "distribution"]},
}
_ERROR_BODY = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
_DATE_PARAM = {"in": "query", "required": False,
               "schema": {"type": "string", "format": "date", "pattern": r"^\d{4}-\d{2}-\d{2}$"}}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/figures": {
        "get": {
            "operationId": "getFigures",
            "tags": ["figures"],
            "summary": "The network's figures for a range of local days",
            "description": (
                "Calls, answer rate, abandoned calls, voicemails, real-time consultations, "
                "referrals, transfers, partner hospitals that called, time to reach a surgeon "
                "(median, 90th percentile) and escalation depth -- overall, per team, per "
                "surgeon and per day -- plus the summary sentence in Chinese and English. "
                f"Days are Asia/Shanghai; a range is at most {MAX_DAYS} days. Without from/to: "
                "the last 30 days. Any token role except calendar."),
            "security": [{"bearer": []}],
            "x-token-roles": [role.value for role in READERS],
            "parameters": [
                {"name": "from", "description": "first local day (with 'to')", **_DATE_PARAM},
                {"name": "to", "description": "last local day, included (with 'from')", **_DATE_PARAM},
                {"name": "team", "in": "query", "required": False, "description": "one team's code",
                 "schema": {"type": "string", "pattern": r"^[A-Za-z0-9._-]{1,32}$"}},
            ],
            "responses": {
                "200": {"description": "the figures", "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["from", "to", "timezone", "team", "summary", "totals", "teams",
                                 "surgeons", "partner_hospitals", "per_day"],
                    "properties": {
                        "from": {"type": "string", "format": "date"},
                        "to": {"type": "string", "format": "date"},
                        "timezone": {"type": "string", "const": "Asia/Shanghai"},
                        "team": {"type": ["string", "null"]},
                        "summary": {"type": "object", "properties": {
                            "zh": {"type": "string"}, "en": {"type": "string"}},
                            "required": ["zh", "en"]},
                        "totals": {"type": "object", "properties": {
                            **_TALLY_PROPS, "partner_hospitals": _COUNT, **_REACH_PROPS}},
                        "teams": {"type": "array", "items": {"type": "object", "properties": {
                            "team": {"type": ["string", "null"],
                                     "description": "null: the caller never chose a team"},
                            "name_zh": {"type": ["string", "null"]},
                            "name_en": {"type": ["string", "null"]},
                            **_TALLY_PROPS, **_REACH_PROPS}}},
                        "surgeons": {"type": "array", "items": {"type": "object", "properties": {
                            "surgeon_id": {"type": "integer"}, "name": {"type": "string"},
                            **_REACH_PROPS}}},
                        "partner_hospitals": {"type": "array", "items": {
                            "type": "object", "properties": {
                                "hospital_id": {"type": "integer"}, "name": {"type": "string"},
                                "calls": _COUNT}}},
                        "per_day": {"type": "array", "items": {"type": "object", "properties": {
                            "date": {"type": "string", "format": "date"}, "calls": _COUNT,
                            "answered": _COUNT, "abandoned": _COUNT, "voicemail": _COUNT}}},
                    }}}}},
                "400": {"$ref": "#/components/responses/BadRequest"},
                "401": {"$ref": "#/components/responses/Unauthorized"},
                "403": {"$ref": "#/components/responses/Forbidden"},
                "503": {"description": "the database is unavailable; retry (Retry-After)",
                        "content": _ERROR_BODY},
            },
        },
    },
}
