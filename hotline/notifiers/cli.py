"""`hotline notify channels|test`: which notification channels are configured, and a test message.

`channels` reads the configuration only (no network); `test` sends one
message on one channel and says whether it arrived -- the way to check a new
robot key or Twilio account before a real missed call depends on it.
"""
from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from oncall.model import HOTLINE_TZ

if TYPE_CHECKING:
    from hotline.config import HotlineConfig

_TO = re.compile(r"desk|team:[A-Za-z0-9._-]{1,32}|sms:\+[0-9]{8,15}", re.ASCII)


def _teams(config: "HotlineConfig") -> tuple[str, ...]:
    from ivr.menu import load_menu

    return load_menu(config.menu_file).teams


def cmd_notify_channels(args, config: "HotlineConfig") -> int:
    from hotline.notifiers.channels import configured_channels

    channels = configured_channels(config, _teams(config))
    sms = channels.sms
    rows = [("sms", f"from {sms.from_number}" if sms else "-"),
            ("wechat:desk", "configured" if channels.desk else "-")]
    rows += [(f"wechat:team:{team}", "configured" if team in channels.teams else "-")
             for team in _teams(config)]
    width = max(len(name) for name, _ in rows) + 2
    for name, state in rows:
        print(f"{name:<{width}}{state}")
    if sms is None and channels.desk is None and not channels.teams:
        print("no channel configured: notices are only logged / 未配置通知渠道，通知仅写入日志")
    return 0


def cmd_notify_test(args, config: "HotlineConfig") -> int:
    from hotline.notifiers.channels import configured_channels
    from hotline.notify import NotifyError

    if not _TO.fullmatch(args.to):
        print("hotline: --to is desk, team:<code> or sms:+<E.164 number>", file=sys.stderr)
        return 2
    channels = configured_channels(config, _teams(config))
    now = datetime.now(timezone.utc).astimezone(ZoneInfo(HOTLINE_TZ))
    text = (f"【96608测试】通知渠道测试 {now:%Y-%m-%d %H:%M}，无需处理。\n"
            f"96608 test: notification channel check at {now:%Y-%m-%d %H:%M}; no action needed.")
    try:
        if args.to.startswith("sms:"):
            if channels.sms is None:
                print("hotline: SMS is not configured", file=sys.stderr)
                return 1
            channels.sms.text(args.to[4:], text)
        else:
            group = channels.desk if args.to == "desk" else channels.teams.get(args.to[5:])
            if group is None:
                print(f"hotline: no WeChat group configured for {args.to}", file=sys.stderr)
                return 1
            group.post(text)
    except NotifyError as exc:
        print(f"hotline: not delivered: {exc}", file=sys.stderr)
        return 1
    print(f"test message sent to {args.to} / 测试消息已发送")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `notify channels|test` to the `hotline` parser's verbs."""
    notify = sub.add_parser(
        "notify", help="show the notification channels, or send a test message",
        description="Notification channels: WeChat Work group robots (duty desk, teams) and SMS "
                    "through Twilio. Keys and the Twilio token come from HOTLINE_* environment "
                    "variables or files in the instance directory (docs/notifications.md).")
    verbs = notify.add_subparsers(dest="notify_verb", required=True, metavar="ACTION")
    p = verbs.add_parser("channels", help="list which channels are configured (no secrets)")
    p.set_defaults(func=cmd_notify_channels)
    p = verbs.add_parser("test", help="send one test message on one channel")
    p.add_argument("--to", required=True,
                   help="desk (the duty desk's group), team:<code> (a team's group) or "
                        "sms:+<E.164 number>")
    p.set_defaults(func=cmd_notify_test)
