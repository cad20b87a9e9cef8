"""The missed-call and callback-due notices (network.notifications): pure, no I/O."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from network.notifications import (DueCallback, MissedCall, callback_due_notices, cut_utf8, e164,
                                   mask_numbers, missed_call_notices, mobile_for_mention)
from oncall.model import Role, Roster, Shift, Surgeon, Team
from oncall.notices import CALLBACK_DUE, MISSED_CALL

SH = ZoneInfo("Asia/Shanghai")
T = datetime(2026, 12, 1, 9, 30, tzinfo=SH)
P, B = Role.PRIMARY, Role.BACKUP


def roster() -> Roster:
    # facial: surgeon 1 primary until 10:00, then 3; 2 backup all day. replant: nobody.
    return Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial trauma"),
               "replant": Team("replant", "断肢(指)再植", "Replantation")},
        surgeons={i: Surgeon(i, f"医生{i}", f"1370000010{i}") for i in range(1, 5)},
        shifts=(Shift("facial", 1, P, T - timedelta(hours=10), T.replace(hour=10, minute=0)),
                Shift("facial", 3, P, T.replace(hour=10, minute=0), T + timedelta(hours=10)),
                Shift("facial", 2, B, T - timedelta(hours=10), T + timedelta(hours=10))))


def missed(case_id="20261201-093000-ab12cd", team="facial", outcome="voicemail", number="13812345678",
           started=T, ended=T + timedelta(minutes=2), partner=False) -> MissedCall:
    return MissedCall(case_id, team, outcome, started, ended, number, partner)


def test_a_missed_call_goes_to_the_primary_at_the_call_s_start_and_the_desk():
    notices = missed_call_notices(roster(), [missed()])
    assert [(n.key, n.surgeon_id) for n in notices] == [
        ("missed:20261201-093000-ab12cd:1", 1), ("missed:20261201-093000-ab12cd:desk", None)]
    first = notices[0]
    assert first.kind == MISSED_CALL and first.team == "facial"
    assert first.due_at == T + timedelta(minutes=2)
    assert first.text_zh == ("【96608未接来电】颌面部创伤：12月1日 09:30 来电 13812345678，"
                             "无医生接听（来电者已留言）。病例 20261201-093000-ab12cd，请尽快回拨。")
    assert first.text_en == ("96608 missed call: Facial trauma, 1 Dec 09:30 from 13812345678; "
                             "no surgeon accepted (the caller left a voicemail). "
                             "Case 20261201-093000-ab12cd; please call back soon.")


def test_the_primary_is_fixed_by_the_call_not_by_when_the_notice_is_made():
    # Made again after the 10:00 handoff, the same call still names surgeon 1.
    again = missed_call_notices(roster(), [missed(started=T.replace(minute=59))])
    later = missed_call_notices(roster(), [missed(case_id="c2", started=T.replace(hour=10, minute=1))])
    assert again[0].surgeon_id == 1 and later[0].surgeon_id == 3


def test_an_abandoned_call_withheld_number_and_a_partner_hospital():
    [n, _] = missed_call_notices(roster(), [missed(outcome="abandoned", number=None)])
    assert "（号码未显示）" in n.text_zh and "来电者已挂断" in n.text_zh
    assert "(number withheld)" in n.text_en
    [p, _] = missed_call_notices(roster(), [missed(number="043188888888", partner=True)])
    assert "043188888888（合作医院）" in p.text_zh and "(partner hospital)" in p.text_en
    named = MissedCall("c9", "facial", "voicemail", T, T, "043188888888", True, "吉林市\n中心医院")
    [h, _] = missed_call_notices(roster(), [named])
    assert "043188888888（合作医院：吉林市 中心医院）" in h.text_zh  # a name adds no line
    assert "(partner hospital: 吉林市 中心医院)" in h.text_en


def test_a_hostile_number_is_never_written_as_it_came():
    [n, _] = missed_call_notices(roster(), [missed(number="138\r\n<script>")])
    assert "<script>" not in n.text_zh and "\n" not in n.text_zh and "号码未显示" in n.text_zh


@pytest.mark.parametrize("outcome", ["connected", "nurse", "fallback", "in-progress"])
def test_other_outcomes_are_not_missed_calls(outcome):
    assert missed_call_notices(roster(), [missed(outcome=outcome)]) == []


def test_no_team_no_notice_and_a_gap_tells_only_the_desk():
    assert missed_call_notices(roster(), [missed(team="")]) == []
    [desk] = missed_call_notices(roster(), [missed(team="replant")])
    assert desk.surgeon_id is None and desk.key.endswith(":desk")
    [nurse] = missed_call_notices(roster(), [missed(team="nurse")])
    assert nurse.text_zh.startswith("【96608未接来电】值班护士：") and "duty nurse" in nurse.text_en


def test_the_same_call_makes_the_same_keys_on_every_run():
    first = missed_call_notices(roster(), [missed()])
    assert missed_call_notices(roster(), [missed()]) == first


def task(id=7, due=T, owner=None, team="facial", reason="voicemail", number="13812345678"):
    return DueCallback(id, "20261201-093000-ab12cd", reason, due, team, owner, number)


def test_a_due_callback_goes_to_its_owner_and_the_desk():
    notices = callback_due_notices(roster(), [task(owner=4)], now=T)
    assert [(n.key, n.surgeon_id) for n in notices] == [
        ("callback-due:7:20261201T013000Z:4", 4), ("callback-due:7:20261201T013000Z:desk", None)]
    n = notices[0]
    assert n.kind == CALLBACK_DUE and n.due_at == T and n.team == "facial"
    assert n.text_zh == ("【96608回拨提醒】颌面部创伤：回拨任务 #7 已到期（12月1日 09:30），"
                         "回拨 13812345678，原因：来电者留言。病例 20261201-093000-ab12cd。")
    assert "callback #7 was due 1 Dec 09:30; call 13812345678 back" in n.text_en


def test_a_callback_without_an_owner_goes_to_the_primary_at_its_due_time():
    at_ten = callback_due_notices(roster(), [task(due=T.replace(hour=10, minute=5))],
                                  now=T + timedelta(hours=1))
    assert [n.surgeon_id for n in at_ten] == [3, None]
    no_team = callback_due_notices(roster(), [task(team=None, reason="requested")], now=T)
    assert [n.surgeon_id for n in no_team] == [None]
    assert "来电者要求回拨" in no_team[0].text_zh


def test_a_callback_not_yet_due_is_not_announced_and_a_moved_one_is_again():
    assert callback_due_notices(roster(), [task(due=T + timedelta(seconds=1))], now=T) == []
    moved = callback_due_notices(roster(), [task(due=T + timedelta(hours=1))],
                                 now=T + timedelta(hours=1))
    first = callback_due_notices(roster(), [task()], now=T)
    assert {n.key for n in moved}.isdisjoint({n.key for n in first})


def test_mask_numbers_keeps_the_last_four_digits_and_leaves_ids_and_times():
    assert mask_numbers("来电 13812345678，回拨 043188888888。") == "来电 ****5678，回拨 ****8888。"
    assert mask_numbers("from +8613812345678 (intl 0044201234567)") == "from ****5678 (intl ****4567)"
    kept = "病例 20261201-093000-ab12cd 回拨任务 #1234567 12月1日 09:30 20261201T013000Z 110 12345"
    assert mask_numbers(kept) == kept


def test_cut_utf8_never_splits_a_character():
    text = "急" * 10
    for limit in range(3, 31):
        cut = cut_utf8(text, limit)
        assert len(cut.encode()) <= limit
        assert cut == text or cut.endswith("…")
    assert cut_utf8("abc", 3) == "abc"
    with pytest.raises(ValueError):
        cut_utf8("急急", 2)


def test_e164_and_mentions():
    assert e164("13700000101") == "+8613700000101"
    assert e164("+86 137 0000 0101") == "+8613700000101"
    assert e164("0086 13700000101") == "+8613700000101"
    assert e164("004420123456") == "+4420123456"
    assert e164("043188888888") is None  # a landline takes no SMS
    assert e164("12345") is None and e164("hello") is None and e164("") is None
    assert mobile_for_mention("+8613700000101") == "13700000101"
    assert mobile_for_mention("004420123456") is None
