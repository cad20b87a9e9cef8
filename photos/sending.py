"""Sending an upload link to a caller: make the link, text it, audit what went where.

`LinkSender.send` makes a fresh link (the token lives only in this call and the
message: the table keeps its hash), sends it on every channel that reaches
the caller, and audits the delivery (`send_upload_link`, the caller's number
masked). A delivery that reached nobody revokes its link in the same write.

Two callers of it:

- the console, when a surgeon presses "send the photo link to the caller"
  (console.photos): SMS to the caller's mobile, and the team's WeChat Work
  group, for the surgeon to pass on;
- `case_open_job`, run by the service's scheduler every few seconds
  (`add_photo_link_job`): a case that opened with a caller on a mobile gets a
  link by SMS once (photos.delivery.case_open_plan). It reads the cases table,
  never the FastAGI path: the service answers Asterisk without waiting for it.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Protocol
from zoneinfo import ZoneInfo

from db.photos import PhotoStore
from hotline.notify import NotifyError
from photos.delivery import (ACCEPTED_WINDOW, CASE_OPEN_ACTOR, CASE_OPEN_WINDOW, ON_OPEN_OFF,
                             DeliveryError, accepted_plan, caller_mobile, case_open_plan,
                             check_setting, group_link_text, masked, phone_view_text,
                             phone_view_url, public_base, upload_link_text, upload_url)

logger = logging.getLogger(__name__)
SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
SMS = "sms"
TEAM_GROUP = "wechat:team:"
CASE_OPEN_JOB_ID = "hotline-photo-links"
ACCEPTED_JOB_ID = "hotline-phone-view-links"
CASE_OPEN_EVERY = timedelta(seconds=5)


class Texter(Protocol):
    def text(self, to: str, body: str) -> None:
        """Send an SMS to `to` (E.164) or raise NotifyError (hotline.notifiers.sms.SmsNotifier)."""
        ...


class Poster(Protocol):
    def post(self, content: str, mentioned_mobiles=()) -> None:
        """Post to a group or raise NotifyError (hotline.notifiers.wechat.WeChatWorkNotifier)."""
        ...


@dataclass(frozen=True)
class Delivery:
    link_id: int
    to: str  # the caller's number, masked
    sent: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


def _local(at: datetime) -> str:
    return at.astimezone(SH).strftime("%m-%d %H:%M")


class LinkSender:
    """Makes and sends upload links on the channels it was given (SMS, teams' groups)."""

    def __init__(self, store: PhotoStore, base_url: str, *, sms: Texter | None = None,
                 groups: Mapping[str, Poster] | None = None) -> None:
        self.store = store
        self.base_url = public_base(base_url)
        self.sms = sms
        self.groups = dict(groups or {})

    def channels(self, caller_number: str | None, team: str | None, *, group: bool) -> list[str]:
        """The channels that reach this caller: SMS to a Chinese mobile; the team's group if asked."""
        out = []
        if self.sms is not None and caller_mobile(caller_number) is not None:
            out.append(SMS)
        if group and team is not None and team in self.groups:
            out.append(TEAM_GROUP + team)
        return out

    def send(self, case_id: str, caller_number: str | None, team: str | None, *, by: str,
             group: bool, ip: str = "") -> Delivery:
        """Make a link for the case and send it; DeliveryError if no channel reaches the caller
        (then no link is made). Raises photos.links.LinkError for an unknown case."""
        channels = self.channels(caller_number, team, group=group)
        if not channels:
            raise DeliveryError("no configured channel reaches this caller")
        token, link = self.store.create_link(case_id, by=by, ip=ip)
        url, until = upload_url(self.base_url, token), _local(link.expires_at)
        to = masked(caller_number)
        sent, failed = [], []
        for channel in channels:
            try:
                if channel == SMS:
                    zh, en = upload_link_text(url, until)
                    self.sms.text(caller_mobile(caller_number), f"{zh}\n{en}")  # type: ignore[union-attr, arg-type]
                else:
                    self.groups[channel[len(TEAM_GROUP):]].post(
                        group_link_text(url, until, case_id, to))
                sent.append(channel)
            except NotifyError as exc:
                logger.warning("case %s: the upload link did not go out on %s (%s)", case_id,
                               channel, str(exc)[:200].replace("\n", " "))
                failed.append(channel)
            except Exception:
                logger.exception("case %s: sending the upload link on %s crashed", case_id, channel)
                failed.append(channel)
        self.store.record_delivery(case_id, link.id, by=by, sent=sent, failed=failed, to=to, ip=ip)
        logger.info("case %s: upload link %s to %s: sent on %s%s", case_id, link.id, to,
                    ", ".join(sent) or "nothing", f", failed on {', '.join(failed)}" if failed else "")
        return Delivery(link.id, to, sent, failed)


def sender_from_config(store: PhotoStore, config, teams) -> LinkSender:
    """A LinkSender over the configured SMS sender and teams' groups (hotline.notifiers).
    Raises DeliveryError when `console_public_url` is not a usable URL."""
    from hotline.notifiers.channels import configured_channels

    channels = configured_channels(config, teams)
    return LinkSender(store, config.console_public_url, sms=channels.sms, groups=channels.teams)


def case_open_job(store: PhotoStore, sender: LinkSender, setting: str,
                  clock: Callable[[], datetime]) -> list[Delivery]:
    """One run: a link to each young, live case whose caller should get one now; never raises."""
    try:
        now = clock()
        cases = store.young_cases(now - CASE_OPEN_WINDOW)
    except Exception:
        logger.exception("photo links: reading the open cases failed; the next run retries")
        return []
    done = []
    for case in cases:
        try:
            if case_open_plan(case, store.case_open_tries(case.case_id), now, setting) is not None:
                continue
            done.append(sender.send(case.case_id, case.caller_number, case.team,
                                    by=CASE_OPEN_ACTOR, group=False))
        except DeliveryError:
            continue  # SMS is not configured: case_open_plan let it through, no channel took it
        except Exception:
            logger.exception("photo links: case %s failed; the next run retries", case.case_id)
    return done


def accepted_job(store: PhotoStore, sms: Texter, base_url: str,
                 clock: Callable[[], datetime]) -> int:
    """One run: text each surgeon who just accepted a case the address of its phone view
    (once per case, audited `send_phone_view`); how many went out. Never raises."""
    try:
        now = clock()
        cases = store.accepted_cases(now - ACCEPTED_WINDOW)
    except Exception:
        logger.exception("phone view links: reading the accepted cases failed; the next run retries")
        return 0
    sent = 0
    for case in cases:
        try:
            if accepted_plan(case, store.phone_view_sent(case.case_id), now) is not None:
                continue
            zh, en = phone_view_text(phone_view_url(base_url, case.case_id), case.case_id,
                                     case.team_name or case.team or "-")
            ok = True
            try:
                sms.text(caller_mobile(case.surgeon_phone), f"{zh}\n{en}")  # type: ignore[arg-type]
            except NotifyError as exc:
                ok = False
                logger.warning("case %s: the phone view link did not reach surgeon %s (%s)",
                               case.case_id, case.surgeon_id, str(exc)[:200].replace("\n", " "))
            # Recorded either way: a surgeon is never texted twice for one case.
            store.record_phone_view(case.case_id, case.surgeon_id, sent=ok, to=masked(case.surgeon_phone))
            sent += ok
        except Exception:
            logger.exception("phone view links: case %s failed", case.case_id)
    return sent


def add_photo_link_job(scheduler, config, engine, vault, teams,
                       clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                       every: timedelta = CASE_OPEN_EVERY):
    """Add the case-open job to the service's scheduler; None (and a log line saying why)
    when it is off, or when there is no public URL or SMS sender to send with.

    The one line for hotline/service.py, beside the other jobs:
    `add_photo_link_job(self.scheduler, config, self.engine, self.vault, self.menu.teams, clock)`
    """
    setting = check_setting(config.photo_link_on_case_open)
    if setting == ON_OPEN_OFF:
        logger.info("photo links on case open: off")
        return None
    store = PhotoStore(engine, config.recordings_dir, vault, clock)
    try:
        sender = sender_from_config(store, config, teams)
    except DeliveryError as exc:
        logger.warning("photo links on case open: not sent (%s)", exc)
        return None
    if sender.sms is None:
        logger.warning("photo links on case open: not sent (SMS is not configured)")
        return None
    # The surgeon who accepts gets the case's phone view by SMS (docs/photos.md).
    scheduler.add_job(
        accepted_job, trigger="interval", seconds=every.total_seconds(),
        args=(store, sender.sms, sender.base_url, clock), id=ACCEPTED_JOB_ID,
        name="send the phone view to surgeons who accepted",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=int(every.total_seconds()))
    return scheduler.add_job(
        case_open_job, trigger="interval", seconds=every.total_seconds(),
        args=(store, sender, setting, clock), id=CASE_OPEN_JOB_ID,
        name="send upload links to callers whose case opened",
        replace_existing=True, max_instances=1, coalesce=True,
        misfire_grace_time=int(every.total_seconds()))
