"""The console's pages: each module registers its blueprint and says what the nav shows.

A page module has `register(app, csrf)` and `NAV = [(endpoint, word, roles)]`
(`roles` empty: every signed-in user). The order here is the nav's order.
"""
from __future__ import annotations

import importlib

from flask import Flask, redirect, url_for
from flask_wtf.csrf import CSRFProtect

from console.auth import current_user
from db.users import User

PAGE_MODULES = (
    "console.calls",  # the call list, exports
    "console.cases",  # case detail, notes, recordings
    "console.photos",  # wound photos: the caller's upload page (/u/<token>), a case's photos, upload links
    "console.live",  # calls in progress, who is on call now
    "console.rosters",  # calendars, chains, swaps
    "console.figures",  # the network's figures
    "console.hospitals",  # partner hospitals (合作医院) and the block list (黑名单)
    "console.referrals",  # referrals and transfers (转诊/转运)
    "console.callbacks",  # callback tasks (回拨任务)
    "console.incidents",  # major-incident mode (重大突发事件) and its banner on every page
    "console.audit_page",  # the audit log (admins)
    "console.api_console",  # JSON API for calls and cases; the OpenAPI document
    "console.api_figures",  # JSON API for the figures
    "console.api_callbacks",  # JSON API for callback tasks
    "console.api_referrals",  # JSON API for referrals
    "console.api_incidents",  # JSON API for major-incident mode
)


def register(app: Flask, csrf: CSRFProtect) -> None:
    nav: list[tuple[str, str, tuple]] = []
    for name in PAGE_MODULES:
        module = importlib.import_module(name)
        module.register(app, csrf)
        nav.extend(getattr(module, "NAV", ()))
    app.extensions["hotline_nav"] = nav

    @app.get("/")
    def home():
        if current_user() is None:
            return redirect(url_for("auth.sign_in"))
        return redirect(url_for("calls.index"))


def nav_for(user: User, app: Flask) -> list[tuple[str, str]]:
    return [(endpoint, word) for endpoint, word, roles in app.extensions.get("hotline_nav", ())
            if (not roles or user.role in roles) and endpoint in app.view_functions]
