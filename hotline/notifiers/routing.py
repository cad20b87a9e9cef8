"""One `Notifier` that picks the channels for each notice: SMS, a team's group, the duty group.

Who gets what:

- a notice to a surgeon -> an SMS to their mobile, and the notice in their
  team's WeChat group with an @-mention of them, whichever is configured;
- a notice to the duty desk (`surgeon_id` None) -> the duty desk's WeChat
  group; without one, the notice's team group stands in;
- nothing configured for a notice (or a surgeon without a mobile and no
  group) -> the log (`LogNotifier`), as before this module existed: the
  notice counts as delivered. Each channel that is missing is warned about
  once per process, not at every notice.

Partial failure. A notice going out on two channels may get through on one
and fail on the other. Retrying the whole notice would SMS the surgeon again,
so the failed channels are split off instead: each becomes a notice of its
own in the outbox, pinned to that channel (key `<key>#<channel>`, e.g.
`missed:20261201-093000-ab12cd:1#wechat:team:facial`), due one retry step
later, and the original counts as sent. The pinned notice is then retried
and given up by the deliver job like any other, and only ever goes out on
its channel. When every channel fails, nothing went out and the whole notice
is retried. Storing the split-off notice is the one write that can fail in
between: then the notice fails as a whole and its successful channels send
again (at least once, as for a crash between a send and `mark_sent`).
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone

from hotline.notify import LogNotifier, Notifier, NotifyError, escape
from hotline.rosterjobs import RETRY_FIRST, NoticeOutbox
from network.notifications import e164
from oncall.model import Surgeon
from oncall.notices import Notice, clean

logger = logging.getLogger(__name__)

SMS = "sms"
DESK_GROUP = "wechat:desk"
TEAM_GROUP = "wechat:team:"  # + team code
PIN = "#"  # between a notice's key and the channel it is pinned to
_CHANNEL = re.compile(r"sms|wechat:desk|wechat:team:[A-Za-z0-9._-]{1,32}", re.ASCII)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def pinned_channel(key: str) -> str | None:
    """The channel a split-off notice is pinned to, or None for an ordinary notice.

    >>> pinned_channel("missed:c1:7#sms"), pinned_channel("missed:c1:desk")
    ('sms', None)
    """
    _, sep, channel = key.rpartition(PIN)
    return channel if sep and _CHANNEL.fullmatch(channel) else None


class RoutingNotifier:
    """Sends each notice on the channels that apply to it (module docstring).

    `sms` and the groups are Notifiers of their own (`SmsNotifier`,
    `WeChatWorkNotifier`, or a test's); `team_groups` maps a team code to its
    group. `outbox` takes the split-off notices of a partial failure.
    """

    def __init__(self, outbox: NoticeOutbox, *, sms: Notifier | None = None,
                 desk_group: Notifier | None = None,
                 team_groups: Mapping[str, Notifier] | None = None,
                 fallback: Notifier | None = None,
                 clock: Callable[[], datetime] = utcnow, retry_after: timedelta = RETRY_FIRST):
        self.outbox = outbox
        self.sms = sms
        self.desk_group = desk_group
        self.team_groups = dict(team_groups or {})
        self.fallback = fallback or LogNotifier()
        self._clock = clock
        self.retry_after = retry_after
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def describe(self) -> list[str]:
        """The configured channels, for the start-up log (no secrets)."""
        out = []
        if self.sms is not None:
            out.append(SMS)
        if self.desk_group is not None:
            out.append(DESK_GROUP)
        out += [TEAM_GROUP + code for code in sorted(self.team_groups)]
        return out

    def channels(self, notice: Notice, recipient: Surgeon | None) -> list[str]:
        """The channels this notice goes out on, in sending order; [] -> the log."""
        pinned = pinned_channel(notice.key)
        if pinned is not None:
            return [pinned]
        team_group = (TEAM_GROUP + notice.team
                      if notice.team is not None and notice.team in self.team_groups else None)
        if recipient is None:
            if self.desk_group is not None:
                return [DESK_GROUP]
            if team_group is not None:
                return [team_group]
            self._warn_once("desk", "no WeChat group for the duty desk is configured: "
                                    "its notices are only logged")
            return []
        out = []
        if self.sms is None:
            self._warn_once("sms", "SMS is not configured: notices to surgeons go to their "
                                   "team's group, or are only logged")
        elif e164(recipient.phone) is None:
            self._warn_once(f"mobile:{recipient.id}",
                            f"surgeon {recipient.id} has no mobile number: no SMS for them")
        else:
            out.append(SMS)
        if team_group is not None:
            out.append(team_group)
        elif notice.team is not None:
            self._warn_once(f"team:{notice.team}",
                            f"no WeChat group for team {clean(notice.team)} is configured")
        return out

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        channels = self.channels(notice, recipient)
        if not channels:
            self.fallback.send(notice, recipient)
            return
        failed: list[tuple[str, str]] = []
        for channel in channels:
            try:
                self._notifier(channel).send(notice, recipient)
            except Exception as exc:
                if not isinstance(exc, NotifyError):
                    logger.exception("channel %s crashed on notice %s", channel, escape(notice.key))
                failed.append((channel, clean(f"{exc}") or type(exc).__name__))
        if not failed:
            return
        why = "; ".join(f"{channel}: {error}" for channel, error in failed)
        if len(failed) == len(channels):
            raise NotifyError(why)
        # Some went out: retry only the others, each as its own notice.
        base = notice.key
        later = self._clock() + self.retry_after
        split = [Notice(key=f"{base}{PIN}{channel}", kind=notice.kind, team=notice.team,
                        surgeon_id=notice.surgeon_id, due_at=max(later, notice.due_at),
                        text_zh=notice.text_zh, text_en=notice.text_en)
                 for channel, _ in failed]
        try:
            self.outbox.add(split)
        except Exception as exc:
            raise NotifyError(f"{why}; keeping the failed channels for a retry failed "
                              f"({type(exc).__name__}), so the whole notice is retried") from None
        logger.warning("notice %s: %s failed and will be retried on its own (%s)",
                       escape(notice.key), ", ".join(channel for channel, _ in failed), escape(why))

    def _notifier(self, channel: str) -> Notifier:
        if channel == SMS and self.sms is not None:
            return self.sms
        if channel == DESK_GROUP and self.desk_group is not None:
            return self.desk_group
        if channel.startswith(TEAM_GROUP):
            group = self.team_groups.get(channel[len(TEAM_GROUP):])
            if group is not None:
                return group
        # A pinned notice whose channel was configured away since: it cannot go.
        raise NotifyError(f"{channel} is not configured (any more)")

    def _warn_once(self, what: str, message: str) -> None:
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        logger.warning("%s", message)
