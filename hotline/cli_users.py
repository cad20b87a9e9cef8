"""`hotline user ...`: the console's accounts (create, list, set a password, a role, disable).

A new password, a new role and a disable each end every console session of
the account at once (db.users.UserStore); API tokens are separate credentials
(`hotline token revoke`)."""
from __future__ import annotations

import argparse
import getpass
import sys

from routing.callers import safe_text


def _store(config):
    from db.session import make_engine
    from db.users import UserStore

    engine = make_engine(config.db_url)
    return engine, UserStore(engine)


def _password(args) -> str:
    # Never on the command line (it would sit in shell history and `ps`).
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass("password (10+ characters): ")
    if getpass.getpass("again: ") != first:
        raise SystemExit("hotline user: the passwords differ")
    return first


def cmd_user(args, config) -> int:
    from db.users import UserError

    engine, users = _store(config)
    try:
        if args.action == "create":
            user = users.create(args.username, _password(args), args.role, surgeon_id=args.surgeon,
                                display_name=args.name or "", lang=args.lang)
            print(f"user {user.username} ({user.role.value}) created")
        elif args.action == "passwd":
            ended = users.set_password(args.username, _password(args))
            print(f"password of {args.username} changed; {ended} session(s) signed out")
        elif args.action == "role":
            ended = users.set_role(args.username, args.role, surgeon_id=args.surgeon)
            print(f"user {args.username} is now {args.role}; {ended} session(s) signed out")
        elif args.action in ("disable", "enable"):
            ended = users.set_disabled(args.username, args.action == "disable")
            print(f"user {args.username} {args.action}d"
                  + (f"; {ended} session(s) signed out" if args.action == "disable" else ""))
        else:
            for u in users.all():
                print(f"{safe_text(u.username, 32):20} {u.role.value:16} "
                      f"{u.surgeon_id if u.surgeon_id is not None else '-':>7}  "
                      f"{safe_text(u.display_name, 32):16} {'disabled' if u.disabled else ''}")
    except UserError as exc:
        print(f"hotline user: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("user", help="console accounts: create, list, passwd, role, disable, enable",
                       description="Console accounts. Roles: admin, supervisor, department_head "
                                   "(--surgeon: who approves swaps), surgeon (--surgeon: sees the "
                                   "cases they took part in). Passwords are asked for, or read "
                                   "from stdin with --password-stdin; never given as an argument. "
                                   "passwd, role and disable sign the account out of every "
                                   "console session at once.")
    p.add_argument("action", choices=("create", "list", "passwd", "role", "disable", "enable"))
    p.add_argument("username", nargs="?")
    p.add_argument("--role", choices=("admin", "supervisor", "department_head", "surgeon"))
    p.add_argument("--surgeon", type=int, help="the surgeon id this account is")
    p.add_argument("--name", help="display name")
    p.add_argument("--lang", choices=("zh", "en"), default="zh")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_user)


def check(args: argparse.Namespace) -> str | None:
    if getattr(args, "verb", None) != "user":
        return None
    if args.action != "list" and not args.username:
        return f"user {args.action} needs a USERNAME"
    if args.action in ("create", "role") and not args.role:
        return f"user {args.action} needs --role"
    return None
