"""The JSON API for calls and cases (`/api/v1/calls`, `/api/v1/cases/<id>`) and the
OpenAPI document of the whole JSON API (`/api/v1/openapi.json`).

Bearer tokens (`console.tokens`): admin, supervisor and department_head tokens
see every call and case; a surgeon token the cases its surgeon took part in
(the same condition in the same query as the console's Calls page); calendar
tokens nothing here (403). A surgeon token asking for another's case gets 403
and the refusal is written to the audit log. Query values are checked as the
Calls page checks them (`console.calls.parse_query`), but a value that cannot
be used is a 400 here -- an API client must not silently get another list.

Pages are keyset pages: the answer's `next` (and `prev`) is a cursor to pass
back as `after` (`before`) with the same filters and sort.

## The OpenAPI convention (every API module)

A module that serves routes under `/api/v1` describes them in a module-level

    OPENAPI_PATHS: dict[str, dict]    # OpenAPI 3.1 path items, keyed by the full
                                      # path in OpenAPI form: "/api/v1/figures/summary",
                                      # "/api/v1/cases/{case_id}" (Flask's <x> is {x})
    OPENAPI_SCHEMAS: dict[str, dict]  # optional: components/schemas it adds (unique names)

`openapi_document()` merges the fragments of `console.api_roster` and of every
`console.api_*` module in `console.pages.PAGE_MODULES`; a path and method that
two modules both describe is an error. Fragments may refer to the shared
components defined here: schemas `Error`, responses `BadRequest`,
`Unauthorized`, `Forbidden`, `NotFound`, and the security scheme `bearer`
(the default for every operation). `tests/adapters/test_api_console.py`
checks that every Flask route under `/api/v1` is in the document.
`console.api_roster` predates the convention: while it has no OPENAPI_PATHS of
its own, `ROSTER_OPENAPI_PATHS` below describes it.
"""
from __future__ import annotations

import copy
import importlib
from typing import Any

from flask import Blueprint, Flask, jsonify, request

from cases.lifecycle import Case
from console import ApiError, services
from console.api_roster import iso
from console.auth import client_ip
from console.calls import count_number_search, parse_query
from console.cases import (
    case_events,
    current_disposition,
    load_case,
    time_to_connect_s,
    took_part,
)
from console.tokens import READERS, current_token, forbidden, require
from db.calls_query import (
    DISPOSITIONS,
    OUTCOMES,
    SORTS,
    CallRow,
    CaseContext,
    CaseNote,
    case_context,
    case_notes,
    list_calls,
)
from db.tokens import TokenRole
from routing.callers import mask_number

bp = Blueprint("api_console", __name__, url_prefix="/api/v1")
NAV: list = []
OPENAPI_VERSION = "3.1.0"
API_VERSION = "1.0.0"


def register(app: Flask, csrf) -> None:
    csrf.exempt(bp)  # bearer tokens: a browser never sends one by itself
    app.register_blueprint(bp)


# --------------------------------------------------------------------------- JSON out


def call_json(row: CallRow, full_numbers: bool = True) -> dict[str, Any]:
    """One call of a list; `full_numbers` False masks the caller's number (139****5678)."""
    shown = (lambda text: text) if full_numbers else mask_number
    return {
        "case_id": row.case_id,
        "started_at": iso(row.started_at),
        "caller": {"number": shown(row.caller_number) or None, "raw_safe": shown(row.caller_raw_safe),
                   "class": row.caller_class, "hospital_id": row.hospital_id,
                   "hospital_name": row.hospital_name},
        "team": row.team, "team_name_zh": row.team_name_zh, "team_name_en": row.team_name_en,
        "outcome": row.outcome,
        "connected_at": iso(row.connected_at),
        "connected_surgeon": ({"id": row.connected_surgeon_id, "name": row.connected_surgeon_name}
                              if row.connected_at is not None else None),
        "time_to_connect_s": row.time_to_connect_s,
        "ended_at": iso(row.ended_at),
        "has_recording": row.has_recording,
        "recording_s": row.recording_s,
        "url": f"/api/v1/cases/{row.case_id}",
    }


def _event_json(event: dict[str, Any]) -> dict[str, Any]:
    return {key: (iso(value) if key in ("at", "ended_at") else value)
            for key, value in event.items()}


def note_json(note: CaseNote) -> dict[str, Any]:
    return {"id": note.id, "at": iso(note.at), "author": note.author,
            "surgeon_id": note.surgeon_id, "disposition": note.disposition, "text": note.text}


