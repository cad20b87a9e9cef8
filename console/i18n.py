"""The console's words in Chinese (default) and English: one table, one lookup.

`t("calls")` in Python and `{{ t("calls") }}` in templates give the word in the
signed-in user's language (or the one chosen with /lang/<zh|en> before
signing in). A key missing from a language falls back to the other, then to
the key itself, so a missing word shows, it never breaks a page.
"""
from __future__ import annotations

from flask import g, session

LANGS = ("zh", "en")
DEFAULT_LANG = "zh"

WORDS: dict[str, dict[str, str]] = {
    "hotline": {"zh": "96608 急诊创伤整形修复热线", "en": "96608 Trauma & Plastic Surgery Hotline"},
    "console": {"zh": "管理控制台", "en": "Console"},
    "calls": {"zh": "来电记录", "en": "Calls"},
    "case": {"zh": "病例记录", "en": "Case"},
    "live": {"zh": "实时", "en": "Live"},
    "rosters": {"zh": "排班表", "en": "Rosters"},
    "figures": {"zh": "统计", "en": "Figures"},
    "audit_log": {"zh": "审计日志", "en": "Audit log"},
    "sign_in": {"zh": "登录", "en": "Sign in"},
    "sign_out": {"zh": "退出", "en": "Sign out"},
    "username": {"zh": "用户名", "en": "Username"},
    "password": {"zh": "密码", "en": "Password"},
    "bad_sign_in": {"zh": "用户名或密码错误", "en": "Wrong username or password"},
    "too_many": {"zh": "尝试次数过多，请稍后再试", "en": "Too many attempts; try again later"},
    "denied": {"zh": "无权访问", "en": "Access denied"},
    "not_found": {"zh": "未找到", "en": "Not found"},
    "bad_request": {"zh": "请求无效", "en": "Bad request"},
    "csrf": {"zh": "表单已过期，请刷新后重试", "en": "The form expired; reload and try again"},
    "server_error": {"zh": "服务器内部错误", "en": "Internal error"},
    "database_unavailable": {"zh": "数据库暂不可用，请稍后重试",
                             "en": "The database is unavailable; try again shortly"},
    "signed_in_as": {"zh": "当前用户", "en": "Signed in as"},
    "role.admin": {"zh": "系统管理员", "en": "Admin"},
    "role.supervisor": {"zh": "质控", "en": "Supervisor"},
    "role.department_head": {"zh": "科主任", "en": "Department head"},
    "role.surgeon": {"zh": "医生", "en": "Surgeon"},
    "language": {"zh": "English", "en": "中文"},
}


def current_lang() -> str:
    lang = getattr(g, "lang", None) or session.get("lang") or DEFAULT_LANG
    return lang if lang in LANGS else DEFAULT_LANG


def t(key: str) -> str:
    entry = WORDS.get(key)
    if entry is None:
        return key
    lang = current_lang()
    return entry.get(lang) or entry.get(DEFAULT_LANG) or key


def add_words(words: dict[str, dict[str, str]]) -> None:
    """A page module adds its own words at import; a key defined twice is a mistake."""
    clash = set(words) & set(WORDS)
    if clash:
        raise ValueError(f"words defined twice: {', '.join(sorted(clash))}")
    WORDS.update(words)
