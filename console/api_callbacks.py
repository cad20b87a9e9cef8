"""The JSON API for callback tasks: `GET /api/v1/callbacks`, `POST .../<id>/place`,
`POST .../<id>/close`.

Bearer tokens as for the rest of the API (`console.tokens`): admin, supervisor,
department_head and surgeon tokens; calendar tokens are refused (403). A
bound token (surgeon, department head) that places a callback has its own
surgeon rung first and made the owner; an admin or supervisor token rings the
task's owner. `place` answers 202: the request is recorded (status
`placing`); the service places it within a second or two, and the task's
`status` and `note` tell how it went. Refusals are 409 with a stable code:
`number_unknown`, `already_placing`, `closed`, `no_surgeon`, `changed`.
A surgeon token sees and acts on the tasks its surgeon owns and those of the
teams whose roster names them (`console.callbacks.may_act`); another task is
403, audited.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, jsonify, request

from console import ApiError, services
from console.api_roster import iso
from console.auth import audit_text, client_ip
from console.callbacks import SURGEON_LIST_READ, may_act, rostered_teams, visible_rows
from console.tokens import READERS, current_token, require
from db.callbacks import VIEWS, CallbackListRow, CallbackStore, Changed, UnknownCallback
from db.tokens import TokenRole
from network.callbacks import (
    NOTE_MAX,
    AlreadyPlacing,
    CallbackError,
    CallbackReason,
    CallbackStatus,
    CallbackTask,
    NoSurgeon,
    NotDialable,
    NumberUnknown,
    TaskClosed,
)
from routing.callers import mask_number

bp = Blueprint("api_callbacks", __name__, url_prefix="/api/v1")
NAV: list = []


def register(app: Flask, csrf) -> None:
    csrf.exempt(bp)  # bearer tokens: a browser never sends one by itself
    app.register_blueprint(bp)


def _store() -> CallbackStore:
    hub = services()
    return CallbackStore(hub.engine, clock=hub.clock)


def task_json(task: CallbackTask, now, row: CallbackListRow | None = None,
              full_numbers: bool = True) -> dict[str, Any]:
    """One callback task; `full_numbers` False (a list for a masked role) masks the numbers."""
    shown = (lambda text: text) if full_numbers else mask_number
    body: dict[str, Any] = {
        "id": task.id, "case_id": task.case_id, "reason": task.reason.value,
        "due_at": iso(task.due_at), "overdue": task.overdue(now), "status": task.status.value,
        "number": shown(task.number) or None, "team": task.team, "owner_surgeon_id": task.owner_surgeon_id,
        "attempts": task.attempts, "placed_at": iso(task.placed_at), "placed_by": task.placed_by,
        "callback_case_id": task.callback_case_id, "closed_at": iso(task.closed_at),
        "closed_by": task.closed_by, "note": task.note, "created_at": iso(task.created_at),
    }
    if row is not None:
        body["caller_raw_safe"] = shown(row.caller_raw_safe)
        body["owner_name"] = row.owner_name
        body["case_started_at"] = iso(row.case_started_at)
    return body


_REFUSALS = (
    (NumberUnknown, "number_unknown", "the caller's number is unknown", "来电号码未知，无法回拨"),
    (NotDialable, "not_dialable", "not a domestic mobile or landline: call it by hand",
     "该号码不是国内手机或固话，请人工回拨"),
    (AlreadyPlacing, "already_placing", "the callback is already being placed", "该任务正在回拨中"),
    (TaskClosed, "closed", "the task is closed", "该任务已关闭"),
    (NoSurgeon, "no_surgeon", "the task has no owner to ring first; assign one",
     "任务没有负责医生，请先指派"),
    (Changed, "changed", "the task changed meanwhile; read it again", "任务已被他人修改，请重新读取"),
)


def _refused(exc: CallbackError) -> ApiError:
    for kind, code, message, message_zh in _REFUSALS:
        if isinstance(exc, kind):
            return ApiError(409, code, message, message_zh)
    return ApiError(400, "invalid_request", str(exc)[:200], "请求无效")


def _restricted() -> bool:
    """Whether the token sees only its surgeon's and their teams' tasks (a surgeon token)."""
    return current_token().role is TokenRole.SURGEON


def _task_id(task_id: str) -> int:
    """The task's id if the token may act on it: else 404 (unknown) or 403 (audited)."""
    # ASCII only: str.isdigit() also takes "²" (int() then raises) and "１" (read as 1).
    if not (task_id.isascii() and task_id.isdigit()) or len(task_id) > 10:
        raise ApiError(404, "not_found", "no such callback", "回拨任务不存在")
    task = _store().get(int(task_id))
    if task is None:
        raise ApiError(404, "not_found", "no such callback", "回拨任务不存在")
    token = current_token()
    hub = services()
    if _restricted() and not may_act(False, token.surgeon_id, task,
                                     rostered_teams(hub.engine, token.surgeon_id, hub.clock())):
        hub.audit.record(token.actor, "denied", "path", audit_text(request.path), ip=client_ip(),
                         detail={"method": request.method,
                                 "reason": f"callback {task.id} of another team"})
        raise ApiError(403, "forbidden", "a surgeon token acts only on its surgeon's and their "
                       "teams' callbacks", "医生令牌只能处理本人或本组的回拨任务")
    return task.id