def case_json(case: Case, context: CaseContext, notes: list[CaseNote]) -> dict[str, Any]:
    caller = case.caller
    accepted = case.attempt(case.connected_seq) if case.connected_seq is not None else None
    disposition = current_disposition(notes)
    return {
        "case_id": case.case_id,
        "started_at": iso(case.started_at),
        "ended_at": iso(case.ended_at),
        "language": case.language,
        "caller": {"number": caller.number, "raw_safe": caller.raw_safe,
                   "class": caller.caller_class.value, "hospital_id": caller.hospital_id,
                   "hospital_name": context.hospital_name},
        "team": ({"code": case.team, "name_zh": context.team_name_zh,
                  "name_en": context.team_name_en} if case.team is not None else None),
        "outcome": case.outcome,
        "connected_at": iso(case.connected_at),
        "connected_surgeon": ({"id": case.connected_surgeon_id,
                               "name": accepted.name if accepted is not None else None,
                               "seq": case.connected_seq} if case.connected_at is not None else None),
        "time_to_connect_s": time_to_connect_s(case),
        "hangup_by": case.hangup_by,
        "recording": ({"seconds": case.recording_s} if case.recording_path else None),
        "voicemail": case.voicemail_path is not None,
        "disposition": disposition.disposition if disposition else None,
        "attempts": [{"seq": a.seq, "kind": a.kind, "surgeon_id": a.surgeon_id, "name": a.name,
                      "role": a.role, "started_at": iso(a.started_at), "ended_at": iso(a.ended_at),
                      "ring_s": a.ring_s, "answered": a.answered,
                      "outcome": a.outcome.value if a.outcome is not None else None}
                     for a in case.attempts],
        "timeline": [_event_json(e) for e in case_events(case)],
        "notes": [note_json(n) for n in notes],
    }


# --------------------------------------------------------------------------- routes


def _token_surgeon() -> int | None:
    """The surgeon whose cases alone this token sees, or None: all (0: nobody)."""
    token = current_token()
    if token.role is TokenRole.SURGEON:
        return token.surgeon_id or 0
    return None


@bp.get("/calls")
@require(*READERS)
def calls():
    query = parse_query(request.args, services().clock(), limit=True,
                        full_numbers=current_token().role.sees_full_numbers)
    if query.problems:
        raise ApiError(400, "invalid_request",
                       "; ".join(p.message for p in query.problems),
                       "；".join(p.message_zh for p in query.problems),
                       problems=[{"field": p.field, "message": p.message,
                                  "message_zh": p.message_zh} for p in query.problems])
    count_number_search(query, current_token().role.sees_full_numbers, current_token().actor)
    page = list_calls(services().engine, query.filters, query.order, limit=query.limit,
                      after=query.after, before=query.before, only_surgeon=_token_surgeon())
    filters = query.filters
    return jsonify({
        "calls": [call_json(row, current_token().role.sees_full_numbers) for row in page.rows],
        "next": page.next,
        "prev": page.prev,
        "limit": query.limit,
        "sort": query.order.key,
        "dir": "desc" if query.order.descending else "asc",
        "filters": {"from": iso(filters.start), "to": iso(filters.end), "team": filters.team,
                    "outcome": filters.outcome, "hospital": filters.hospital_id,
                    "caller": filters.caller,
                    "match": ("prefix" if filters.caller_prefix
                              else "last4" if filters.caller_last4 else "exact"),
                    "surgeon": filters.surgeon_id, "recording": filters.has_recording},
    })


@bp.get("/cases/<case_id>")
@require(*READERS)
def case(case_id: str):
    found = load_case(case_id)
    if found is None:
        raise ApiError(404, "not_found", "no such case", "病例记录不存在")
    token = current_token()
    if token.role is TokenRole.SURGEON:
        if not took_part(found, token.surgeon_id):
            services().audit.record(token.actor, "denied", "path", request.path[:64],
                                    ip=client_ip(), detail={"method": request.method,
                                                            "reason": "case of another surgeon"})
            raise forbidden("a surgeon token sees only the cases its surgeon took part in",
                            "医生令牌只能查看本人参与的病例")
    # Audited before it is served, as the case page is (console.cases.detail).
    services().audit.record(token.actor, "view_case", "case", found.case_id, ip=client_ip(),
                            detail={"page": "api"})
    engine = services().engine
    return jsonify({"case": case_json(found, case_context(engine, found.case_id),
                                      case_notes(engine, found.case_id, services().vault))})


