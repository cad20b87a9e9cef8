"""Signing in to the console, roles, and the audit of sign-ins and denied access.

Sessions are Flask's signed cookies (key: `HotlineConfig.console_secret()`),
Secure + HttpOnly + SameSite=Lax, 8 hours; `console_insecure_cookies` drops
Secure for plain-HTTP development on loopback. The cookie holds the user id,
a session id and a language; on every request the session id must name a
live row in `console_sessions` (signing out revokes it, so a copied cookie
dies too) and the user must be enabled. CSRF: Flask-WTF's CSRFProtect on every form (the bearer-token
API is exempt: a browser never sends that header by itself). Sign-in is
rate-limited per address and per username (Flask-Limiter, in memory: one
console process; several behind a balancer would need a shared store).
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from flask import (Blueprint, abort, current_app, g, redirect, render_template, request, session,
                   url_for)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from console.i18n import LANGS, t
from db.users import User, UserRole

F = TypeVar("F", bound=Callable[..., Any])

bp = Blueprint("auth", __name__)
limiter = Limiter(key_func=get_remote_address, storage_uri="memory://", default_limits=[],
                  headers_enabled=False)
SIGN_IN_LIMIT = "10 per minute"
SIGN_IN_LIMIT_PER_USER = "5 per 5 minutes"
ALL_ROLES = tuple(UserRole)
STAFF = (UserRole.ADMIN, UserRole.SUPERVISOR, UserRole.DEPARTMENT_HEAD)


def _hub():
    from console import services
    return services()


def current_user() -> User | None:
    return getattr(g, "user", None)


def client_ip() -> str:
    # The console listens on loopback behind a proxy; the proxy's address is
    # what Flask sees unless ProxyFix is configured (see docs/console.md).
    return (request.remote_addr or "")[:64]


def audit_text(text: str, limit: int = 64) -> str:
    """`text` (a user name, a path: the caller's) cut to `limit` for the audit log, a NUL
    shown as U+FFFD: PostgreSQL text cannot hold a NUL, and the failed audit write
    would fail (500) the very request it records -- a sign-in left unaudited."""
    return text[:limit].replace("\x00", "\ufffd")


def audit(action: str, subject: str = "", subject_id: str = "", **detail: Any) -> None:
    user = current_user()
    detail = {key: audit_text(value, 200) if isinstance(value, str) else value
              for key, value in detail.items()}
    _hub().audit.record(user.actor if user else "anonymous", action, subject,
                        audit_text(subject_id), ip=client_ip(), detail=detail or None)


def load_user() -> None:
    """before_request: the signed-in user (or None) into `g.user`, the language into `g.lang`."""
    g.user = None
    uid, sid = session.get("uid"), session.get("sid")
    if isinstance(uid, int) and request.endpoint != "static":  # style sheets need no user
        users = _hub().users
        # The cookie is signed, but a copy of it must still die at sign-out:
        # the session row is what says it is alive.
        live = users.session_user(sid, current_app.permanent_session_lifetime) == uid
        user = users.get(uid) if live else None
        if user is not None and not user.disabled:
            g.user = user
        else:
            lang = session.get("lang")
            session.clear()
            if lang:
                session["lang"] = lang
    g.lang = session.get("lang") or (g.user.lang if g.user else None) or "zh"


def signed_in(*roles: UserRole) -> Callable[[F], F]:
    """The view needs a signed-in user of one of `roles` (default: any role).

    Not signed in: to the sign-in page. Signed in with another role: 403, audited.
    """
    allowed = frozenset(roles or ALL_ROLES)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return redirect(url_for("auth.sign_in", next=request.full_path[:512]))
            if user.role not in allowed:
                deny(f"role {user.role.value}")
            return view(*args, **kwargs)
        return wrapped  # type: ignore[return-value]
    return decorate


def deny(reason: str = "") -> None:
    """Refuse with 403 and write who tried what to the audit log."""
    audit("denied", "path", request.path[:64], method=request.method, reason=reason[:200])
    abort(403)


def safe_next(target: str | None, default: str | None = None) -> str:
    r"""`target` if it is a path on this site, else `default` (the calls list, or "/").

    Every redirect to a user-supplied target goes through here. Browsers
    strip tabs and newlines from a Location and read a backslash as a slash,
    so `/\t/evil.example/` or `/\\evil.example` lead off-site although they
    begin with one '/': a target is refused if, raw or percent-decoded (up to
    three times), it holds a control character or a backslash (or a space
    in its path), does not begin with exactly one '/', or has a scheme or a host.
    """
    fallback = default or (url_for("calls.index") if "calls.index" in current_app.view_functions
                           else "/")
    if not isinstance(target, str) or not target or len(target) > 1024:
        return fallback
    seen = target
    for _ in range(4):  # the raw text, then each decoding of it
        if not _local_path(seen):
            return fallback
        decoded = unquote(seen)
        if decoded == seen:
            return target
        seen = decoded
    return fallback  # still encoded after three decodings: nobody's real path


def _local_path(text: str) -> bool:
    # isprintable() is False for tabs, CR/LF, NUL, DEL and the Unicode line separators.
    if any(char == "\\" or not char.isprintable() for char in text):
        return False
    if " " in text.partition("?")[0]:
        return False
    if not text.startswith("/") or text.startswith("//"):
        return False
    parts = urlsplit(text)
    return not (parts.scheme or parts.netloc)


def _username_key() -> str:
    return "user:" + (request.form.get("username", "")[:64].lower())


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(SIGN_IN_LIMIT, methods=["POST"])
@limiter.limit(SIGN_IN_LIMIT_PER_USER, key_func=_username_key, methods=["POST"])
def sign_in():
    error = None
    if request.method == "POST":
        username = request.form.get("username", "")[:64]
        user = _hub().users.authenticate(username, request.form.get("password", "")[:300])
        if user is None:
            _hub().audit.record("anonymous", "sign_in_failed", "user", audit_text(username),
                                ip=client_ip())
            error = t("bad_sign_in")
        else:
            lang = session.get("lang")
            session.clear()  # a new session on sign-in: nothing carried over but the language
            session.permanent = True
            session["uid"] = user.id
            session["sid"] = _hub().users.start_session(user.id, client_ip())
            session["lang"] = lang or user.lang
            g.user = user
            audit("sign_in", "user", user.username)
            return redirect(safe_next(request.args.get("next")))
    return render_template("login.html", error=error), (401 if error else 200)


@bp.post("/logout")
def sign_out():
    if current_user() is not None:
        audit("sign_out", "user", current_user().username)
    _hub().users.end_session(session.get("sid"))
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
    return redirect(url_for("auth.sign_in"))


@bp.get("/lang/<code>")
def set_lang(code: str):
    if code not in LANGS:
        abort(404)
    session["lang"] = code
    return redirect(safe_next(request.args.get("next")))


def too_many_sign_ins(_exc: Exception):
    _hub().audit.record("anonymous", "sign_in_throttled", "user",
                        audit_text(request.form.get("username", "")), ip=client_ip())
    return render_template("login.html", error=t("too_many")), 429
