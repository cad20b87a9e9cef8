"""`hotline roster ...`: who is on call, the roster by day and week, checks, import,
export, swaps and covers, overrides, leave and rotations -- all through `RosterDesk`.

Times given on the command line are the hotline's local time (Asia/Shanghai)
unless they carry an offset; output shows each team's own zone.
"""
from __future__ import annotations

import argparse
import functools
import getpass
import sys
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ, Role
from routing.callers import safe_text

if TYPE_CHECKING:
    from hotline.config import HotlineConfig
    from hotline.rosterdesk import RosterDesk

UTC = timezone.utc
ROLE_ZH = {"primary": "一线", "backup": "二线", "attending": "主治", "department_head": "科主任"}
EXIT_FINDINGS = 3  # `roster check` found problems (for cron and monitoring)
EXIT_REFUSED = 1


def with_desk(verb: Callable[[argparse.Namespace, "RosterDesk"], int]):
    """Run a verb with a RosterDesk on the configured database; the engine is closed after."""
    @functools.wraps(verb)
    def run(args: argparse.Namespace, config: "HotlineConfig") -> int:
        from db.roster_store import RosterStore
        from db.session import make_engine
        from hotline.rosterdesk import RosterDesk

        engine = make_engine(config.db_url)
        try:
            return verb(args, RosterDesk(RosterStore(engine)))
        finally:
            engine.dispose()
    return run


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """`now`, or an ISO date-time; without an offset it is Asia/Shanghai local time."""
    value = text.strip()
    if value.lower() == "now":
        return now or datetime.now(UTC)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {safe_text(value, 40)!r} (e.g. 2026-03-01T08:00 or now)") from None
    if when.tzinfo is None or when.utcoffset() is None:
        when = when.replace(tzinfo=ZoneInfo(HOTLINE_TZ))
    return when.astimezone(UTC)


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {safe_text(text, 40)!r} (YYYY-MM-DD)") from None


def parse_month(text: str) -> date:
    try:
        return datetime.strptime(text.strip(), "%Y-%m").date()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a month: {safe_text(text, 40)!r} (YYYY-MM)") from None


def parse_hhmm(text: str) -> time:
    try:
        return datetime.strptime(text.strip(), "%H:%M").time()
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time of day: {safe_text(text, 40)!r} (HH:MM)") from None


def parse_role(text: str) -> Role:
    from oncall.roster_import import Directory

    role = Directory.role(text)
    if role is None:
        raise argparse.ArgumentTypeError(
            f"not a role: {safe_text(text, 40)!r} (primary/一线, backup/二线, attending/主治, "
            "department_head/科主任)")
    return role


def _local(at: datetime, tz: str) -> str:
    return at.astimezone(ZoneInfo(tz)).strftime("%m-%d %H:%M")


def _name(roster, sid: int) -> str:
    surgeon = roster.surgeons.get(sid)
    return safe_text(surgeon.name, 32) if surgeon else f"#{sid}?"


# -- verbs ----------------------------------------------------------------------

@with_desk
def cmd_now(args, desk) -> int:
    at = args.at or desk.clock()
    roster, chains = desk.chains(at, [args.team] if args.team else None)
    if args.team and args.team not in chains:
        print(f"no team {safe_text(args.team, 32)!r}", file=sys.stderr)
        return 2
    print(f"on call at {at.astimezone(ZoneInfo(HOTLINE_TZ)):%Y-%m-%d %H:%M} ({HOTLINE_TZ}) / 当前值班")
    for code, members in chains.items():
        team = roster.teams[code]
        print(f"\n{team.name_zh} / {team.name_en} [{code}]")
        if not members:
            print("  nobody on call -- calls go to the duty nurse / 无人值班，转值班护士")
        for n, m in enumerate(members, 1):
            print(f"  {n}. {ROLE_ZH[m.role.value]:4} {m.role.value:15} {safe_text(m.surgeon.name, 32):8} "
                  f"{m.surgeon.phone:13} until {_local(m.shift.end, team.tz)}")
    return 0


