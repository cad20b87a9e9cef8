"""The web console and its JSON API (Flask).

`create_app(config)` is the composition root of the web side: it builds the
roster desk and the token store from one engine, registers the blueprints
and makes every error a JSON body ({"error", "message", "message_zh"}) --
never an HTML page, never a stack trace.

    create_app(load_config())                      # engine from config.db_url
    create_app(engine=engine, clock=lambda: t0)    # tests

Serving: any WSGI server (e.g. `werkzeug.serving.make_server`). Note that
the .ics feeds accept `?token=` in the URL (phone calendars send no headers),
so an access log in front of the app must not keep query strings.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError
from werkzeug.exceptions import HTTPException

from hotline.config import HotlineConfig
from hotline.notify import escape

if TYPE_CHECKING:
    from db.tokens import TokenStore
    from db.users import AuditLog, UserStore
    from hotline.rosterdesk import RosterDesk
    from vault import Vault

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 2 * 1024 * 1024  # a month's roster is a few kB; 2 MB is plenty


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class ApiError(Exception):
    """An answer other than 2xx, as JSON: status, a stable code, English and Chinese text.

    Messages are written by us; anything from the request in them is cut and
    escaped first (`routing.callers.safe_text`).
    """

    def __init__(self, status: int, code: str, message: str, message_zh: str,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.message_zh = message_zh
        self.headers = headers or {}
        self.extra = extra

    def response(self):
        body = {"error": self.code, "message": self.message, "message_zh": self.message_zh,
                **self.extra}
        response = jsonify(body)
        response.status_code = self.status
        response.headers.update(self.headers)
        return response


@dataclass(frozen=True)
class Services:
    """What the views use, built once per app from one engine."""

    desk: "RosterDesk"
    tokens: "TokenStore"
    clock: Callable[[], datetime]
    users: "UserStore"
    audit: "AuditLog"
    engine: Engine
    config: HotlineConfig | None
    # Opens sealed recordings and notes, seals new notes (vault/); None: plain
    # (a test app without DATA_KEYS), and sealed data shows as sealed.
    vault: "Vault | None" = None


def services() -> Services:
    return current_app.extensions["hotline"]


def create_app(config: HotlineConfig | None = None, *, engine: Engine | None = None,
               clock: Callable[[], datetime] | None = None,
               test_config: dict | None = None) -> Flask:
    """The app. `engine` wins over `config.db_url`; neither: `load_config()`'s database.

    `clock` (default: the system clock, UTC) is "now" for the desk, the token
    store and every default time; `test_config` is merged into `app.config`.
    """
    app = Flask(__name__)
    app.config.from_mapping(
        MAX_CONTENT_LENGTH=MAX_UPLOAD_BYTES,
        SESSION_COOKIE_NAME="hotline_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=not (config and config.console_insecure_cookies),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=8),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
    )
    if config is not None:
        app.config["SECRET_KEY"] = config.console_secret()
    if test_config:
        app.config.from_mapping(test_config)
    if not app.config.get("SECRET_KEY"):
        raise RuntimeError("the console needs a SECRET_KEY (from the instance's console.secret)")
    app.json.ensure_ascii = False  # type: ignore[attr-defined]  # 中文 as itself, UTF-8
    app.json.sort_keys = False  # type: ignore[attr-defined]  # fields in the order we write them

    app.extensions["hotline"] = _build_services(config, engine, clock or _utcnow,
                                                app.config.get("DATA_KEYS"))

    from console import auth, pages
    from console.api_roster import bp as roster_api

    csrf = CSRFProtect(app)
    csrf.exempt(roster_api)  # bearer tokens: a browser never sends one by itself
    auth.limiter.init_app(app)
    app.before_request(auth.load_user)
    app.register_blueprint(auth.bp)
    app.register_blueprint(roster_api)
    pages.register(app, csrf)
    _register_page_context(app)
    _register_error_handlers(app)
    app.after_request(_security_headers)
    return app


# Content-Security-Policy: everything from this site only -- no inline script,
# no frames of us anywhere (the console shows patients' data).
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
       "script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "form-action 'self'")


def _security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if not request.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def _register_page_context(app: Flask) -> None:
    from console.auth import current_user
    from console.i18n import current_lang, t
    from console.pages import nav_for

    @app.context_processor
    def page_context() -> dict[str, Any]:
        user = current_user()
        return {"t": t, "lang": current_lang(), "user": user,
                "nav": nav_for(user, app) if user else [], "listed_number": listed_number}


def listed_number(text: str | None) -> str:
    """A caller's number as a list shows it to the signed-in user: whole for the
    duty desk (admin, supervisor), masked for everyone else."""
    from console.auth import current_user
    from routing.callers import mask_number

    user = current_user()
    if user is not None and user.role.sees_full_numbers:
        return text or ""
    return mask_number(text)


def wants_json() -> bool:
    return request.path.startswith("/api/")


def _build_services(config: HotlineConfig | None, engine: Engine | None,
                    clock: Callable[[], datetime], data_keys=None) -> Services:
    from db.roster_store import RosterStore
    from db.tokens import TokenStore
    from db.users import AuditLog, UserStore
    from hotline.rosterdesk import RosterDesk
    from vault import Vault

    if engine is None:
        from db.session import make_engine
        from hotline.config import load_config

        engine = make_engine((config or load_config()).db_url)
    # No on_change hook: the service notices roster writes by itself (its
    # roster cache polls the newest audit entry) and refreshes the chain mirror.
    desk = RosterDesk(RosterStore(engine, clock=clock), clock=clock)
    from vault import Vault

    vault = config.vault() if config is not None else (Vault(data_keys) if data_keys else None)
    return Services(desk=desk, tokens=TokenStore(engine, clock=clock), clock=clock,
                    users=UserStore(engine, clock=clock), audit=AuditLog(engine, clock=clock),
                    engine=engine, config=config, vault=vault)


_HTTP_ZH = {
    400: "请求无效",
    401: "需要有效的访问令牌",
    403: "无权访问",
    404: "未找到",
    405: "不支持该请求方法",
    409: "与当前状态冲突",
    413: "上传内容过大",
    415: "不支持的内容类型",
    422: "内容无法处理",
    429: "请求过于频繁",
}


def _register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return exc.response()

    @app.errorhandler(CSRFError)
    def csrf_refused(exc: CSRFError):
        from console.auth import audit
        audit("csrf_refused", "path", request.path, reason=exc.description[:100])
        if wants_json():
            return ApiError(400, "csrf", "CSRF token missing or invalid", "表单已过期，请刷新后重试").response()
        return _page_error(400, "csrf")

    @app.errorhandler(429)
    def throttled(exc: HTTPException):
        from console.auth import too_many_sign_ins
        if request.endpoint == "auth.sign_in":
            return too_many_sign_ins(exc)
        return http_error(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        if not wants_json():
            word = {401: "denied", 403: "denied", 404: "not_found"}.get(exc.code or 0, "bad_request")
            return _page_error(exc.code or 500, word)
        response = exc.get_response()  # keeps headers such as Allow
        code = (exc.name or "error").lower().replace(" ", "_")
        if exc.code == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH") or 0
            message = f"the request body is larger than {limit} bytes"
        else:
            message = exc.name or "error"
        response.set_data(app.json.dumps({  # type: ignore[attr-defined]
            "error": code, "message": message,
            "message_zh": _HTTP_ZH.get(exc.code or 0, "请求失败")}))
        response.content_type = "application/json"
        return response

    @app.errorhandler(OperationalError)
    def database_unavailable(exc: OperationalError):
        # Down, unreachable or locked: worth a retry, unlike a 500.
        logger.warning("database unavailable on %s %s: %s", request.method,
                       escape(request.path[:200]), type(exc.orig).__name__)
        if not wants_json():  # a person at a browser gets a page, not a JSON body
            page, status = _page_error(503, "database_unavailable")
            return page, status, {"Retry-After": "5"}
        return ApiError(503, "database_unavailable", "the database is unavailable; try again shortly",
                        "数据库暂不可用，请稍后重试", headers={"Retry-After": "5"}).response()

    @app.errorhandler(DataError)
    def refused_by_the_database(exc: DataError):
        # A value the database cannot hold (PostgreSQL: a NUL in text, a number out
        # of range) came from the request, and its transaction rolled back: a 400,
        # not a 500. Only the error's type is logged -- its text holds the value.
        logger.warning("the database refused a value on %s %s: %s", request.method,
                       escape(request.path[:200]), type(exc.orig).__name__)
        if not wants_json():
            return _page_error(400, "bad_request")
        return ApiError(400, "invalid_request", "a value in the request cannot be stored",
                        "请求中的某个值无法保存").response()

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        logger.exception("unhandled error on %s %s", request.method, escape(request.path[:200]))
        if not wants_json():
            return _page_error(500, "server_error")
        return ApiError(500, "internal_error", "internal error; the details are in the server log",
                        "服务器内部错误，详情见服务器日志").response()


def _page_error(status: int, word: str):
    from console.i18n import t
    return render_template("error.html", status=status, message=t(word)), status
