"""The JSON API for major-incident mode: `GET /api/v1/incidents`, `POST /api/v1/incidents`.

GET (admin, supervisor and department_head tokens): the incidents in force,
the teams they put in incident mode, and recent history. POST (admin and
supervisor tokens) switches: `{"action": "on", "team": "facial", "note": ".."}`
or `{"action": "off", "team": null}` (`team` null or absent: every team).
A refused switch is 409 `refused` with the reason (already on, not on, a team
covered by the all-teams incident); an unknown team is 400. Each switch is
audited (actor api:<token>) and alerts the department heads and the duty desk.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, jsonify, request

from console import ApiError, services
from console.api_roster import iso
from console.auth import client_ip
from console.tokens import ADMINS, current_token, require
from db.incidents import IncidentStore
from db.tokens import TokenRole
from network.incidents import NOTE_MAX, Incident, IncidentError, check_team, teams_in_incident
from routing.callers import safe_text

bp = Blueprint("api_incidents", __name__, url_prefix="/api/v1")
NAV: list = []
VIEWERS = ADMINS + (TokenRole.DEPARTMENT_HEAD,)


def register(app: Flask, csrf) -> None:
    csrf.exempt(bp)  # bearer tokens: a browser never sends one by itself
    app.register_blueprint(bp)


def _store() -> IncidentStore:
    hub = services()
    return IncidentStore(hub.engine, clock=hub.clock)


def incident_json(incident: Incident) -> dict[str, Any]:
    return {"id": incident.id, "team": incident.team, "scope": incident.scope,
            "started_at": iso(incident.started_at), "started_by": incident.started_by,
            "ended_at": iso(incident.ended_at), "ended_by": incident.ended_by,
            "note": incident.note}


def _state(store: IncidentStore) -> dict[str, Any]:
    active = store.active()
    teams = teams_in_incident(active, store.teams(), services().clock())
    return {"active": [incident_json(i) for i in active], "teams_in_incident": sorted(teams)}


@bp.get("/incidents")
@require(*VIEWERS)
def incidents():
    store = _store()
    return jsonify({**_state(store), "history": [incident_json(i) for i in store.history(50)]})


@bp.post("/incidents")
@require(*ADMINS)
def switch():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or body.get("action") not in ("on", "off"):
        raise ApiError(400, "invalid_request", "a JSON body with 'action': 'on' or 'off' is required",
                       "需要 JSON 内容，action 为 on 或 off")
    team, note = body.get("team"), body.get("note", "")
    if team is not None and not isinstance(team, str) or not isinstance(note, str):
        raise ApiError(400, "invalid_request", "'team' is a team code or null; 'note' is text",
                       "team 为专业组代码或 null；note 为文本")
    if len(note) > NOTE_MAX:
        raise ApiError(400, "invalid_request", f"'note' is at most {NOTE_MAX} characters",
                       f"note 最多 {NOTE_MAX} 个字符")
    store = _store()
    try:
        check_team(team)
        if team is not None and team not in store.teams():
            raise IncidentError(f"unknown team {team}")
    except IncidentError:
        raise ApiError(400, "unknown_team", f"unknown team {safe_text(str(team), 40)}",
                       "专业组不存在") from None
    actor = current_token().actor
    try:
        if body["action"] == "on":
            incident = store.switch_on(team, actor, note, ip=client_ip())
        else:
            incident = store.switch_off(team, actor, ip=client_ip())
    except IncidentError as exc:
        raise ApiError(409, "refused", str(exc)[:200], "操作被拒绝（当前状态不允许）") from None
    response = jsonify({"incident": incident_json(incident), **_state(store)})
    response.status_code = 201 if body["action"] == "on" else 200
    return response


# --------------------------------------------------------------------------- OpenAPI

def _answer(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_INCIDENT = {"$ref": "#/components/schemas/Incident"}
_STATE = {"active": {"type": "array", "items": _INCIDENT},
          "teams_in_incident": {"type": "array", "items": {"type": "string"}}}
_REFS = {"401": {"$ref": "#/components/responses/Unauthorized"},
         "403": {"$ref": "#/components/responses/Forbidden"}}

OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "Incident": {"type": "object", "properties": {
        "id": {"type": "integer"},
        "team": {"type": ["string", "null"], "description": "null: every team"},
        "scope": {"type": "string", "description": "the team, or 'all'"},
        "started_at": {"type": "string", "format": "date-time"},
        "started_by": {"type": "string"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "ended_by": {"type": ["string", "null"]}, "note": {"type": "string"}}},
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/incidents": {
        "get": {
            "tags": ["incidents"], "operationId": "listIncidents",
            "summary": "Major incidents in force, the teams in incident mode, and history",
            "x-token-roles": ["admin", "supervisor", "department_head"],
            "responses": {"200": _answer({"type": "object", "properties": {
                **_STATE, "history": {"type": "array", "items": _INCIDENT}}}), **_REFS},
        },
        "post": {
            "tags": ["incidents"], "operationId": "switchIncident",
            "summary": "Switch major-incident mode on or off for a team or all teams",
            "description": "Audited; alerts the department heads and the duty desk. 409 "
                           "`refused`: already on, not on, or the team is covered by the "
                           "all-teams incident.",
            "x-token-roles": ["admin", "supervisor"],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["action"], "properties": {
                    "action": {"type": "string", "enum": ["on", "off"]},
                    "team": {"type": ["string", "null"], "description": "null or absent: all"},
                    "note": {"type": "string", "maxLength": NOTE_MAX}}}}}},
            "responses": {
                "201": _answer({"type": "object", "properties": {"incident": _INCIDENT, **_STATE}},
                               "Switched on"),
                "200": _answer({"type": "object", "properties": {"incident": _INCIDENT, **_STATE}},
                               "Switched off"),
                "400": {"$ref": "#/components/responses/BadRequest"},
                "409": _answer({"$ref": "#/components/schemas/Error"}, "Refused"), **_REFS},
        },
    },
}