@bp.get("/callbacks")
@require(*READERS)
def list_callbacks():
    view = request.args.get("view", "active")
    if view not in VIEWS:
        raise ApiError(400, "invalid_request", f"view is one of {', '.join(VIEWS)}",
                       f"view 只能是 {', '.join(VIEWS)}")
    token = current_token()
    now = services().clock()
    if _restricted():
        rows = _store().list(view, surgeon_id=token.surgeon_id, now=now, limit=SURGEON_LIST_READ)
        rows = visible_rows(rows, False, token.surgeon_id,
                            rostered_teams(services().engine, token.surgeon_id, now))[:200]
    else:
        rows = _store().list(view, surgeon_id=token.surgeon_id, now=now)
    full = current_token().role.sees_full_numbers
    return jsonify({"callbacks": [task_json(r.task, now, r, full) for r in rows], "view": view})


@bp.post("/callbacks/<task_id>/place")
@require(*READERS)
def place(task_id: str):
    token = current_token()
    surgeon = token.surgeon_id if token.role.bound else None
    try:
        task = _store().request_placement(_task_id(task_id), token.actor, surgeon_id=surgeon)
    except UnknownCallback:
        raise ApiError(404, "not_found", "no such callback", "回拨任务不存在") from None
    except CallbackError as exc:
        raise _refused(exc) from None
    response = jsonify({"callback": task_json(task, services().clock())})
    response.status_code = 202
    return response


@bp.post("/callbacks/<task_id>/close")
@require(*READERS)
def close(task_id: str):
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("note"), str):
        raise ApiError(400, "invalid_request", "a JSON body with 'note' (text) is required",
                       "需要 JSON 内容，包含 note（处理说明）")
    if "\x00" in body["note"]:  # PostgreSQL text cannot hold a NUL: a 400, not a 500
        raise ApiError(400, "invalid_request", "'note' holds a NUL character", "处理说明中含有空字符")
    cancelled = body.get("cancelled", False)
    if not isinstance(cancelled, bool):
        raise ApiError(400, "invalid_request", "'cancelled' is true or false",
                       "cancelled 只能是 true 或 false")
    token = current_token()
    try:
        task = _store().close(_task_id(task_id), token.actor, body["note"], cancelled=cancelled)
    except UnknownCallback:
        raise ApiError(404, "not_found", "no such callback", "回拨任务不存在") from None
    except CallbackError as exc:
        raise _refused(exc) from None
    return jsonify({"callback": task_json(task, services().clock())})


# --------------------------------------------------------------------------- OpenAPI

