"""`hotline hospital ...` and `hotline block ...`: the partner-hospital directory and the block list.

Exit codes: 0 done; 2 bad input (a file with problems, not a number, an
unknown id); 1 refused (the number is taken, registered to a hospital,
already blocked, or the directory changed under an import). Every write is
audited as "cli:<user>".
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from hotline.cli_roster import _actor
from oncall.model import HOTLINE_TZ
from routing.callers import safe_text

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from hotline.config import HotlineConfig

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2
TZ = ZoneInfo(HOTLINE_TZ)


@contextmanager
def _engine(config: "HotlineConfig") -> Iterator["Engine"]:
    from db.session import make_engine

    engine = make_engine(config.db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _local(at: datetime | None) -> str:
    return at.astimezone(TZ).strftime("%Y-%m-%d %H:%M") if at else "-"


def _fail(message: object, code: int) -> int:
    print(f"hotline: {message}", file=sys.stderr)
    return code


def _month_start(now: datetime) -> datetime:
    local = now.astimezone(TZ)
    return local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# -- hospital -------------------------------------------------------------------


def cmd_hospital_list(args, config) -> int:
    from db.hospitals import HospitalStore

    with _engine(config) as engine:
        store = HospitalStore(engine)
        now = datetime.now(TZ)
        rows = store.summaries(_month_start(now), now + timedelta(seconds=1))
    print(f"{'id':>5}  {'name':24} {'level':8} {'city':10} {'calls':>5}  numbers "
          "/ 编号 名称 等级 城市 本月来电 登记号码")
    for h in rows:
        print(f"{h.id:>5}  {safe_text(h.name, 24):24} {h.level:8} {safe_text(h.city, 10):10} "
              f"{h.calls:>5}  {', '.join(h.numbers) or '-'}")
    if not rows:
        print("(no partner hospitals / 暂无合作医院)")
    return 0


def cmd_hospital_show(args, config) -> int:
    from db.hospitals import HospitalStore

    with _engine(config) as engine:
        store = HospitalStore(engine)
        hospital = store.get(args.id)
        if hospital is None:
            return _fail(f"no partner hospital #{args.id} / 合作医院 {args.id} 不存在", EXIT_BAD_INPUT)
        today = datetime.now(TZ).date()
        report = store.figures(args.id, today - timedelta(days=args.days - 1), today)
    print(f"#{hospital.id} {safe_text(hospital.name, 64)}  {hospital.level}  {safe_text(hospital.city, 32)}")
    print(f"numbers / 登记号码: {', '.join(hospital.numbers) or '-'}")
    print("contacts / 联系医生:")
    for c in hospital.contacts:
        print(f"  {safe_text(c.name, 32)}  {safe_text(c.title, 32)}  {c.phone or '-'}")
    if not hospital.contacts:
        print("  -")
    share = f"{report.connected_share:.0%}" if report.connected_share is not None else "-"
    median = f"{report.median_s:.0f} s" if report.median_s is not None else "-"
    print(f"last {args.days} days / 近 {args.days} 天: calls {report.calls}, connected {report.connected} "
          f"({share}), median time to a surgeon {median}, referrals {report.referrals}; "
          f"last call {_local(report.last_call_at)}")
    return 0


def cmd_hospital_import(args, config) -> int:
    from db.hospitals import HospitalStore, PlanRefused

    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {safe_text(args.file, 200)}: {exc.strerror}", EXIT_BAD_INPUT)
    with _engine(config) as engine:
        store = HospitalStore(engine)
        plan = store.plan_import(data, remove_missing=args.remove_missing)
        for line in plan.report():
            print(line)
        if not plan.ok:
            print(f"refused: {len(plan.errors)} error(s); nothing was changed / 导入失败，未做任何修改",
                  file=sys.stderr)
            return EXIT_BAD_INPUT
        for hospital in plan.added:
            print(f"add    #{hospital.id} {safe_text(hospital.name, 64)} ({', '.join(hospital.numbers) or '-'})")
        for _, hospital in plan.changed:
            print(f"change #{hospital.id} {safe_text(hospital.name, 64)} ({', '.join(hospital.numbers) or '-'})")
        for hospital in plan.removed:
            print(f"remove #{hospital.id} {safe_text(hospital.name, 64)}")
        s = plan.summary()
        print(f"{s['added']} added, {s['changed']} changed, {s['unchanged']} unchanged, {s['removed']} removed "
              f"/ 新增 {s['added']}，修改 {s['changed']}，不变 {s['unchanged']}，删除 {s['removed']}")
        if args.dry_run:
            print("dry run: nothing written / 试运行，未写入")
            return 0
        if not plan.writes:
            print("nothing to write / 无需修改")
            return 0
        try:
            store.apply(plan, _actor())
        except PlanRefused as exc:
            return _fail(f"refused: {exc}", EXIT_REFUSED)
    print("written / 已导入")
    return 0


def cmd_hospital_export(args, config) -> int:
    from db.hospitals import HospitalStore
    from network.hospitals import export_csv

    with _engine(config) as engine:
        text = export_csv(HospitalStore(engine).all())
    if args.file in (None, "-"):
        sys.stdout.write(text)
        return 0
    # UTF-8 with BOM: what Excel needs to open Chinese text from a .csv file.
    Path(args.file).write_bytes(text.encode("utf-8-sig"))
    print(f"wrote {args.file}", file=sys.stderr)
    return 0


def cmd_hospital_add_number(args, config) -> int:
    from db.hospitals import HospitalError, HospitalStore, NumberTaken, UnknownHospital

    with _engine(config) as engine:
        try:
            number = HospitalStore(engine).add_number(args.id, args.number, _actor())
        except (HospitalError, UnknownHospital) as exc:
            return _fail(exc, EXIT_BAD_INPUT)
        except NumberTaken as exc:
            return _fail(f"refused: {exc}", EXIT_REFUSED)
    print(f"{number} registered to hospital #{args.id} / 号码已登记")
    return 0


def cmd_hospital_remove_number(args, config) -> int:
    from db.hospitals import HospitalError, HospitalStore, UnknownHospital

    with _engine(config) as engine:
        try:
            owner = HospitalStore(engine).remove_number(args.number, _actor())
        except (HospitalError, UnknownHospital) as exc:
            return _fail(exc, EXIT_BAD_INPUT)
    print(f"number removed from hospital #{owner} / 号码已删除")
    return 0


# -- block ------------------------------------------------------------------------


def cmd_block_add(args, config) -> int:
    from db.blocklist import AlreadyBlocked, BlockList, NumberRegistered
    from db.blocklist import BlockListError

    with _engine(config) as engine:
        try:
            entry = BlockList(engine).add(args.number, args.reason, _actor())
        except (NumberRegistered, AlreadyBlocked) as exc:
            return _fail(f"refused: {exc}", EXIT_REFUSED)
        except BlockListError as exc:
            return _fail(exc, EXIT_BAD_INPUT)
    print(f"{entry.number} blocked / 已加入黑名单")
    return 0


def cmd_block_remove(args, config) -> int:
    from db.blocklist import BlockList, BlockListError, NotBlocked

    with _engine(config) as engine:
        try:
            entry = BlockList(engine).remove(args.number, _actor())
        except NotBlocked as exc:
            return _fail(f"refused: {exc}", EXIT_REFUSED)
        except BlockListError as exc:
            return _fail(exc, EXIT_BAD_INPUT)
    print(f"{entry.number} removed from the block list / 已移出黑名单")
    return 0


def cmd_block_list(args, config) -> int:
    from db.blocklist import BlockList

    with _engine(config) as engine:
        entries = BlockList(engine).entries(include_removed=args.all)
    print(f"{'number':20} {'added':16} {'by':16} {'removed':16} reason / 号码 加入时间 操作人 移出时间 原因")
    for e in entries:
        print(f"{e.number:20} {_local(e.added_at):16} {safe_text(e.added_by, 16):16} "
              f"{_local(e.removed_at):16} {safe_text(e.reason, 80)}")
    if not entries:
        print("(the block list is empty / 黑名单为空)")
    return 0


def _positive_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 999_999:
        raise argparse.ArgumentTypeError(f"not a hospital id: {safe_text(text, 20)!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    """Add `hospital ...` and `block ...` to the `hotline` parser's verbs."""
    hospital = sub.add_parser(
        "hospital", help="the partner-hospital directory (合作医院): list, show, import, export, numbers",
        description="Partner hospitals and the numbers their calls are recognised by. A call from a "
                    "registered number skips the menu and goes to the referral team. The service "
                    "picks up a change within seconds. See docs/hospitals.md for the CSV format.")
    verbs = hospital.add_subparsers(dest="hospital_verb", required=True, metavar="ACTION")
    p = verbs.add_parser("list", help="every hospital with its numbers and this month's calls")
    p.set_defaults(func=cmd_hospital_list)
    p = verbs.add_parser("show", help="one hospital: numbers, contact doctors, figures")
    p.add_argument("id", type=_positive_id, help="the hospital's id (编号)")
    p.add_argument("--days", type=int, default=30, choices=range(1, 3661), metavar="DAYS",
                   help="the figures' range: the last DAYS local days, today included (default 30)")
    p.set_defaults(func=cmd_hospital_show)
    p = verbs.add_parser(
        "import", help="import a directory CSV (one line per hospital); all or nothing",
        description="Read FILE (CSV: 编号,名称,等级,城市,电话,联系医生; UTF-8, GB18030 or UTF-16; "
                    "comma, tab or ，) and add or change the hospitals it lists. Hospitals it does "
                    "not list stay, unless --remove-missing. Any problem: nothing is written.")
    p.add_argument("file", help="the CSV file, or - for standard input")
    p.add_argument("--dry-run", action="store_true", help="show what would change; write nothing")
    p.add_argument("--remove-missing", action="store_true",
                   help="also remove the hospitals the file does not list (a hospital with cases "
                        "keeps its name for the history and loses its numbers and contacts)")
    p.set_defaults(func=cmd_hospital_import)
    p = verbs.add_parser("export", help="write the directory as CSV (the import's format)")
    p.add_argument("file", nargs="?", help="output file (UTF-8 with BOM, for Excel); default: standard output")
    p.set_defaults(func=cmd_hospital_export)
    p = verbs.add_parser("add-number", help="register a number to a hospital")
    p.add_argument("id", type=_positive_id, help="the hospital's id")
    p.add_argument("number", help="e.g. 0431-88888888 or 13900000000")
    p.set_defaults(func=cmd_hospital_add_number)
    p = verbs.add_parser("remove-number", help="unregister a number (its calls become public calls)")
    p.add_argument("number")
    p.set_defaults(func=cmd_hospital_remove_number)

    block = sub.add_parser(
        "block", help="the block list (黑名单) of abusive numbers: add, remove, list",
        description="Blocked numbers are refused by the hotline. A number registered to a partner "
                    "hospital is never blocked. Removing keeps the entry as history; every change "
                    "is audited.")
    verbs = block.add_subparsers(dest="block_verb", required=True, metavar="ACTION")
    p = verbs.add_parser("add", help="block a number (a reason is required)")
    p.add_argument("number")
    p.add_argument("--reason", required=True, help="why, for the audit trail (one line)")
    p.set_defaults(func=cmd_block_add)
    p = verbs.add_parser("remove", help="unblock a number")
    p.add_argument("number")
    p.set_defaults(func=cmd_block_remove)
    p = verbs.add_parser("list", help="the numbers blocked now")
    p.add_argument("--all", action="store_true", help="also the removed entries (the history)")
    p.set_defaults(func=cmd_block_list)
