"""RoutingNotifier: which channels a notice takes, and partial failures retried per channel."""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from hotline.notifiers.routing import RoutingNotifier, pinned_channel
from hotline.notify import NotifyError
from hotline.rosterjobs import RETRY_FIRST, deliver_notices
from oncall.model import Surgeon
from oncall.notices import MISSED_CALL, ROSTER_GAP, Notice
from tests.support.outbox import MemoryOutbox

T0 = datetime(2026, 12, 1, 1, 0, tzinfo=timezone.utc)
ZHANG = Surgeon(1, "张三", "13700000101")
LANDLINE = Surgeon(2, "李四", "043188888888")
SURGEONS = {1: ZHANG, 2: LANDLINE}


class Channel:
    """A fake channel notifier: records what it sent, fails while `down`."""

    def __init__(self, name: str):
        self.name = name
        self.sent: list[tuple[str, int | None]] = []
        self.down = False

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        if self.down:
            raise NotifyError(f"{self.name} is down")
        self.sent.append((notice.key, None if recipient is None else recipient.id))


def notice(key: str = "missed:c1:1", surgeon_id: int | None = 1, team: str | None = "facial",
           kind=MISSED_CALL) -> Notice:
    return Notice(key, kind, team, surgeon_id, T0, "未接来电 13812345678", "missed call")


def router(outbox=None, **channels) -> RoutingNotifier:
    return RoutingNotifier(outbox if outbox is not None else MemoryOutbox(), clock=lambda: T0,
                           fallback=channels.pop("fallback", None), **channels)


def test_a_surgeon_gets_an_sms_and_a_mention_in_the_team_group():
    sms, team = Channel("sms"), Channel("facial")
    r = router(sms=sms, team_groups={"facial": team}, desk_group=Channel("desk"))
    assert r.channels(notice(), ZHANG) == ["sms", "wechat:team:facial"]
    r.send(notice(), ZHANG)
    assert sms.sent == [("missed:c1:1", 1)] and team.sent == [("missed:c1:1", 1)]


def test_the_duty_desk_gets_its_group_and_the_team_group_stands_in_without_one():
    desk, team = Channel("desk"), Channel("facial")
    r = router(sms=Channel("sms"), desk_group=desk, team_groups={"facial": team})
    assert r.channels(notice(surgeon_id=None), None) == ["wechat:desk"]
    r.send(notice("missed:c1:desk", None), None)
    assert desk.sent == [("missed:c1:desk", None)] and team.sent == []
    no_desk = router(team_groups={"facial": team})
    assert no_desk.channels(notice(surgeon_id=None), None) == ["wechat:team:facial"]
    assert no_desk.channels(notice(surgeon_id=None, team="replant"), None) == []


def test_another_team_s_group_is_not_used():
    r = router(team_groups={"replant": Channel("replant")})
    assert r.channels(notice(), ZHANG) == []