@bp.get("/openapi.json")
def openapi():
    """The API's description: public, like any API documentation (it holds no data)."""
    response = jsonify(openapi_document())
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


# --------------------------------------------------------------------------- OpenAPI


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
    return {str(code): {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _path_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema or {"type": "string"}}


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _roles(*roles: str) -> dict[str, Any]:
    return {"x-token-roles": list(roles)}


_NULLABLE_STR = {"type": ["string", "null"]}
_NULLABLE_INT = {"type": ["integer", "null"]}
_TIME = {"type": "string", "format": "date-time",
         "description": "ISO-8601; in answers Asia/Shanghai (+08:00); in requests a time "
                        "without an offset is Asia/Shanghai local time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_TEAM = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"}
_ROLE = {"type": "string", "description": "primary, backup, attending, department_head "
                                          "(or 一线, 二线, 主治, 科主任)"}
_READERS = ("admin", "supervisor", "department_head", "surgeon")
_ADMINS = ("admin", "supervisor")

CALL_FILTER_PARAMETERS = [
    _query("from", "Start of the range: a local date YYYY-MM-DD (Asia/Shanghai) or an ISO "
                   "datetime (no offset: local). Default: 7 days before `to`."),
    _query("to", "End of the range: a local date (that whole day counts) or an ISO datetime "
                 "(exclusive). Default: the end of today."),
    _query("team", "Team code.", _TEAM),
    _query("outcome", "Case outcome.", {"type": "string", "enum": list(OUTCOMES)}),
    _query("hospital", "Partner hospital id.", _ID),
    _query("caller", "Caller number, digits (spaces and dashes are dropped).",
           {"type": "string", "pattern": "^[0-9 -]{1,64}$"}),
    _query("match", "How `caller` matches the normalised number: its beginning, all of it, "
                    "or (four digits) the end of a number of 8 digits or more. A department "
                    "head's or a surgeon's token may not search by a prefix (it sees numbers "
                    "masked) and its default is `exact`; its searches by number are limited "
                    "to 30 an hour.",
           {"type": "string", "enum": ["prefix", "exact", "last4"], "default": "prefix"}),
    _query("surgeon", "A surgeon who was rung for the call (or connected to it).", _ID),
    _query("recording", "1: only calls with a recording; 0: only calls without.",
           {"type": "string", "enum": ["1", "0"]}),
    _query("sort", "Sort key: start time, team, outcome, or time to reach a surgeon.",
           {"type": "string", "enum": list(SORTS), "default": "started"}),
    _query("dir", "Sort direction (default: desc for `started`, asc otherwise). Ties: newest "
                  "first. Calls never connected sort last by `connect`.",
           {"type": "string", "enum": ["asc", "desc"]}),
]

OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "Call": {
        "type": "object",
        "properties": {
            "case_id": {"type": "string"},
            "started_at": _TIME,
            "caller": _ref("Caller"),
            "team": _NULLABLE_STR, "team_name_zh": _NULLABLE_STR, "team_name_en": _NULLABLE_STR,
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "connected_at": _NULLABLE_TIME,
            "connected_surgeon": {"oneOf": [{"type": "null"}, {
                "type": "object", "properties": {"id": _NULLABLE_INT, "name": _NULLABLE_STR}}]},
            "time_to_connect_s": {"type": ["number", "null"]},
            "ended_at": _NULLABLE_TIME,
            "has_recording": {"type": "boolean"},
            "recording_s": _NULLABLE_INT,
            "url": {"type": "string"},
        },
    },
    "Caller": {
        "type": "object",
        "properties": {
            "number": {"type": ["string", "null"], "description": "normalised digits"},
            "raw_safe": {"type": "string", "description": "the caller-ID as received, escaped"},
            "class": {"type": "string", "enum": ["partner", "public", "anonymous", "invalid"]},
            "hospital_id": _NULLABLE_INT,
            "hospital_name": _NULLABLE_STR,
        },
    },
    "CallPage": {
        "type": "object",
        "properties": {
            "calls": {"type": "array", "items": _ref("Call")},
            "next": {"type": ["string", "null"], "description": "pass as `after` for the next page"},
            "prev": {"type": ["string", "null"], "description": "pass as `before` for the page before"},
            "limit": {"type": "integer"}, "sort": {"type": "string"}, "dir": {"type": "string"},
            "filters": {"type": "object"},
        },
    },
    "TimelineEvent": {
        "type": "object",
        "required": ["at", "kind"],
        "properties": {
            "at": _TIME,
            "kind": {"type": "string",
                     "enum": ["started", "menu", "ring", "accepted", "connected", "voicemail",
                              "ended"]},
            "seq": {"type": "integer"}, "surgeon_id": _NULLABLE_INT, "name": _NULLABLE_STR,
            "role": {"type": "string"}, "attempt_kind": {"type": "string", "enum": ["chain", "nurse"]},
            "outcome": _NULLABLE_STR, "ring_s": _NULLABLE_INT, "answered": {"type": "boolean"},
            "choice": {"type": "string"}, "label": {"type": "string"},
            "hangup_by": _NULLABLE_STR,
        },
    },
    "Note": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "at": _TIME, "author": {"type": "string"},
            "surgeon_id": _NULLABLE_INT,
            "disposition": {"type": ["string", "null"], "enum": [*DISPOSITIONS, None]},
            "text": {"type": "string"},
        },
    },
    "Case": {
        "type": "object",
        "properties": {
            "case_id": {"type": "string"}, "started_at": _TIME, "ended_at": _NULLABLE_TIME,
            "language": {"type": "string"}, "caller": _ref("Caller"),
            "team": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "outcome": {"type": "string", "enum": list(OUTCOMES)},
            "connected_at": _NULLABLE_TIME,
            "connected_surgeon": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "time_to_connect_s": {"type": ["number", "null"]},
            "hangup_by": _NULLABLE_STR,
            "recording": {"oneOf": [{"type": "null"}, {
                "type": "object", "properties": {"seconds": _NULLABLE_INT}}]},
            "voicemail": {"type": "boolean"},
            "disposition": {"type": ["string", "null"]},
            "attempts": {"type": "array", "items": {"type": "object"}},
            "timeline": {"type": "array", "items": _ref("TimelineEvent")},
            "notes": {"type": "array", "items": _ref("Note")},
        },
    },
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/calls": {"get": {
        "tags": ["calls"], "operationId": "listCalls", "summary": "The call list (filtered, sorted, paged)",
        "description": "Same filters as the console's Calls page. A value that cannot be used is "
                       "a 400 listing each problem. Surgeon tokens see only the cases their "
                       "surgeon took part in.",
        **_roles(*_READERS),
        "parameters": [*CALL_FILTER_PARAMETERS,
                       _query("limit", "Page size.", {"type": "integer", "minimum": 1,
                                                      "maximum": 200, "default": 50}),
                       _query("after", "Cursor: the page after (a `next`)."),
                       _query("before", "Cursor: the page before (a `prev`).")],
        "responses": {"200": _json(_ref("CallPage")), **_errors(400, 401, 403)},
    }},
    "/api/v1/cases/{case_id}": {"get": {
        "tags": ["calls"], "operationId": "getCase", "summary": "One case: timeline, attempts, notes",
        **_roles(*_READERS),
        "parameters": [_path_param("case_id", "Case id", {"type": "string",
                                                          "pattern": "^[A-Za-z0-9._:-]{1,64}$"})],
        "responses": {"200": _json({"type": "object", "properties": {"case": _ref("Case")}}),
                      **_errors(401, 403, 404)},
    }},
    "/api/v1/openapi.json": {"get": {
        "tags": ["meta"], "operationId": "openapi", "summary": "This document",
        "security": [],
        "responses": {"200": _json({"type": "object"})},
    }},
}


