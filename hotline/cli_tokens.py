"""`hotline token create|list|revoke`: bearer tokens of the JSON API.

The token is printed once, at creation; the database keeps only its SHA-256,
so a lost token cannot be shown again -- revoke it and create another.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ

if TYPE_CHECKING:
    from db.tokens import TokenStore
    from hotline.config import HotlineConfig

ROLE_HELP = ("admin, supervisor (every roster read and write), department_head (bound to "
             "--surgeon: read; approve/decline trades), surgeon (bound to --surgeon: read; "
             "offer/swap/take/decline, own leave), calendar (the .ics feeds only)")


@contextmanager
def _store(config: "HotlineConfig") -> Iterator["TokenStore"]:
    from db.session import make_engine
    from db.tokens import TokenStore

    engine = make_engine(config.db_url)
    try:
        yield TokenStore(engine)
    finally:
        engine.dispose()


def _local(at: datetime | None) -> str:
    return at.astimezone(ZoneInfo(HOTLINE_TZ)).strftime("%Y-%m-%d %H:%M") if at else "-"


def cmd_token_create(args, config: "HotlineConfig") -> int:
    from db.tokens import TokenError

    try:
        with _store(config) as store:
            record, token = store.create(args.name, args.role, args.surgeon)
    except TokenError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 2
    bound = f" as surgeon {record.surgeon_id}" if record.surgeon_id is not None else ""
    print(f"token {record.name} ({record.role.value}{bound}) created. Copy it now; it is not "
          "shown again / 令牌只显示这一次，请立即保存:", file=sys.stderr)
    print(token)
    return 0


def cmd_token_list(args, config: "HotlineConfig") -> int:
    from routing.callers import safe_text

    with _store(config) as store:
        tokens = store.list()
    print(f"{'name':24} {'role':16} {'surgeon':>7}  {'created':16}  {'last used':16}  revoked")
    for t in tokens:
        print(f"{safe_text(t.name, 24):24} {t.role.value:16} "
              f"{t.surgeon_id if t.surgeon_id is not None else '-':>7}  {_local(t.created_at):16}  "
              f"{_local(t.last_used_at):16}  {_local(t.revoked_at)}")
    if not tokens:
        print("(no tokens)")
    return 0


def cmd_token_revoke(args, config: "HotlineConfig") -> int:
    from db.tokens import TokenNotFound

    try:
        with _store(config) as store:
            token = store.revoke(args.name)
    except TokenNotFound as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return 1
    print(f"token {token.name} revoked {_local(token.revoked_at)} / 令牌已吊销")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `token create|list|revoke` to the `hotline` parser's verbs."""
    from db.tokens import TokenRole

    token = sub.add_parser(
        "token", help="create, list or revoke JSON API tokens",
        description="Bearer tokens for the roster JSON API (/api/v1/roster). A token is shown "
                    "once, when it is created; only its SHA-256 is stored.")
    verbs = token.add_subparsers(dest="token_verb", required=True, metavar="ACTION")
    p = verbs.add_parser("create", help="create a token and print it (once)")
    p.add_argument("--name", required=True, help="a unique name; the audit log shows api:NAME")
    p.add_argument("--role", required=True, choices=[r.value for r in TokenRole], help=ROLE_HELP)
    p.add_argument("--surgeon", type=int, help="the surgeon id a department_head or surgeon "
                                               "token acts as")
    p.set_defaults(func=cmd_token_create)
    p = verbs.add_parser("list", help="list tokens (never the tokens themselves)")
    p.set_defaults(func=cmd_token_list)
    p = verbs.add_parser("revoke", help="revoke a token by name, at once")
    p.add_argument("name")
    p.set_defaults(func=cmd_token_revoke)
