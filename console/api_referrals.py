"""The JSON API for referrals (`/api/v1/referrals`): list, read, make from a case, change status.

Bearer tokens (`console.tokens`) as for the rest of the API: admin, supervisor
and department_head tokens see and act on every referral; a surgeon token on
the referrals of cases its surgeon took part in and those assigned to them
(`db.referrals.visible_to`, the console's rule); calendar tokens nothing.
Every change is audited with the actor `api:<token name>`, in the same
transaction as the change (`db.referrals.ReferralStore`).

Answers: 201 for a referral made; 400 for a body that is not what is
described (unknown fields included); 404 for an unknown referral or case;
403 for a referral or case the token may not touch (audited); 409 for a stale
`version` (someone changed the referral since the client read it: nothing
was written; read it again) or a case that is a referral already; 422 for a
change the state machine does not allow, or a decline / cancellation without
a note, or patient essentials out of range.
"""
from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Flask, jsonify, request

from console import ApiError, services
from console.api_roster import Body, arg, bad, created, iso, parse_int_text, parse_time
from console.auth import client_ip
from console.cases import load_case, took_part
from console.tokens import READERS, current_token, forbidden, require
from db.calls_query import CASE_ID_RE
from db.referrals import (
    AlreadyReferred,
    CaseNotFound,
    Listed,
    ReferralNotFound,
    ReferralStore,
    StaleReferral,
)
from db.tokens import TokenRole
from network.referrals import (
    MAX_INJURY,
    MAX_NOTE,
    STATUS_LABELS,
    IllegalTransition,
    InvalidPatient,
    ReasonRequired,
    ReferralError,
    ReferralStatus,
    Sex,
    UnknownStatus,
    ischaemia,
    parse_status,
    patient,
)

bp = Blueprint("api_referrals", __name__, url_prefix="/api/v1")
NAV: list = []
MAX_LIST = 500
TEAM_RE = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)


def register(app: Flask, csrf) -> None:
    csrf.exempt(bp)  # bearer tokens: a browser never sends one by itself
    app.register_blueprint(bp)


def _store() -> ReferralStore:
    hub = services()
    return ReferralStore(hub.engine, clock=hub.clock)


# --------------------------------------------------------------------------- JSON out


def referral_json(listed: Listed, *, events: bool) -> dict[str, Any]:
    r = listed.referral
    p = r.patient
    info = ischaemia(r, services().clock())
    body: dict[str, Any] = {
        "id": r.id,
        "case_id": r.case_id,
        "status": r.status.value,
        "status_zh": r.status.label_zh,
        "open": r.open,
        "next": [s.value for s in r.next_statuses()],
        "hospital": ({"id": r.hospital_id, "name": listed.hospital_name}
                     if r.hospital_id is not None else None),
        "team": ({"code": r.team, "name_zh": listed.team_name_zh, "name_en": listed.team_name_en}
                 if r.team is not None else None),
        "surgeon": ({"id": r.surgeon_id, "name": listed.surgeon_name}
                    if r.surgeon_id is not None else None),
        "patient": {"age": p.age, "sex": p.sex.value, "injury": p.injury,
                    "injured_at": iso(p.injured_at)},
        "since_injury_s": (int(info.elapsed.total_seconds())
                           if info.elapsed is not None else None),
        "urgency": info.urgency.value,
        "part": info.part.value,
        "created_at": iso(r.created_at),
        "updated_at": iso(r.updated_at),
        "version": r.version,
        "url": f"/api/v1/referrals/{r.id}",
    }
    if events:
        body["events"] = [{"at": iso(e.at), "status": e.status.value, "actor": e.actor,
                           "note": e.note} for e in r.events]
    return body


# --------------------------------------------------------------------------- access


def _surgeon_of_token() -> int | None:
    """The surgeon a surgeon token stands for (0: none), or None for staff tokens."""
    token = current_token()
    if token.role is TokenRole.SURGEON:
        return token.surgeon_id or 0
    return None


def _refuse(reason: str, message: str, message_zh: str) -> ApiError:
    token = current_token()
    services().audit.record(token.actor, "denied", "path", request.path[:64], ip=client_ip(),
                            detail={"method": request.method, "reason": reason})
    return forbidden(message, message_zh)


def _visible(referral_id: int) -> Listed:
    store = _store()
    listed = store.get(referral_id)
    if listed is None:
        raise ApiError(404, "not_found", "no such referral", "转诊记录不存在")
    only = _surgeon_of_token()
    if only is not None and not store.may_see(referral_id, only):
        raise _refuse("referral of another surgeon",
                      "a surgeon token reaches only the referrals of cases its surgeon took "
                      "part in, or assigned to them", "医生令牌只能访问本人参与或接收的转诊")
    return listed


