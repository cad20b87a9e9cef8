"""`hotline callback ...`: callback tasks from the command line (list, place, assign, close).

`place` only records the request, as the console does: the running service
(`hotline serve`) takes it within a second or two and rings the surgeon --
the CLI never originates. Every change is audited with the actor `cli:<user>`.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ
from routing.callers import safe_text


def _actor() -> str:
    try:
        return f"cli:{safe_text(getpass.getuser(), 32)}"
    except (OSError, KeyError):
        return "cli:unknown"


def cmd_callback(args, config) -> int:
    from db.callbacks import CallbackStore, UnknownCallback
    from db.session import make_engine
    from network.callbacks import CallbackError

    engine = make_engine(config.db_url)
    store = CallbackStore(engine)
    try:
        if args.action == "list":
            now = datetime.now(timezone.utc)
            rows = store.list(args.view, surgeon_id=args.surgeon, now=now)
            if not rows:
                print("no callback tasks")
            for row in rows:
                task = row.task
                flag = "OVERDUE" if task.overdue(now) else ""
                number = task.number or "unknown-number"
                print(f"{task.id:>6}  {task.due_at.astimezone(ZoneInfo(HOTLINE_TZ)).strftime('%Y-%m-%d %H:%M')}  "
                      f"{task.reason.value:9}  {task.status.value:9}  {number:14}  "
                      f"{task.team or '-':9}  owner {task.owner_surgeon_id or '-':>4}  "
                      f"tries {task.attempts}  {flag}  {safe_text(task.note or '', 60)}")
            return 0
        if args.id is None:
            print(f"hotline callback {args.action}: give the task's ID", file=sys.stderr)
            return 2
        if args.action == "place":
            task = store.request_placement(args.id, _actor(), surgeon_id=args.surgeon)
            print(f"callback {task.id}: placing (the service rings surgeon "
                  f"{task.owner_surgeon_id} first)")
        elif args.action == "assign":
            task = store.assign(args.id, args.surgeon, _actor())
            print(f"callback {task.id}: owner {task.owner_surgeon_id or 'nobody'}")
        else:
            if not args.note:
                print("hotline callback close: --note is required", file=sys.stderr)
                return 2
            task = store.close(args.id, _actor(), args.note, cancelled=args.cancelled)
            print(f"callback {task.id}: {task.status.value}")
    except UnknownCallback:
        print(f"hotline callback: no task {args.id}", file=sys.stderr)
        return 1
    except CallbackError as exc:
        print(f"hotline callback: refused: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from db.callbacks import VIEWS

    p = sub.add_parser("callback", help="callback tasks: list, place, assign, close",
                       description="Callback tasks (回拨任务; docs/callbacks.md). `place` records "
                                   "the request; the running service rings the surgeon (--surgeon, "
                                   "else the owner) and, after they press 1, the caller.")
    p.add_argument("action", choices=("list", "place", "assign", "close"))
    p.add_argument("id", nargs="?", type=int, help="the task id (from `list`)")
    p.add_argument("--view", choices=VIEWS, default="active", help="list: which tasks")
    p.add_argument("--surgeon", type=int,
                   help="place: ring this surgeon first; assign: the new owner (omit: nobody); "
                        "list --view mine: whose")
    p.add_argument("--note", help="close: what was done")
    p.add_argument("--cancelled", action="store_true", help="close: not needed (cancelled)")
    p.set_defaults(func=cmd_callback)
