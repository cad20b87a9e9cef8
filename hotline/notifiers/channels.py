"""The configured channels, built from the configuration: what the service and the CLI call.

`build_notifier(config, teams, outbox)` gives the service one `RoutingNotifier`
over every configured channel; `configured_channels` gives the channels
themselves (the `hotline notify` CLI sends a test message on one).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import quote

from hotline.config import HotlineConfig
from hotline.notifiers.routing import RoutingNotifier, utcnow
from hotline.notifiers.sms import SmsNotifier
from hotline.notifiers.wechat import WEBHOOK_KEY, WeChatWorkNotifier, redact
from hotline.rosterjobs import NoticeOutbox

logger = logging.getLogger(__name__)

_TARGET = re.compile(r"[A-Za-z0-9._-]{1,32}", re.ASCII)


def webhook_url(base: str, key: str) -> str:
    """The robot's URL: `base` with `?key=KEY` (or `&key=` if `base` has a query already)."""
    if not WEBHOOK_KEY.fullmatch(key):
        raise ValueError("a WeChat Work robot key is 1..128 of [A-Za-z0-9_-]")
    return f"{base}{'&' if '?' in base else '?'}key={quote(key, safe='')}"


@dataclass
class Channels:
    """The configured channels: the SMS sender, the desk's group, the teams' groups."""

    sms: SmsNotifier | None = None
    desk: WeChatWorkNotifier | None = None
    teams: dict[str, WeChatWorkNotifier] = field(default_factory=dict)


def configured_channels(config: HotlineConfig, teams: Iterable[str]) -> Channels:
    """Every channel the configuration names, built; a bad one is left out with an error logged.

    A channel configured wrongly (a malformed key, an SMS sender that is not
    a phone number, a SID without a token) does not stop the service: the
    other channels work.
    """
    channels = Channels()
    for target in ("desk", *teams):
        if not _TARGET.fullmatch(target):
            continue
        key = config.wechat_key(target)
        if key is None:
            continue
        name = "wechat:desk" if target == "desk" else f"wechat:team:{target}"
        try:
            group = WeChatWorkNotifier(webhook_url(config.wechat_webhook_base, key), name=name)
        except ValueError as exc:
            logger.error("%s left out: %s", name, redact(str(exc), [key]))
            continue
        if target == "desk":
            channels.desk = group
        else:
            channels.teams[target] = group
    token = config.twilio_token()
    if config.twilio_account_sid and token:
        try:
            channels.sms = SmsNotifier(config.twilio_account_sid, token, config.twilio_from,
                                       base_url=config.twilio_base_url)
        except ValueError as exc:
            logger.error("SMS left out: %s", exc)
    elif config.twilio_account_sid or token:
        logger.error("SMS left out: it needs both a Twilio account SID and an auth token")
    return channels


def build_notifier(config: HotlineConfig, teams: Iterable[str], outbox: NoticeOutbox, *,
                   clock: Callable[[], datetime] = utcnow) -> RoutingNotifier:
    """A `RoutingNotifier` over every configured channel; logs (INFO) which ones, no secrets."""
    channels = configured_channels(config, teams)
    notifier = RoutingNotifier(outbox, sms=channels.sms, desk_group=channels.desk,
                               team_groups=channels.teams, clock=clock)
    described = notifier.describe()
    logger.info("notification channels: %s", ", ".join(described) if described
                else "none configured (notices are only logged)")
    return notifier