def _show_pieces(args, desk, days: int) -> int:
    roster_now, _ = desk.chains(teams=None)
    codes = [args.team] if args.team else sorted(roster_now.teams)
    first = args.date or desk.clock().astimezone(ZoneInfo(HOTLINE_TZ)).date()
    for code in codes:
        start, end = desk.day_window(code, first, days)  # UnknownTeam: refused, exit 1
        roster, pieces = desk.pieces(code, start, end)
        team = roster.teams[code]
        print(f"\n{team.name_zh} / {team.name_en} [{code}]  {first} +{days}d ({team.tz})")
        if not pieces:
            print("  nobody on call / 无人值班")
        for p in pieces:
            print(f"  {_local(p.start, team.tz)} - {_local(p.end, team.tz)}  "
                  f"{ROLE_ZH[p.role.value]:4} {p.role.value:15} {_name(roster, p.surgeon_id):8} "
                  f"({p.source.value})")
    return 0


@with_desk
def cmd_day(args, desk) -> int:
    return _show_pieces(args, desk, 1)


@with_desk
def cmd_week(args, desk) -> int:
    return _show_pieces(args, desk, 7)


@with_desk
def cmd_check(args, desk) -> int:
    start = desk.clock()
    _, findings = desk.check(start, start + timedelta(days=args.days),
                             [args.team] if args.team else None)
    for f in findings:
        print(f"{f.kind.value:16} {f.team or '-':10} {_local(f.start, HOTLINE_TZ)} - "
              f"{_local(f.end, HOTLINE_TZ)}  {safe_text(f.message_zh or f.message, 200)}")
    print(f"{len(findings)} finding(s) in the next {args.days} day(s) / 未来 {args.days} 天发现 "
          f"{len(findings)} 个问题")
    return EXIT_FINDINGS if findings else 0


@with_desk
def cmd_import(args, desk) -> int:
    path = Path(args.file)
    data = sys.stdin.buffer.read() if args.file == "-" else path.read_bytes()
    kind = args.format or ("ical" if path.suffix.lower() in (".ics", ".ical") else "csv")
    if kind == "ical":
        window = None
        if args.month:
            window = _month_window(args.month)
        outcome = desk.import_ical(data, actor=_actor(), team=args.team, role=args.role,
                                   window=window, dry_run=args.dry_run, source=path.name)
    else:
        outcome = desk.import_csv(data, actor=_actor(), team=args.team, month=args.month,
                                  handoff=args.handoff, dry_run=args.dry_run, source=path.name)
    for line in outcome.plan.report():
        print(line)
    plan = outcome.plan
    if not plan.ok:
        print(f"refused: {len(plan.errors)} error(s); nothing was changed / 导入失败，未做任何修改",
              file=sys.stderr)
        return EXIT_REFUSED
    for team, (lo, hi) in sorted(plan.replace.items()):
        n = sum(1 for s in plan.shifts if s.team == team)
        print(f"{team}: {n} shift(s) for {_local(lo, HOTLINE_TZ)} .. {_local(hi, HOTLINE_TZ)}")
    if outcome.result is None:
        print("dry run: nothing written / 试运行，未写入")
    else:
        print(f"written: {outcome.result.written} shift(s), replaced {outcome.result.removed} "
              f"/ 已导入 {outcome.result.written} 个班次")
    return 0


def _month_window(month: date) -> tuple[datetime, datetime]:
    tz = ZoneInfo(HOTLINE_TZ)
    nxt = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (datetime.combine(month, time(0), tz).astimezone(UTC),
            datetime.combine(nxt, time(0), tz).astimezone(UTC))


@with_desk
def cmd_export(args, desk) -> int:
    start = args.start or desk.clock() - timedelta(days=7)
    end = start + timedelta(days=args.days)
    if args.surgeon is not None:
        data = desk.surgeon_ical(args.surgeon, start, end, lang=args.lang)
    else:
        data = desk.team_ical(args.team, start, end, lang=args.lang)
    if args.output in (None, "-"):
        sys.stdout.buffer.write(data)
    else:
        Path(args.output).write_bytes(data)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0


@with_desk
def cmd_offer(args, desk) -> int:
    trade = desk.offer(by=args.by, team=args.team, role=args.role, start=args.start,
                                end=args.end, note=args.note, actor=_actor())
    return _print_trade(trade)