def _problem(exc: ReferralError) -> ApiError:
    if isinstance(exc, StaleReferral):
        return ApiError(409, exc.code, exc.message, exc.message_zh, version=exc.current)
    if isinstance(exc, AlreadyReferred):
        return ApiError(409, exc.code, exc.message, exc.message_zh, referral_id=exc.referral_id)
    if isinstance(exc, (ReferralNotFound, CaseNotFound)):
        return ApiError(404, "not_found", exc.message, exc.message_zh)
    if isinstance(exc, UnknownStatus):
        return ApiError(400, "invalid_request", exc.message, exc.message_zh)
    if isinstance(exc, (IllegalTransition, ReasonRequired, InvalidPatient)):
        extra = {"field": exc.field} if isinstance(exc, InvalidPatient) else {}
        return ApiError(422, exc.code, exc.message, exc.message_zh, **extra)
    return ApiError(400, exc.code, exc.message, exc.message_zh)


# --------------------------------------------------------------------------- routes


@bp.get("/referrals")
@require(*READERS)
def referrals():
    status = arg("status")
    hospital, team = arg("hospital"), arg("team")
    open_arg = arg("open")
    if open_arg not in (None, "0", "1"):
        raise bad("open: 1 or 0", "open：1 或 0")
    if team is not None and not TEAM_RE.fullmatch(team):
        raise bad("team: a team code", "team：专业组代码无效")
    try:
        wanted = parse_status(status) if status is not None else None
    except UnknownStatus as exc:
        raise _problem(exc) from None
    limit = parse_int_text(arg("limit") or "200", "limit", 1, MAX_LIST)
    found = _store().list(status=wanted,
                          hospital_id=parse_int_text(hospital, "hospital") if hospital else None,
                          team=team, open_only=open_arg == "1",
                          only_surgeon=_surgeon_of_token(), limit=limit)
    return jsonify({"referrals": [referral_json(x, events=False) for x in found]})


@bp.get("/referrals/<int:referral_id>")
@require(*READERS)
def referral(referral_id: int):
    return jsonify({"referral": referral_json(_visible(referral_id), events=True)})


@bp.post("/referrals")
@require(*READERS)
def create():
    body = Body(("case_id", "age", "sex", "injury", "injured_at", "note"))
    case_id = body.data.get("case_id")
    if not isinstance(case_id, str) or not CASE_ID_RE.fullmatch(case_id):
        raise bad("case_id: a case id is required", "case_id：需要病例编号")
    case = load_case(case_id)
    if case is None:
        raise ApiError(404, "not_found", "no such case", "病例记录不存在")
    only = _surgeon_of_token()
    if only is not None and not took_part(case, only):
        raise _refuse("case of another surgeon",
                      "a surgeon token refers only cases its surgeon took part in",
                      "医生令牌只能将本人参与的病例转为转诊")
    injured_at = parse_time(body.data["injured_at"], "injured_at") \
        if body.has("injured_at") else None
    token = current_token()
    store = _store()
    try:
        essentials = patient(age=body.data.get("age"), sex=body.data.get("sex"),
                             injury=body.data.get("injury") or "", injured_at=injured_at,
                             now=services().clock())
        made = store.create(case.case_id, actor=token.actor, patient=essentials,
                            note=body.data.get("note") or "", ip=client_ip())
    except ReferralError as exc:
        raise _problem(exc) from None
    listed = store.get(made.id)  # type: ignore[arg-type]
    assert listed is not None
    return created({"referral": referral_json(listed, events=True)})


@bp.post("/referrals/<int:referral_id>/status")
@require(*READERS)
def change_status(referral_id: int):
    body = Body(("status", "note", "version"))
    _visible(referral_id)
    version = body.int("version", lo=1, hi=2**31 - 1)
    token = current_token()
    store = _store()
    try:
        wanted = parse_status(body.data.get("status"))
        store.change_status(referral_id, wanted, seen_version=version,  # type: ignore[arg-type]
                            actor=token.actor, note=body.data.get("note") or "",
                            by_surgeon=token.surgeon_id if token.role.bound else None,
                            ip=client_ip())
    except ReferralError as exc:
        raise _problem(exc) from None
    listed = store.get(referral_id)
    assert listed is not None
    return jsonify({"referral": referral_json(listed, events=True)})


# --------------------------------------------------------------------------- OpenAPI


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound"}
    return {str(code): {"$ref": f"#/components/responses/{names[code]}"} for code in codes}


_STATUS = {"type": "string", "enum": [s.value for s in ReferralStatus],
           "description": "; ".join(f"{s.value} = {zh}" for s, (zh, _en) in STATUS_LABELS.items())}
_NULLABLE_STR = {"type": ["string", "null"]}
_TIME = {"type": "string", "format": "date-time"}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_ID = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
_READERS = ["admin", "supervisor", "department_head", "surgeon"]
_CONFLICT = _json(_ref("Error"), "Stale version (nothing written: read the referral again), "
                                 "or the case is a referral already")
_UNPROCESSABLE = _json(_ref("Error"), "The state machine does not allow this change, a reason "
                                      "is missing, or the essentials are out of range")