# The roster API (console/api_roster.py), described here until it exports its own.
_WINDOW = [_query("start", "Window start (ISO-8601)"), _query("end", "Window end (ISO-8601)")]
_TRADE_ANSWER = _json({"type": "object", "properties": {"trade": _ref("RosterTrade")}})
_ROSTER_CONFLICT = {"409": _json(_ref("Error"), "The roster's state does not allow it")}
_IMPORT_ANSWERS = {
    "200": _json(_ref("RosterImportResult"), "Written (or, with dry_run, checked)"),
    "422": _json(_ref("Error"), "The file has errors; nothing was written (`problems` lists them)"),
    **_errors(400, 401, 403),
}
_UPLOAD = {"required": True, "content": {
    "text/csv": {"schema": {"type": "string"}},
    "text/calendar": {"schema": {"type": "string"}},
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream"}}}},
}}
_ICS = {"200": {"description": "An iCalendar feed",
                "content": {"text/calendar": {"schema": {"type": "string"}}}},
        **_errors(400, 401, 403)}
_FEED_PARAMS = [*_WINDOW, _query("lang", "Event language", {"type": "string", "enum": ["zh", "en"]}),
                _query("token", "A calendar token (only calendar tokens may travel in a URL)")]

ROSTER_OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "RosterTeam": {"type": "object", "properties": {
        "code": {"type": "string"}, "name_zh": {"type": "string"}, "name_en": {"type": "string"},
        "ring_s": {"type": "integer"}, "repeats": {"type": "integer"}, "tz": {"type": "string"},
        "requires_approval": {"type": "boolean"}, "department_head": _NULLABLE_INT}},
    "RosterMember": {"type": "object", "properties": {
        "position": {"type": "integer"}, "surgeon_id": {"type": "integer"}, "name": {"type": "string"},
        "role": {"type": "string"}, "phone": {"type": "string"}, "rank": {"type": "string"},
        "start": _TIME, "end": _TIME}},
    "RosterPiece": {"type": "object", "properties": {
        "surgeon_id": {"type": "integer"}, "name": _NULLABLE_STR, "role": {"type": "string"},
        "start": _TIME, "end": _TIME,
        "source": {"type": "string", "enum": ["rotation", "shift", "override"]}}},
    "RosterFinding": {"type": "object", "properties": {
        "kind": {"type": "string"}, "team": {"type": "string"}, "other_team": _NULLABLE_STR,
        "surgeon_id": _NULLABLE_INT, "start": _TIME, "end": _TIME,
        "message": {"type": "string"}, "message_zh": {"type": "string"}}},
    "RosterOverride": {"type": "object", "properties": {
        "team": {"type": "string"}, "role": {"type": "string"}, "surgeon_id": {"type": "integer"},
        "replaces": _NULLABLE_INT, "start": _TIME, "end": _TIME, "note": {"type": "string"}}},
    "RosterLeave": {"type": "object", "properties": {
        "surgeon_id": {"type": "integer"}, "start": _TIME, "end": _TIME, "note": {"type": "string"}}},
    "RosterRotation": {"type": "object", "properties": {
        "id": {"type": "integer"}, "team": {"type": "string"}, "role": {"type": "string"},
        "kind": {"type": "string"}, "members": {"type": "array", "items": {"type": "integer"}},
        "start": {"type": "string", "format": "date"}, "until": {"type": ["string", "null"]},
        "handoff_times": {"type": "array", "items": {"type": "string"}},
        "every_days": {"type": "integer"}, "layer": {"type": "integer"}, "name": {"type": "string"}}},
    "RosterTrade": {"type": "object", "properties": {
        "id": {"type": "integer"}, "kind": {"type": "string", "enum": ["offer", "swap"]},
        "status": {"type": "string"}, "team": {"type": "string"}, "requester": {"type": "integer"},
        "role": {"type": "string"}, "start": _TIME, "end": _TIME, "counterpart": _NULLABLE_INT,
        "counter_role": _NULLABLE_STR, "counter_start": _NULLABLE_TIME, "counter_end": _NULLABLE_TIME,
        "taker": _NULLABLE_INT, "decided_by": _NULLABLE_INT, "decided_at": _NULLABLE_TIME,
        "requested_at": _TIME, "note": {"type": "string"},
        "overrides": {"type": "array", "items": _ref("RosterOverride")}}},
    "RosterImportResult": {"type": "object", "properties": {
        "written": {"type": "boolean"}, "dry_run": {"type": "boolean"},
        "teams": {"type": "array", "items": {"type": "object"}}, "shifts": {"type": "integer"},
        "problems": {"type": "array", "items": {"type": "object"}},
        "removed": {"type": "integer"}, "shifts_written": {"type": "integer"},
        "preview": {"type": "array", "items": {"type": "object"}}}},
}