@with_desk
def cmd_swap(args, desk) -> int:
    trade = desk.swap(by=args.by, team=args.team, role=args.role, start=args.start,
                               end=args.end, with_surgeon=args.with_surgeon,
                               their_start=args.their_start, their_end=args.their_end,
                               their_role=args.their_role, note=args.note, actor=_actor())
    return _print_trade(trade)


@with_desk
def cmd_trade_step(args, desk) -> int:
    if args.step == "take":
        trade = desk.take(args.trade_id, by=args.by, actor=_actor())
    elif args.step == "approve":
        trade = desk.approve(args.trade_id, by=args.by, actor=_actor())
    else:
        trade = desk.decline(args.trade_id, by=args.by, note=args.note, actor=_actor())
    return _print_trade(trade)


def _print_trade(trade) -> int:
    print(f"trade {trade.id}: {trade.kind.value} {trade.team} {trade.role.value} "
          f"{_local(trade.start, HOTLINE_TZ)} - {_local(trade.end, HOTLINE_TZ)}  {trade.status.value}")
    return 0


@with_desk
def cmd_trades(args, desk) -> int:
    for t in desk.trades(status=[args.status] if args.status else None, team=args.team):
        print(f"{t.id:5} {t.kind.value:9} {t.status.value:9} {t.team:10} {t.role.value:15} "
              f"{_local(t.start, HOTLINE_TZ)} - {_local(t.end, HOTLINE_TZ)}  by #{t.requester}"
              + (f" with #{t.counterpart}" if t.counterpart else "")
              + (f" taken by #{t.taker}" if t.taker else ""))
    return 0


@with_desk
def cmd_override(args, desk) -> int:
    from oncall.rotation import Override

    if args.action == "remove":
        gone = desk.remove_override(args.id, actor=_actor())
        print(f"removed override {args.id} ({gone.team} {gone.role.value} #{gone.surgeon_id})")
        return 0
    new_id = desk.add_override(Override(args.team, args.role, args.surgeon, args.start, args.end,
                                        replaces=args.replaces, note=args.note), actor=_actor())
    print(f"override {new_id} added")
    return 0


@with_desk
def cmd_leave(args, desk) -> int:
    from oncall.rotation import Leave

    if args.action == "remove":
        desk.remove_leave(args.id, actor=_actor())
        print(f"removed leave {args.id}")
        return 0
    new_id = desk.add_leave(Leave(args.surgeon, args.start, args.end, args.note), actor=_actor())
    print(f"leave {new_id} added")
    return 0


@with_desk
def cmd_rotation(args, desk) -> int:
    from oncall.rotation import Rotation

    if args.action == "list":
        for rid, r in desk.rotations(args.team):
            print(f"{rid:4} {r.team:10} {r.role.value:15} {r.kind:7} every {r.every_days}d at "
                  f"{','.join(t.strftime('%H:%M') for t in r.handoff_times)} layer {r.layer} "
                  f"from {r.start} until {r.until or '-'}  members {','.join(map(str, r.members))}")
        return 0
    if args.action == "end":
        desk.end_rotation(args.id, args.until, actor=_actor())
        print(f"rotation {args.id} ends {args.until}")
        return 0
    members = tuple(int(m) for m in args.members.split(",") if m.strip())
    rotation = Rotation(args.team, args.role, members, args.start_date,
                        tuple(parse_hhmm(t) for t in args.handoff.split(",")), args.every_days,
                        args.layer, args.until, args.name)
    print(f"rotation {desk.add_rotation(rotation, actor=_actor())} added ({rotation.kind})")
    return 0


@with_desk
def cmd_team(args, desk) -> int:
    head: object = ...
    if args.head is not None:
        head = None if args.head.lower() == "none" else _surgeon_id(args.head)
    approval = None if args.requires_approval is None else args.requires_approval == "yes"
    desk.set_team_policy(args.team, actor=_actor(), tz=args.tz, requires_approval=approval,
                         department_head=head)
    team = desk.snapshot(desk.clock(), desk.clock() + timedelta(seconds=1)).teams[args.team]
    print(f"{team.code}: zone {team.tz}, swaps need approval: "
          f"{'yes' if team.requires_approval else 'no'}, department head: "
          f"{team.department_head if team.department_head is not None else 'whoever is on call as head'}")
    return 0