_ERR = {"$ref": "#/components/schemas/Error"}
_ROLES = {"x-token-roles": ["admin", "supervisor", "department_head", "surgeon"]}
_ID_PARAM = {"name": "task_id", "in": "path", "required": True, "description": "Callback task id",
             "schema": {"type": "integer", "minimum": 1}}


def _answer(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_REFS = {"401": {"$ref": "#/components/responses/Unauthorized"},
         "403": {"$ref": "#/components/responses/Forbidden"},
         "404": {"$ref": "#/components/responses/NotFound"}}
_CONFLICT = {"409": _answer(_ERR, "Refused in the task's state: number_unknown, "
                                  "already_placing, closed, no_surgeon or changed")}
_ONE = _answer({"type": "object", "properties": {
    "callback": {"$ref": "#/components/schemas/CallbackTask"}}})

OPENAPI_SCHEMAS: dict[str, dict[str, Any]] = {
    "CallbackTask": {"type": "object", "properties": {
        "id": {"type": "integer"}, "case_id": {"type": "string"},
        "reason": {"type": "string", "enum": [r.value for r in CallbackReason]},
        "due_at": {"type": "string", "format": "date-time"}, "overdue": {"type": "boolean"},
        "status": {"type": "string", "enum": [s.value for s in CallbackStatus]},
        "number": {"type": ["string", "null"], "description": "null: the number is unknown"},
        "team": {"type": ["string", "null"]}, "owner_surgeon_id": {"type": ["integer", "null"]},
        "attempts": {"type": "integer"},
        "placed_at": {"type": ["string", "null"], "format": "date-time"},
        "placed_by": {"type": ["string", "null"]},
        "callback_case_id": {"type": ["string", "null"]},
        "closed_at": {"type": ["string", "null"], "format": "date-time"},
        "closed_by": {"type": ["string", "null"]}, "note": {"type": ["string", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "caller_raw_safe": {"type": "string"}, "owner_name": {"type": ["string", "null"]},
        "case_started_at": {"type": "string", "format": "date-time"},
    }},
}

OPENAPI_PATHS: dict[str, dict[str, Any]] = {
    "/api/v1/callbacks": {"get": {
        "tags": ["callbacks"], "operationId": "listCallbacks", "summary": "Callback tasks",
        "description": "active (open, placing, placed, failed; oldest due first), overdue, "
                       "mine (owned by the token's surgeon), closed, or all.",
        **_ROLES,
        "parameters": [{"name": "view", "in": "query", "required": False,
                        "schema": {"type": "string", "enum": list(VIEWS), "default": "active"}}],
        "responses": {"200": _answer({"type": "object", "properties": {
            "callbacks": {"type": "array", "items": {"$ref": "#/components/schemas/CallbackTask"}},
            "view": {"type": "string"}}}),
            "400": {"$ref": "#/components/responses/BadRequest"}, **_REFS},
    }},
    "/api/v1/callbacks/{task_id}/place": {"post": {
        "tags": ["callbacks"], "operationId": "placeCallback",
        "summary": "Ask the service to place the callback (the surgeon's phone first)",
        "description": "202: recorded as placing; the service rings the surgeon (a bound "
                       "token's own, else the owner), who presses 1, then the caller.",
        **_ROLES, "parameters": [_ID_PARAM],
        "responses": {"202": _ONE, **_REFS, **_CONFLICT},
    }},
    "/api/v1/callbacks/{task_id}/close": {"post": {
        "tags": ["callbacks"], "operationId": "closeCallback",
        "summary": "Close the task with a note (done, or cancelled)",
        **_ROLES, "parameters": [_ID_PARAM],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["note"], "properties": {
                "note": {"type": "string", "maxLength": NOTE_MAX},
                "cancelled": {"type": "boolean", "default": False}}}}}},
        "responses": {"200": _ONE, "400": {"$ref": "#/components/responses/BadRequest"},
                      **_REFS, **_CONFLICT},
    }},
}