def _roster_op(operation_id: str, summary: str, roles: tuple[str, ...], *,
               params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
               responses: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": ["roster"], "operationId": operation_id, "summary": summary,
                          **_roles(*roles), "responses": responses}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = body
    return op


_R = "/api/v1/roster"
_BY = {"by": {**_ID, "description": "the surgeon acting (admin/supervisor tokens only; a bound "
                                    "token acts as its own surgeon)"}}
ROSTER_OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    f"{_R}/teams": {"get": _roster_op(
        "rosterTeams", "Teams", _READERS,
        responses={"200": _json({"type": "object", "properties": {
            "teams": {"type": "array", "items": _ref("RosterTeam")}}}), **_errors(401, 403)})},
    f"{_R}/now": {"get": _roster_op(
        "rosterNow", "Who is on call (each team's chain, in ring order)", _READERS,
        params=[_query("at", "An instant (default: now)"), _query("team", "One team", _TEAM)],
        responses={"200": _json({"type": "object", "properties": {
            "at": _TIME, "teams": {"type": "array", "items": {"allOf": [_ref("RosterTeam"), {
                "type": "object", "properties": {
                    "chain": {"type": "array", "items": _ref("RosterMember")}}}]}}}}),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/teams/{{team}}/shifts": {"get": _roster_op(
        "rosterShifts", "A team's effective shifts over a window", _READERS,
        params=[_path_param("team", "Team code", _TEAM), *_WINDOW,
                _query("day", "First local day (instead of start/end)", {"type": "string", "format": "date"}),
                _query("days", "Number of days", {"type": "integer", "minimum": 1, "maximum": 366})],
        responses={"200": _json({"type": "object", "properties": {
            "team": {"type": "string"}, "start": _TIME, "end": _TIME,
            "shifts": {"type": "array", "items": _ref("RosterPiece")}}}),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/check": {"get": _roster_op(
        "rosterCheck", "Gaps, double bookings, leave and short chains", _READERS,
        params=[_query("start", "From (default: now)"),
                _query("days", "Days to check", {"type": "integer", "minimum": 1, "maximum": 366}),
                _query("team", "One team", _TEAM)],
        responses={"200": _json({"type": "object", "properties": {
            "start": _TIME, "end": _TIME,
            "findings": {"type": "array", "items": _ref("RosterFinding")}}}),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/trades": {
        "get": _roster_op(
            "rosterTrades", "Swaps and give-aways", _READERS,
            params=[_query("status", "Comma-separated statuses"), _query("team", "Team", _TEAM),
                    _query("limit", "At most", {"type": "integer", "minimum": 1, "maximum": 500})],
            responses={"200": _json({"type": "object", "properties": {
                "trades": {"type": "array", "items": _ref("RosterTrade")}}}), **_errors(400, 401, 403)}),
        "post": _roster_op(
            "rosterNewTrade", "Offer a shift (give-away) or request a swap", (*_ADMINS, "surgeon"),
            body=_body({"type": "object", "required": ["kind", "team", "start", "end"],
                        "additionalProperties": False, "properties": {
                            "kind": {"type": "string", "enum": ["offer", "swap"]}, **_BY,
                            "team": _TEAM, "role": _ROLE, "start": _TIME, "end": _TIME,
                            "note": {"type": "string", "maxLength": 512},
                            "with_surgeon": _ID, "their_start": _TIME, "their_end": _TIME,
                            "their_role": _ROLE}}),
            responses={"201": _json({"type": "object", "properties": {"trade": _ref("RosterTrade")}},
                                    "Created"),
                       **_errors(400, 401, 403, 404), **_ROSTER_CONFLICT}),
    },
    f"{_R}/trades/{{trade_id}}/take": {"post": _roster_op(
        "rosterTakeTrade", "Take a trade", (*_ADMINS, "surgeon"),
        params=[_path_param("trade_id", "Trade id", _ID)],
        body=_body({"type": "object", "additionalProperties": False, "properties": _BY}, required=False),
        responses={"200": _TRADE_ANSWER, **_errors(400, 401, 403, 404), **_ROSTER_CONFLICT})},
    f"{_R}/trades/{{trade_id}}/approve": {"post": _roster_op(
        "rosterApproveTrade", "Approve a taken trade (department head)", (*_ADMINS, "department_head"),
        params=[_path_param("trade_id", "Trade id", _ID)],
        body=_body({"type": "object", "additionalProperties": False, "properties": _BY}, required=False),
        responses={"200": _TRADE_ANSWER, **_errors(400, 401, 403, 404), **_ROSTER_CONFLICT})},
    f"{_R}/trades/{{trade_id}}/decline": {"post": _roster_op(
        "rosterDeclineTrade", "Decline a trade", (*_ADMINS, "department_head", "surgeon"),
        params=[_path_param("trade_id", "Trade id", _ID)],
        body=_body({"type": "object", "additionalProperties": False, "properties": {
            **_BY, "note": {"type": "string", "maxLength": 512}}}, required=False),
        responses={"200": _TRADE_ANSWER, **_errors(400, 401, 403, 404), **_ROSTER_CONFLICT})},
    f"{_R}/overrides": {"post": _roster_op(
        "rosterAddOverride", "Add an override or cover", _ADMINS,
        body=_body({"type": "object", "required": ["team", "surgeon_id", "start", "end"],
                    "additionalProperties": False, "properties": {
                        "team": _TEAM, "role": _ROLE, "surgeon_id": _ID, "start": _TIME, "end": _TIME,
                        "replaces": _ID, "note": {"type": "string", "maxLength": 512}}}),
        responses={"201": _json({"type": "object", "properties": {
            "id": {"type": "integer"}, "override": _ref("RosterOverride")}}, "Created"),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/overrides/{{override_id}}": {"delete": _roster_op(
        "rosterRemoveOverride", "Remove an override (not a trade's cover)", _ADMINS,
        params=[_path_param("override_id", "Override id", _ID)],
        responses={"200": _json({"type": "object", "properties": {
            "id": {"type": "integer"}, "removed": _ref("RosterOverride")}}),
            **_errors(400, 401, 403, 404), **_ROSTER_CONFLICT})},
    f"{_R}/leave": {"post": _roster_op(
        "rosterAddLeave", "Add leave (a surgeon token: only its own)", (*_ADMINS, "surgeon"),
        body=_body({"type": "object", "required": ["start", "end"], "additionalProperties": False,
                    "properties": {"surgeon_id": _ID, "start": _TIME, "end": _TIME,
                                   "note": {"type": "string", "maxLength": 512}}}),
        responses={"201": _json({"type": "object", "properties": {
            "id": {"type": "integer"}, "leave": _ref("RosterLeave")}}, "Created"),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/leave/{{leave_id}}": {"delete": _roster_op(
        "rosterRemoveLeave", "Remove leave (a surgeon token: only its own)", (*_ADMINS, "surgeon"),
        params=[_path_param("leave_id", "Leave id", _ID)],
        responses={"200": _json({"type": "object", "properties": {
            "id": {"type": "integer"}, "removed": _ref("RosterLeave")}}),
            **_errors(400, 401, 403, 404)})},
    f"{_R}/rotations": {
        "get": _roster_op(
            "rosterRotations", "Rotations", _READERS, params=[_query("team", "Team", _TEAM)],
            responses={"200": _json({"type": "object", "properties": {
                "rotations": {"type": "array", "items": _ref("RosterRotation")}}}),
                **_errors(400, 401, 403)}),
        "post": _roster_op(
            "rosterAddRotation", "Add a rotation", _ADMINS,
            body=_body({"type": "object", "required": ["team", "members", "start"],
                        "additionalProperties": False, "properties": {
                            "team": _TEAM, "role": _ROLE,
                            "members": {"type": "array", "items": _ID, "minItems": 1, "maxItems": 100},
                            "start": {"type": "string", "format": "date"},
                            "handoff_times": {"type": "array", "items": {"type": "string"}},
                            "every_days": {"type": "integer", "minimum": 1, "maximum": 366},
                            "layer": {"type": "integer", "minimum": 0, "maximum": 1000},
                            "until": {"type": "string", "format": "date"},
                            "name": {"type": "string", "maxLength": 64}}}),
            responses={"201": _json({"type": "object", "properties": {
                "id": {"type": "integer"}, "rotation": _ref("RosterRotation")}}, "Created"),
                **_errors(400, 401, 403, 404)}),
    },
    f"{_R}/rotations/{{rotation_id}}/end": {"post": _roster_op(
        "rosterEndRotation", "End a rotation (the past stays)", _ADMINS,
        params=[_path_param("rotation_id", "Rotation id", _ID)],
        body=_body({"type": "object", "required": ["until"], "additionalProperties": False,
                    "properties": {"until": {"type": "string", "format": "date"}}}),
        responses={"200": _json({"type": "object", "properties": {
            "rotation": _ref("RosterRotation")}}), **_errors(400, 401, 403, 404)})},
    f"{_R}/audit": {"get": _roster_op(
        "rosterAudit", "Roster changes, newest first", _READERS,
        params=[_query("subject", "trade, override, leave, rotation, shifts or team"),
                _query("subject_id", "Subject id"),
                _query("limit", "At most", {"type": "integer", "minimum": 1, "maximum": 500})],
        responses={"200": _json({"type": "object", "properties": {
            "entries": {"type": "array", "items": {"type": "object"}}}}), **_errors(400, 401, 403)})},
    f"{_R}/teams/{{team}}.ics": {"get": {**_roster_op(
        "rosterTeamFeed", "A team's roster as iCalendar", ("admin", "supervisor", "department_head",
                                                           "surgeon", "calendar"),
        params=[_path_param("team", "Team code", _TEAM), *_FEED_PARAMS], responses=_ICS),
        "security": [{"bearer": []}, {"calendarToken": []}]}},
    f"{_R}/surgeons/{{surgeon_id}}.ics": {"get": {**_roster_op(
        "rosterSurgeonFeed", "A surgeon's shifts as iCalendar", ("admin", "supervisor",
                                                                  "department_head", "surgeon",
                                                                  "calendar"),
        params=[_path_param("surgeon_id", "Surgeon id", _ID), *_FEED_PARAMS], responses=_ICS),
        "security": [{"bearer": []}, {"calendarToken": []}]}},
    f"{_R}/import/csv": {"post": _roster_op(
        "rosterImportCsv", "Import a month's roster from CSV (all or nothing)", _ADMINS,
        params=[_query("team", "Team", _TEAM), _query("month", "YYYY-MM"),
                _query("handoff", "HH:MM (default 08:00)"),
                _query("dry_run", "1: check only", {"type": "string", "enum": ["1", "0"]})],
        body=_UPLOAD, responses=_IMPORT_ANSWERS)},
    f"{_R}/import/ical": {"post": _roster_op(
        "rosterImportIcal", "Import shifts from an iCalendar file (all or nothing)", _ADMINS,
        params=[_query("team", "Team", _TEAM), _query("role", "Role"), _query("month", "YYYY-MM"),
                *_WINDOW, _query("dry_run", "1: check only", {"type": "string", "enum": ["1", "0"]})],
        body=_UPLOAD, responses=_IMPORT_ANSWERS)},
}


def _base_document() -> dict[str, Any]:
    error = {"type": "object", "required": ["error", "message", "message_zh"], "properties": {
        "error": {"type": "string", "description": "a stable code"},
        "message": {"type": "string"}, "message_zh": {"type": "string"}}}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": "96608 hotline API", "version": API_VERSION,
                 "description": "Calls, cases, rosters and the network's figures of the 96608 "
                                "trauma & plastic-surgery hotline. Bearer tokens are made with "
                                "`hotline token create`; `x-token-roles` lists the token roles "
                                "an operation accepts. Times are ISO-8601 in Asia/Shanghai."},
        "security": [{"bearer": []}],
        "tags": [{"name": "calls"}, {"name": "roster"}, {"name": "figures"}, {"name": "meta"}],
        "paths": {},
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer hl_..."},
                "calendarToken": {"type": "apiKey", "in": "query", "name": "token",
                                  "description": "calendar tokens only, for phone calendars"},
            },
            "schemas": {"Error": error},
            "responses": {
                "BadRequest": _json(_ref("Error"), "Invalid request"),
                "Unauthorized": _json(_ref("Error"), "No token, or an unknown or revoked one"),
                "Forbidden": _json(_ref("Error"), "The token's role may not do this"),
                "NotFound": _json(_ref("Error"), "Not found"),
            },
        },
    }


def api_modules() -> list[str]:
    """The modules whose OPENAPI_PATHS make the document: the roster API and every console.api_*."""
    from console.pages import PAGE_MODULES

    names = ["console.api_roster"]
    names += [name for name in PAGE_MODULES
              if name.startswith("console.api_") and name not in names]
    return names


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document, merged from each API module's fragments (see the docstring)."""
    document = _base_document()
    paths: dict[str, dict[str, Any]] = document["paths"]
    schemas: dict[str, Any] = document["components"]["schemas"]
    for name in api_modules():
        module = importlib.import_module(name)
        fragment = getattr(module, "OPENAPI_PATHS", None)
        extra = getattr(module, "OPENAPI_SCHEMAS", None) or {}
        if fragment is None and name == "console.api_roster":
            fragment, extra = ROSTER_OPENAPI_PATHS, ROSTER_OPENAPI_SCHEMAS
        for path, item in (fragment or {}).items():
            merged = paths.setdefault(path, {})
            twice = set(merged) & set(item)
            if twice:
                raise ValueError(f"{name}: {path} {', '.join(sorted(twice))} is described twice")
            merged.update(copy.deepcopy(item))
        for schema, body in extra.items():
            if schema in schemas:
                raise ValueError(f"{name}: the schema {schema} is defined twice")
            schemas[schema] = copy.deepcopy(body)
    document["paths"] = dict(sorted(paths.items()))
    return document
