"""`hotline incident on|off|status`: major-incident mode (重大突发事件模式) from the command line.

Each switch is audited (actor cli:<login>) and alerts the department heads and
the duty desk through the notice outbox, in the same transaction as the switch
(db/incidents.py). The running service picks a switch up within about a second.
"""
from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ

if TYPE_CHECKING:
    from db.incidents import IncidentStore
    from hotline.config import HotlineConfig


@contextmanager
def _store(config: "HotlineConfig") -> Iterator["IncidentStore"]:
    from db.incidents import IncidentStore
    from db.session import make_engine

    engine = make_engine(config.db_url)
    try:
        yield IncidentStore(engine)
    finally:
        engine.dispose()


def _local(at: datetime | None) -> str:
    return at.astimezone(ZoneInfo(HOTLINE_TZ)).strftime("%Y-%m-%d %H:%M") if at else "-"


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no login name (a container): still audited, as the CLI
        return "cli:unknown"


def _scope(args) -> str | None:
    return None if args.all else args.team


def cmd_incident_on(args, config: "HotlineConfig") -> int:
    from network.incidents import IncidentError

    try:
        with _store(config) as store:
            incident = store.switch_on(_scope(args), _actor(), args.note)
    except IncidentError as exc:
        print(f"hotline incident: refused: {exc}", file=sys.stderr)
        return 1
    print(f"major-incident mode ON for {incident.scope} since {_local(incident.started_at)} "
          f"(incident {incident.id}) / 重大突发事件模式已启动")
    return 0


def cmd_incident_off(args, config: "HotlineConfig") -> int:
    from network.incidents import IncidentError

    try:
        with _store(config) as store:
            incident = store.switch_off(_scope(args), _actor())
    except IncidentError as exc:
        print(f"hotline incident: refused: {exc}", file=sys.stderr)
        return 1
    print(f"major-incident mode OFF for {incident.scope} at {_local(incident.ended_at)} "
          f"(incident {incident.id}) / 重大突发事件模式已解除")
    return 0


def cmd_incident_status(args, config: "HotlineConfig") -> int:
    from routing.callers import safe_text

    with _store(config) as store:
        active = store.active()
        history = store.history(args.limit) if args.history else []
    if not active:
        print("major-incident mode is off for every team / 当前无重大突发事件")
    for i in active:
        print(f"ON  {i.scope:12} since {_local(i.started_at)} by {safe_text(i.started_by, 40)}"
              f"  {safe_text(i.note, 80)}")
    for i in history:
        print(f"#{i.id:<5} {i.scope:12} {_local(i.started_at)} .. {_local(i.ended_at):16} "
              f"on by {safe_text(i.started_by, 30)}, off by {safe_text(i.ended_by or '-', 30)}"
              f"  {safe_text(i.note, 60)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `incident on|off|status` to the `hotline` parser's verbs."""
    incident = sub.add_parser(
        "incident", help="switch major-incident mode on or off, or show it",
        description="Major-incident mode (重大突发事件): calls for a team ring every on-call "
                    "surgeon at once and callers wait in a queue (partner hospitals first), "
                    "with an announcement. Every switch is audited and alerts the department "
                    "heads and the duty desk. See docs/major-incidents.md.")
    verbs = incident.add_subparsers(dest="incident_verb", required=True, metavar="ACTION")
    for name, func, text in (("on", cmd_incident_on, "switch major-incident mode on"),
                             ("off", cmd_incident_off, "switch major-incident mode off")):
        p = verbs.add_parser(name, help=text + " for one team or for all")
        scope = p.add_mutually_exclusive_group(required=True)
        scope.add_argument("--team", help="the team code, e.g. facial")
        scope.add_argument("--all", action="store_true", help="every team at once")
        if name == "on":
            p.add_argument("--note", default="", help="what happened (shown to the department "
                                                      "heads and in the audit log)")
        p.set_defaults(func=func)
    p = verbs.add_parser("status", help="the incidents in force (and, with --history, past ones)")
    p.add_argument("--history", action="store_true", help="also list past incidents, newest first")
    p.add_argument("--limit", type=int, default=20, help="how many past incidents (default 20)")
    p.set_defaults(func=cmd_incident_status)