def test_nothing_configured_falls_back_to_the_log_and_warns_once(caplog):
    fallback = Channel("log")
    r = router(fallback=fallback)
    with caplog.at_level(logging.WARNING, logger="hotline.notifiers.routing"):
        for i in range(3):
            r.send(notice(f"missed:c{i}:1"), ZHANG)
            r.send(notice(f"missed:c{i}:desk", None), None)
    assert [k for k, _ in fallback.sent] == ["missed:c0:1", "missed:c0:desk", "missed:c1:1",
                                             "missed:c1:desk", "missed:c2:1", "missed:c2:desk"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 3, warnings  # SMS, the facial group, the desk group: once each
    assert any("SMS is not configured" in w for w in warnings)


def test_a_surgeon_without_a_mobile_gets_no_sms_but_the_group():
    sms, team = Channel("sms"), Channel("facial")
    r = router(sms=sms, team_groups={"facial": team})
    assert r.channels(notice(surgeon_id=2), LANDLINE) == ["wechat:team:facial"]


def test_all_channels_failing_is_one_failure_and_nothing_is_split_off():
    outbox = MemoryOutbox()
    sms, team = Channel("sms"), Channel("facial")
    sms.down = team.down = True
    r = router(outbox, sms=sms, team_groups={"facial": team})
    with pytest.raises(NotifyError) as caught:
        r.send(notice(), ZHANG)
    assert str(caught.value) == "sms: sms is down; wechat:team:facial: facial is down"
    assert outbox.keys() == set()


def test_a_partial_failure_splits_off_the_failed_channel_and_never_resends_the_sms():
    outbox = MemoryOutbox()
    sms, team = Channel("sms"), Channel("facial")
    r = router(outbox, sms=sms, team_groups={"facial": team})
    first = notice()
    outbox.add([first])
    team.down = True
    # The deliver job sends it: the SMS goes out, the group fails -> sent, split off.
    assert deliver_notices(outbox, r, SURGEONS, T0).sent == 1
    assert outbox.row("missed:c1:1").sent_at == T0
    assert sms.sent == [("missed:c1:1", 1)] and team.sent == []
    split = outbox.row("missed:c1:1#wechat:team:facial").notice
    assert split.due_at == T0 + RETRY_FIRST and split.surgeon_id == 1
    assert (split.kind, split.team, split.text_zh) == (first.kind, first.team, first.text_zh)
    # Still down at the retry: it fails on its own, with backoff; no SMS.
    assert deliver_notices(outbox, r, SURGEONS, T0 + RETRY_FIRST).failed == 1
    later = T0 + RETRY_FIRST + timedelta(minutes=1)
    team.down = False
    assert deliver_notices(outbox, r, SURGEONS, later).sent == 1
    assert team.sent == [("missed:c1:1#wechat:team:facial", 1)]
    assert sms.sent == [("missed:c1:1", 1)]  # exactly once
    assert deliver_notices(outbox, r, SURGEONS, later + timedelta(hours=1)) == (0, 0, 0)


def test_an_outbox_failure_while_splitting_fails_the_whole_notice():
    class BrokenOutbox(MemoryOutbox):
        def add(self, notices):
            raise OSError("database away")

    sms, team = Channel("sms"), Channel("facial")
    team.down = True
    r = router(BrokenOutbox(), sms=sms, team_groups={"facial": team})
    with pytest.raises(NotifyError) as caught:
        r.send(notice(), ZHANG)
    assert "whole notice is retried" in str(caught.value)


def test_a_pinned_notice_whose_channel_is_gone_fails():
    r = router(sms=Channel("sms"))
    with pytest.raises(NotifyError, match="not configured"):
        r.send(notice("missed:c1:1#wechat:team:facial"), ZHANG)


def test_a_crashing_channel_counts_as_a_failed_channel(caplog):
    class Crashing(Channel):
        def send(self, notice, recipient):
            raise KeyError("bug")

    outbox, sms = MemoryOutbox(), Channel("sms")
    r = router(outbox, sms=sms, team_groups={"facial": Crashing("facial")})
    with caplog.at_level(logging.ERROR):
        r.send(notice(), ZHANG)
    assert sms.sent and "missed:c1:1#wechat:team:facial" in outbox.keys()
    assert any("crashed" in rec.getMessage() for rec in caplog.records)


def test_pinned_channel_parsing():
    assert pinned_channel("gap:gap:facial:-:open:open:desk#wechat:desk") == "wechat:desk"
    assert pinned_channel("missed:c:1#wechat:team:facial") == "wechat:team:facial"
    assert pinned_channel("missed:c:1#fax") is None
    assert pinned_channel("missed:c:1") is None


def test_roster_notices_route_the_same_way():
    desk = Channel("desk")
    r = router(desk_group=desk)
    r.send(notice("gap:x:desk", None, kind=ROSTER_GAP), None)
    assert desk.sent == [("gap:x:desk", None)]


def test_describe_names_channels_only():
    r = router(sms=Channel("s"), desk_group=Channel("d"),
               team_groups={"replant": Channel("r"), "facial": Channel("f")})
    assert r.describe() == ["sms", "wechat:desk", "wechat:team:facial", "wechat:team:replant"]