def _surgeon_id(text: str) -> int:
    if not text.isdigit() or len(text) > 9:
        raise ValueError(f"not a surgeon id: {safe_text(text, 20)!r}")
    return int(text)


@with_desk
def cmd_audit(args, desk) -> int:
    for e in desk.audit(subject=args.subject, limit=args.limit):
        print(f"{e.at.astimezone(ZoneInfo(HOTLINE_TZ)):%Y-%m-%d %H:%M:%S}  {safe_text(e.actor, 40):20} "
              f"{e.action:16} {e.subject} {safe_text(e.subject_id, 64)}")
    return 0


# -- parser ---------------------------------------------------------------------

def register(sub: argparse._SubParsersAction) -> None:
    roster = sub.add_parser(
        "roster", help="who is on call; the roster by day/week; check, import, export; swaps, "
                       "overrides, leave, rotations",
        description="Roster management (排班). Times are Asia/Shanghai local unless they carry an "
                    "offset. Changes are audited (`hotline roster audit`) and reach the live "
                    "routing within seconds.")
    verbs = roster.add_subparsers(dest="roster_verb", required=True, metavar="ACTION")

    p = verbs.add_parser("now", help="each team's escalation chain now (or --at)")
    p.add_argument("--team")
    p.add_argument("--at", type=parse_time, help="e.g. 2026-03-01T03:10")
    p.set_defaults(func=cmd_now)
    for name, func, what in (("day", cmd_day, "one day"), ("week", cmd_week, "seven days")):
        p = verbs.add_parser(name, help=f"who holds which role over {what}, per team")
        p.add_argument("date", nargs="?", type=parse_date, help="first day (default: today)")
        p.add_argument("--team")
        p.set_defaults(func=func)
    p = verbs.add_parser("check", help=f"gaps, double bookings, leave, short chains; exit "
                                       f"{EXIT_FINDINGS} if any")
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--team")
    p.set_defaults(func=cmd_check)

    p = verbs.add_parser(
        "import", help="import a month's roster from CSV (UTF-8, UTF-8 with BOM, GB18030) or iCal",
        description="Import one-off shifts. The file is checked line by line; if any line is wrong, "
                    "every problem is listed and nothing changes. The shifts of each team in the "
                    "file's month (or span) are replaced. Layouts and examples: docs/rosters.md.")
    p.add_argument("file", help="the .csv or .ics file, or - for stdin")
    p.add_argument("--format", choices=("csv", "ical"), help="default: from the file name")
    p.add_argument("--team", help="the team, when the file has no team column")
    p.add_argument("--month", type=parse_month, help="YYYY-MM: the month the file covers")
    p.add_argument("--handoff", type=parse_hhmm, default=time(8, 0),
                   help="daily handoff time for one-line-per-day sheets (default 08:00)")
    p.add_argument("--role", type=parse_role, help="iCal: the role of every event")
    p.add_argument("--dry-run", action="store_true", help="check and report; write nothing")
    p.set_defaults(func=cmd_import)

    p = verbs.add_parser("export", help="iCal feed of a team or a surgeon (subscribe from a phone)")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--team")
    who.add_argument("--surgeon", type=int)
    p.add_argument("--start", type=parse_time, help="default: a week ago")
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--lang", choices=("zh", "en"), default="zh")
    p.add_argument("-o", "--output", help="file (default: stdout)")
    p.set_defaults(func=cmd_export)

    def shift_args(q: argparse.ArgumentParser) -> None:
        q.add_argument("--by", type=int, required=True, help="the surgeon acting (id)")
        q.add_argument("--team", required=True)
        q.add_argument("--role", type=parse_role, default=Role.PRIMARY)
        q.add_argument("--start", type=parse_time, required=True)
        q.add_argument("--end", type=parse_time, required=True)
        q.add_argument("--note", default="")

    p = verbs.add_parser("offer", help="a surgeon offers their on-call time to anyone (顶班)")
    shift_args(p)
    p.set_defaults(func=cmd_offer)
    p = verbs.add_parser("swap", help="a surgeon asks another to exchange shifts (换班)")
    shift_args(p)
    p.add_argument("--with", dest="with_surgeon", type=int, required=True)
    p.add_argument("--their-start", type=parse_time, required=True)
    p.add_argument("--their-end", type=parse_time, required=True)
    p.add_argument("--their-role", type=parse_role)
    p.set_defaults(func=cmd_swap)
    for step, what in (("take", "take an offered shift or accept a swap"),
                       ("approve", "department head approves a taken trade"),
                       ("decline", "decline a trade (department head, or the surgeon asked)")):
        p = verbs.add_parser(step, help=what)
        p.add_argument("trade_id", type=int)
        p.add_argument("--by", type=int, required=True, help="the surgeon acting (id)")
        p.add_argument("--note", default="")
        p.set_defaults(func=cmd_trade_step, step=step)
    p = verbs.add_parser("trades", help="list swaps and give-aways")
    p.add_argument("--status", choices=("requested", "taken", "approved", "declined"))
    p.add_argument("--team")
    p.set_defaults(func=cmd_trades)

    p = verbs.add_parser("override", help="add or remove an override / cover (顶班 / 替班)")
    p.add_argument("action", choices=("add", "remove"))
    p.add_argument("--id", type=int, help="remove: the override's id")
    p.add_argument("--team")
    p.add_argument("--role", type=parse_role, default=Role.PRIMARY)
    p.add_argument("--surgeon", type=int)
    p.add_argument("--replaces", type=int, help="cover only for this surgeon")
    p.add_argument("--start", type=parse_time)
    p.add_argument("--end", type=parse_time)
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_override, needs=("team", "surgeon", "start", "end"))
    p = verbs.add_parser("leave", help="add or remove a surgeon's leave (请假)")
    p.add_argument("action", choices=("add", "remove"))
    p.add_argument("--id", type=int, help="remove: the leave's id")
    p.add_argument("--surgeon", type=int)
    p.add_argument("--start", type=parse_time)
    p.add_argument("--end", type=parse_time)
    p.add_argument("--note", default="")
    p.set_defaults(func=cmd_leave, needs=("surgeon", "start", "end"))
    p = verbs.add_parser("rotation", help="list, add or end rotations (轮班)")
    p.add_argument("action", choices=("list", "add", "end"))
    p.add_argument("--id", type=int, help="end: the rotation's id")
    p.add_argument("--until", type=parse_date, help="end: the day it ends (at its first handoff)")
    p.add_argument("--team")
    p.add_argument("--role", type=parse_role, default=Role.PRIMARY)
    p.add_argument("--members", help="surgeon ids in turn order, e.g. 101,102,103")
    p.add_argument("--start-date", type=parse_date)
    p.add_argument("--handoff", default="08:00", help="HH:MM, or several: 08:00,20:00")
    p.add_argument("--every-days", type=int, default=1, help="1 daily, 7 weekly, or any")
    p.add_argument("--layer", type=int, default=0, help="a higher layer wins while it has a slot")
    p.add_argument("--name", default="")
    p.set_defaults(func=cmd_rotation, needs=("team", "members", "start_date"))
    p = verbs.add_parser("team", help="a team's swap approval, department head and time zone",
                         description="Show or change a team's policy: whether swaps and give-aways "
                                     "wait for the department head (科主任), who that is (or none: "
                                     "whoever is on call as department head), and the zone its "
                                     "handoffs follow. Audited.")
    p.add_argument("team")
    p.add_argument("--requires-approval", choices=("yes", "no"))
    p.add_argument("--head", help="surgeon id of the department head, or none")
    p.add_argument("--tz", help="IANA zone, e.g. Asia/Shanghai")
    p.set_defaults(func=cmd_team)
    p = verbs.add_parser("audit", help="who changed the roster, when (newest first)")
    p.add_argument("--subject", choices=("trade", "override", "leave", "rotation", "shifts", "team"))
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_audit)


def check_required(args: argparse.Namespace) -> str | None:
    """For add/remove verbs: the options the chosen action needs; an error text or None."""
    action = getattr(args, "action", None)
    if action in ("remove", "end"):
        missing = [n for n in ("id",) + (("until",) if action == "end" else ()) if getattr(args, n) is None]
    elif action == "add":
        missing = [n for n in getattr(args, "needs", ()) if getattr(args, n, None) is None]
    else:
        return None
    if missing:
        return f"{action} needs " + ", ".join("--" + m.replace("_", "-") for m in missing)
    return None