_PATIENT_IN = {
    "age": {"type": ["integer", "null"], "minimum": 0, "maximum": 120},
    "sex": {"type": ["string", "null"], "enum": [s.value for s in Sex] + [None]},
    "injury": {"type": ["string", "null"], "maxLength": MAX_INJURY},
    "injured_at": {**_NULLABLE_TIME, "description": "ISO-8601; no offset: Asia/Shanghai; "
                                                    "not in the future"},
}

OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "Referral": {
        "type": "object",
        "properties": {
            "id": {"type": "integer"}, "case_id": {"type": "string"}, "status": _STATUS,
            "status_zh": {"type": "string"}, "open": {"type": "boolean"},
            "next": {"type": "array", "items": _STATUS,
                     "description": "the statuses this referral may move to"},
            "hospital": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "team": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "surgeon": {"oneOf": [{"type": "null"}, {"type": "object"}]},
            "patient": {"type": "object", "properties": {
                "age": {"type": ["integer", "null"]}, "sex": {"type": "string"},
                "injury": {"type": "string"}, "injured_at": _NULLABLE_TIME}},
            "since_injury_s": {"type": ["integer", "null"]},
            "urgency": {"type": "string", "enum": ["none", "ok", "urgent", "critical", "beyond"],
                        "description": "ischaemia urgency of a replantation (warm limits: "
                                       "6 h limb, 12 h digit)"},
            "part": {"type": "string", "enum": ["digit", "limb", "unknown"]},
            "created_at": _TIME, "updated_at": _TIME,
            "version": {"type": "integer", "description": "send it back to change the referral"},
            "url": {"type": "string"},
            "events": {"type": "array", "items": {"type": "object", "properties": {
                "at": _TIME, "status": _STATUS, "actor": {"type": "string"},
                "note": {"type": "string"}}}},
        },
    },
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/referrals": {
        "get": {
            "tags": ["referrals"], "operationId": "listReferrals",
            "summary": "Referrals, open first, then the latest change first",
            "description": "Surgeon tokens see the referrals of cases their surgeon took part "
                           "in and those assigned to them.",
            "x-token-roles": _READERS,
            "parameters": [
                {"name": "status", "in": "query", "required": False, "schema": _STATUS,
                 "description": "One status"},
                {"name": "hospital", "in": "query", "required": False, "schema": _ID,
                 "description": "Partner hospital id"},
                {"name": "team", "in": "query", "required": False,
                 "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,32}$"},
                 "description": "Receiving team code"},
                {"name": "open", "in": "query", "required": False,
                 "schema": {"type": "string", "enum": ["1", "0"]},
                 "description": "1: only referrals not yet declined, admitted or cancelled"},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST, "default": 200},
                 "description": "At most"},
            ],
            "responses": {"200": _json({"type": "object", "properties": {
                "referrals": {"type": "array", "items": _ref("Referral")}}}),
                **_errors(400, 401, 403)},
        },
        "post": {
            "tags": ["referrals"], "operationId": "createReferral",
            "summary": "Make a case a referral (status requested)",
            "description": "The partner hospital comes from the case, the team is the case's. "
                           "Surgeon tokens: only cases their surgeon took part in.",
            "x-token-roles": _READERS,
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["case_id"], "additionalProperties": False,
                "properties": {"case_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
                               **_PATIENT_IN,
                               "note": {"type": ["string", "null"], "maxLength": MAX_NOTE}}}}}},
            "responses": {"201": _json({"type": "object", "properties": {
                "referral": _ref("Referral")}}, "Created"),
                **_errors(400, 401, 403, 404), "409": _CONFLICT, "422": _UNPROCESSABLE},
        },
    },
    "/api/v1/referrals/{referral_id}": {"get": {
        "tags": ["referrals"], "operationId": "getReferral",
        "summary": "One referral with its events", "x-token-roles": _READERS,
        "parameters": [{"name": "referral_id", "in": "path", "required": True, "schema": _ID,
                        "description": "Referral id"}],
        "responses": {"200": _json({"type": "object", "properties": {
            "referral": _ref("Referral")}}), **_errors(401, 403, 404)},
    }},
    "/api/v1/referrals/{referral_id}/status": {"post": {
        "tags": ["referrals"], "operationId": "changeReferralStatus",
        "summary": "Change a referral's status (optimistic concurrency: send `version`)",
        "description": "requested → accepted | declined; accepted → en_route → arrived → "
                       "admitted; cancelled from requested, accepted or en_route. Declining "
                       "and cancelling need a note (the reason).",
        "x-token-roles": _READERS,
        "parameters": [{"name": "referral_id", "in": "path", "required": True, "schema": _ID,
                        "description": "Referral id"}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["status", "version"], "additionalProperties": False,
            "properties": {"status": _STATUS, "version": _ID,
                           "note": {"type": ["string", "null"], "maxLength": MAX_NOTE}}}}}},
        "responses": {"200": _json({"type": "object", "properties": {
            "referral": _ref("Referral")}}), **_errors(400, 401, 403, 404),
            "409": _CONFLICT, "422": _UNPROCESSABLE},
    }},
}
