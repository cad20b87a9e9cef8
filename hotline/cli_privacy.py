"""`hotline privacy policy|purge|export`: retention periods, the purge, one caller's data (个人信息).

Exit codes: 0 done; 2 bad input (a retention setting, a number, an output
path); 1 refused or failed. The purge is audited as actor "retention" with
the CLI user in its detail; an export as "cli:<user>". See docs/privacy.md.
"""
from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ
from privacy.retention import policy_from_config

if TYPE_CHECKING:
    from hotline.config import HotlineConfig

EXIT_REFUSED = 1
EXIT_BAD_INPUT = 2


def _fail(message: object, code: int) -> int:
    print(f"hotline privacy: {message}", file=sys.stderr)
    return code


def _actor() -> str:
    from hotline.cli_roster import _actor as roster_actor

    return roster_actor()


def cmd_policy(args, config: "HotlineConfig") -> int:
    from privacy.retention import LABELS, RetentionError, cutoffs

    try:
        policy = policy_from_config(config)
    except RetentionError as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    now = datetime.now(timezone.utc)
    tz = ZoneInfo(HOTLINE_TZ)
    print("retention periods / 保存期限 (config key: days; data older than the cut-off is deleted "
          "by the daily purge at 03:30)")
    for kind, cutoff in cutoffs(policy, now).items():
        zh, en = LABELS[kind]
        days = policy.days(kind)
        print(f"  {kind.config_key:27} {days:6} d (~{days / 365:.1f} y)  "
              f"cut-off {cutoff.astimezone(tz):%Y-%m-%d}  {zh} / {en}")
    for warning in policy.warnings():
        print(f"warning / 注意: {warning}")
    return 0


def cmd_purge(args, config: "HotlineConfig") -> int:
    from db.retention import purge
    from db.session import make_engine
    from privacy.retention import RetentionError

    try:
        policy = policy_from_config(config)
    except RetentionError as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    if args.batch < 1:
        return _fail("--batch: at least 1", EXIT_BAD_INPUT)
    engine = make_engine(config.db_url)
    try:
        report = purge(engine, policy, datetime.now(timezone.utc), config.recordings_dir,
                       dry_run=args.dry_run, batch=args.batch, detail={"by": _actor()})
    except Exception as exc:
        return _fail(f"purge failed ({type(exc).__name__}); the audit log has the counts so far "
                     f"/ 清理失败", EXIT_REFUSED)
    finally:
        engine.dispose()
    print("dry run: nothing deleted / 演练: 未删除任何数据" if args.dry_run
          else "retention purge done / 过期数据已清理 (audited)")
    for line in report.lines():
        print(f"  {line}")
    return 0


def cmd_export(args, config: "HotlineConfig") -> int:
    from db.session import make_engine
    from privacy.export import ExportError, check_number, export_patient
    from vault import VaultError, open_note, read_recording

    try:
        check_number(args.number)
    except ExportError as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    engine = make_engine(config.db_url)
    try:
        vault = config.vault()  # sealed recordings and notes go out opened
        summary = export_patient(engine, args.number, Path(args.out), config.recordings_dir,
                                 datetime.now(timezone.utc), _actor(),
                                 read=lambda path: read_recording(path, vault),
                                 open_note=lambda stored, case_id: open_note(vault, stored,
                                                                             case_id),
                                 vault=vault)  # wound photos are opened from their seals
    except ExportError as exc:
        return _fail(exc, EXIT_BAD_INPUT)
    except VaultError as exc:  # a recording sealed with a key no longer in the ring
        return _fail(f"a sealed recording cannot be opened ({exc}); nothing was exported "
                     f"/ 录音无法解密，未导出", EXIT_REFUSED)
    except OSError as exc:
        return _fail(f"cannot write the export ({type(exc).__name__}: {exc.strerror}) "
                     f"/ 无法写入导出文件", EXIT_REFUSED)
    finally:
        engine.dispose()
    print(f"exported {summary.cases} case(s) and {summary.files} audio file(s) of "
          f"{summary.masked_number} to {summary.out} ({summary.bytes} bytes, mode 0600) "
          f"/ 已导出 (已记入审计日志)")
    if summary.missing_files:
        print(f"  {summary.missing_files} recording(s) not included (deleted at the end of their "
              f"retention period, or unreadable) / 部分录音未包含")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `privacy policy|purge|export` to the `hotline` parser's verbs."""
    privacy = sub.add_parser(
        "privacy", help="retention periods, the purge, one caller's data export / 个人信息保护",
        description="Personal information (个人信息保护法): how long each kind of data is kept, "
                    "the purge of what has outlived it, and the copy of one caller's data "
                    "they may ask for (第四十五条). See docs/privacy.md.")
    verbs = privacy.add_subparsers(dest="privacy_verb", required=True, metavar="ACTION")
    p = verbs.add_parser("policy", help="print the retention periods / 显示各类数据的保存期限")
    p.set_defaults(func=cmd_policy)
    p = verbs.add_parser(
        "purge", help="delete data older than its retention period, audited / 清理过期数据(记入审计日志)",
        description="Delete what has outlived its period: recordings and voicemails, case "
                    "records, sent notices, console sessions, removed block-list entries, "
                    "old audit entries. The service runs this daily at 03:30. "
                    "删除超过保存期限的数据; 服务每天 03:30 自动执行。")
    p.add_argument("--dry-run", action="store_true",
                   help="count what would go; delete and audit nothing / 只统计, 不删除")
    p.add_argument("--batch", type=int, default=1000,
                   help="rows per transaction (default 1000) / 每个事务处理的行数")
    p.set_defaults(func=cmd_purge)
    p = verbs.add_parser(
        "export", help="write one caller's cases and recordings to a zip / 导出某来电号码的全部数据",
        description="A zip with cases.json, the recordings and README.txt for every case of "
                    "NUMBER (PIPL art. 45). Audited with the number masked. The file must not "
                    "exist yet; it is written with mode 0600. "
                    "导出该号码的所有病例记录与录音 (zip, 权限 0600), 记入审计日志。")
    p.add_argument("--number", required=True, help="the caller's number, e.g. 13912345678 / 来电号码")
    p.add_argument("--out", required=True, help="the zip to write (must not exist) / 输出文件")
    p.set_defaults(func=cmd_export)
