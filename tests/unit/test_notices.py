"""Roster notices: shift reminders, daily digests, roster alerts, the next handoff. Time passed in."""
from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from oncall.notices import (ROSTER_DIGEST, ROSTER_GAP, SHIFT_REMINDER, Notice, clean,
                            digests_due, gap_alerts, next_handoff, roster_digest,
                            shift_reminders)
from oncall.rotation import Leave, Override, Rotation

UTC = timezone.utc
SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
P, B, A, H = Role.PRIMARY, Role.BACKUP, Role.ATTENDING, Role.DEPARTMENT_HEAD
MIN = timedelta(minutes=1)
NAMES = {"facial": ("颌面部创伤", "Facial"), "replant": ("断肢(指)再植", "Replant"),
         "berlin": ("柏林组", "Berlin")}


def sh(mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, s, tzinfo=SH)


def team(code: str, **kw) -> Team:
    zh, en = NAMES.get(code, (code, code))
    return Team(code, zh, en, **kw)


def roster(*, rotations=(), shifts=(), overrides=(), leave=(), teams=None, names=None) -> Roster:
    teams = teams or {"facial": team("facial"), "replant": team("replant")}
    surgeons = {i: Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in range(1, 30)}
    for sid, name in (names or {}).items():
        surgeons[sid] = Surgeon(sid, name, f"1390000{sid:04d}")
    return Roster(teams=teams, surgeons=surgeons, rotations=tuple(rotations), shifts=tuple(shifts),
                  overrides=tuple(overrides), leave=tuple(leave))


# facial: primary 1/2 and backup 3/4, daily at 08:00 from 1 March; replant: 11/12 and 13
FULL = [
    Rotation.daily("facial", P, [1, 2], date(2026, 3, 1)),
    Rotation.daily("facial", B, [3, 4], date(2026, 3, 1)),
    Rotation.daily("replant", P, [11, 12], date(2026, 3, 1)),
    Rotation.daily("replant", B, [13, 14], date(2026, 3, 1)),
]


def keys(notices: list[Notice]) -> list[str]:
    return [n.key for n in notices]


# --------------------------------------------------------------------------- reminders


def test_a_stint_starting_exactly_lead_ahead_is_reminded():
    # 2 March 08:00 Shanghai: facial primary 1 -> 2, backup 3 -> 4
    got = [n for n in shift_reminders(roster(rotations=FULL), sh(3, 2, 7, 30)) if n.team == "facial"]
    assert keys(got) == ["remind:facial:backup:4:20260302T000000Z",
                         "remind:facial:primary:2:20260302T000000Z"]
    primary = got[1]
    assert (primary.kind, primary.surgeon_id, primary.due_at) == (SHIFT_REMINDER, 2, sh(3, 2, 7, 30))
    assert primary.due_at.tzinfo is UTC
    assert primary.text_zh == ("【96608值班提醒】医生2医生：您的颌面部创伤一线值班于3月2日 08:00开始，"
                               "至3月3日 08:00。请保持手机畅通，来电按1接听。")
    assert primary.text_en.startswith("96608 on-call reminder: 医生2, your Facial primary shift "
                                      "starts 2 Mar 08:00 until 3 Mar 08:00.")


def test_a_stint_starting_a_minute_after_the_lead_waits_for_the_next_run():
    r = roster(rotations=FULL)
    assert shift_reminders(r, sh(3, 2, 7, 29)) == []
    assert shift_reminders(r, sh(3, 2, 7, 29, 59)) == []
    assert len(shift_reminders(r, sh(3, 2, 7, 30))) == 4  # two roles in each of two teams


def test_a_restart_replays_the_same_reminders_within_the_lookback_and_no_later():
    r = roster(rotations=FULL)
    first = shift_reminders(r, sh(3, 2, 7, 30))
    for now in (sh(3, 2, 7, 45), sh(3, 2, 8, 0), sh(3, 2, 8, 29)):
        assert shift_reminders(r, now) == first  # same keys, same texts, same due times
    assert shift_reminders(r, sh(3, 2, 8, 30)) == []  # the start is lookback ago: too late


def test_the_lead_and_lookback_are_parameters():
    r = roster(rotations=FULL[:1], teams={"facial": team("facial")})
    assert keys(shift_reminders(r, sh(3, 2, 6, 0), lead=timedelta(hours=2))) == [
        "remind:facial:primary:2:20260302T000000Z"]
    assert shift_reminders(r, sh(3, 2, 8, 10), lookback=timedelta(minutes=5)) == []


def test_a_surgeon_who_carries_on_is_not_reminded():
    r = roster(rotations=[Rotation.daily("facial", P, [1], date(2026, 3, 1))],
               teams={"facial": team("facial")})
    # slot after slot of a one-member rotation: one stint, reminded when it begins
    assert keys(shift_reminders(r, sh(3, 1, 7, 40))) == ["remind:facial:primary:1:20260301T000000Z"]
    assert shift_reminders(r, sh(3, 2, 7, 40)) == []
    assert shift_reminders(r, sh(3, 2, 8, 0)) == []


def test_an_override_by_the_same_surgeon_right_after_their_slot_continues_the_stint():
    r = roster(rotations=FULL[:2], teams={"facial": team("facial")},
               overrides=[Override("facial", P, 1, sh(3, 2, 8), sh(3, 2, 12))])
    got = shift_reminders(r, sh(3, 2, 7, 30))
    assert keys(got) == ["remind:facial:backup:4:20260302T000000Z"]
    # ... and 2 takes over when the override ends
    [two] = shift_reminders(r, sh(3, 2, 11, 30))
    assert (two.surgeon_id, two.key) == (2, "remind:facial:primary:2:20260302T040000Z")
    assert "于3月2日 12:00开始，至3月3日 08:00" in two.text_zh


def test_a_cover_and_the_return_from_it_are_each_reminded():
    r = roster(rotations=FULL[:2], teams={"facial": team("facial")},
               overrides=[Override("facial", P, 5, sh(3, 2, 12), sh(3, 2, 14), replaces=2)])
    assert [(n.surgeon_id, n.due_at) for n in shift_reminders(r, sh(3, 2, 11, 30))] == [
        (5, sh(3, 2, 11, 30))]
    [cover] = shift_reminders(r, sh(3, 2, 11, 30))
    assert "于3月2日 12:00开始，至3月2日 14:00" in cover.text_zh
    assert [n.surgeon_id for n in shift_reminders(r, sh(3, 2, 13, 30))] == [2]


def test_a_surgeon_back_from_leave_is_reminded_and_one_on_leave_is_not():
    r = roster(rotations=FULL[:2], teams={"facial": team("facial")},
               leave=[Leave(2, sh(3, 2, 0), sh(3, 2, 10))])
    assert keys(shift_reminders(r, sh(3, 2, 7, 30))) == ["remind:facial:backup:4:20260302T000000Z"]
    assert keys(shift_reminders(r, sh(3, 2, 9, 30))) == ["remind:facial:primary:2:20260302T020000Z"]


def test_a_one_off_shift_is_reminded_with_its_end():
    r = roster(shifts=[Shift("replant", 7, A, sh(3, 3, 20), sh(3, 4, 8))])
    [n] = shift_reminders(r, sh(3, 3, 19, 45))
    assert n.key == "remind:replant:attending:7:20260303T120000Z"
    assert "断肢(指)再植主治值班于3月3日 20:00开始，至3月4日 08:00" in n.text_zh


def test_a_stint_begun_by_two_sources_at_once_is_one_reminder():
    r = roster(rotations=FULL[:1], teams={"facial": team("facial")},
               shifts=[Shift("facial", 2, P, sh(3, 2, 8), sh(3, 2, 12))])
    assert keys(shift_reminders(r, sh(3, 2, 7, 45))) == ["remind:facial:primary:2:20260302T000000Z"]


def test_a_stint_longer_than_a_day_is_reminded_without_an_end():
    r = roster(rotations=[Rotation.weekly("facial", P, [1, 2], date(2026, 3, 2))],
               teams={"facial": team("facial")})
    [n] = shift_reminders(r, sh(3, 2, 7, 45))
    assert "于3月2日 08:00开始。" in n.text_zh and "至" not in n.text_zh


def test_reminders_need_an_aware_now():
    with pytest.raises(ValueError):
        shift_reminders(roster(rotations=FULL), datetime(2026, 3, 2, 7, 30))


# --------------------------------------------------------------------------- digests


def test_the_digest_is_due_from_07_30_local_until_midnight_in_shanghai():
    r = roster(rotations=FULL, teams={"facial": team("facial", department_head=9)})
    assert digests_due(r, sh(3, 2, 7, 29)) == []
    at_time = digests_due(r, sh(3, 2, 7, 30))
    assert keys(at_time) == ["digest:facial:2026-03-02:9"]
    assert at_time[0].due_at == sh(3, 2, 7, 30) and at_time[0].kind == ROSTER_DIGEST
    assert digests_due(r, sh(3, 2, 23, 59)) == at_time  # a restart late in the day: same notice
    assert digests_due(r, sh(3, 3, 0, 10)) == []  # yesterday's is not made again
    assert keys(digests_due(r, sh(3, 3, 7, 30))) == ["digest:facial:2026-03-03:9"]


@pytest.mark.parametrize("day, due_utc", [
    (date(2026, 3, 29), datetime(2026, 3, 29, 5, 30, tzinfo=UTC)),  # spring forward: CEST
    (date(2026, 3, 28), datetime(2026, 3, 28, 6, 30, tzinfo=UTC)),  # still CET
    (date(2026, 10, 25), datetime(2026, 10, 25, 6, 30, tzinfo=UTC)),  # fall back: CET again
])
def test_the_digest_follows_a_daylight_saving_zone(day, due_utc):
    r = roster(rotations=[Rotation.daily("berlin", P, [1, 2], date(2026, 3, 1))],
               teams={"berlin": team("berlin", tz="Europe/Berlin")})
    assert digests_due(r, due_utc - MIN) == []
    [n] = digests_due(r, due_utc)
    assert (n.key, n.due_at, n.surgeon_id) == (f"digest:berlin:{day.isoformat()}:desk", due_utc, None)
    assert n.text_zh.splitlines()[0].endswith("（Europe/Berlin时间）")


def test_the_berlin_digest_on_the_spring_forward_day_shows_local_handoffs():
    r = roster(rotations=[Rotation.daily("berlin", P, [1, 2], date(2026, 3, 1))],
               teams={"berlin": team("berlin", tz="Europe/Berlin")})
    [n] = roster_digest(r, "berlin", date(2026, 3, 29), datetime(2026, 3, 29, 6, tzinfo=UTC))
    assert n.text_zh.splitlines()[1] == ("一线：医生2（3月29日 00:00–3月29日 08:00），"
                                         "医生1（3月29日 08:00–3月30日 00:00）")


def test_shanghai_and_berlin_digests_fall_due_at_their_own_07_30():
    r = roster(rotations=FULL[:1], teams={"facial": team("facial"),
                                          "berlin": team("berlin", tz="Europe/Berlin")})
    now = datetime(2026, 3, 2, 5, 0, tzinfo=UTC)  # 13:00 Shanghai, 06:00 Berlin
    assert keys(digests_due(r, now)) == ["digest:facial:2026-03-02:desk"]
    assert keys(digests_due(r, now + timedelta(hours=1, minutes=30))) == [
        "digest:berlin:2026-03-02:desk", "digest:facial:2026-03-02:desk"]


def test_the_digest_lists_each_role_and_the_problems_of_today_and_tomorrow():
    r = roster(rotations=FULL, overrides=[Override("facial", P, 5, sh(3, 2, 12), sh(3, 2, 14))],
               leave=[Leave(3, sh(3, 3, 8), sh(3, 3, 20))])  # 3 is backup on the 3rd
    [n] = roster_digest(r, "facial", date(2026, 3, 2), sh(3, 2, 7, 30))
    assert n.text_zh.splitlines() == [
        "【96608排班日报】颌面部创伤 3月2日（周一）",
        "一线：医生1（3月2日 00:00–3月2日 08:00），医生2（3月2日 08:00–3月2日 12:00），"
        "医生5（3月2日 12:00–3月2日 14:00），医生2（3月2日 14:00–3月3日 00:00）",
        "二线：医生3（3月2日 00:00–3月2日 08:00），医生4（3月2日 08:00–3月3日 00:00）",
        "主治：无",
        "科主任：无",
        "排班问题（今明两天）：",
        "- 颌面部创伤：医生3 3月3日 08:00 至 3月3日 20:00请假，其二线班无人顶班",
        "- 颌面部创伤：3月3日 08:00 至 3月3日 20:00，呼叫升级顺序只有1人（少于2人）",
    ]
    assert n.text_en.splitlines()[0] == "96608 roster digest: Facial, Mon 2 Mar 2026"
    assert n.text_en.splitlines()[-1] == ("- Facial: the escalation chain has 1 person "
                                          "3 Mar 08:00–3 Mar 20:00 (fewer than 2)")


def test_a_clean_day_says_so():
    [n] = roster_digest(roster(rotations=FULL), "replant", date(2026, 3, 2), sh(3, 2, 8))
    assert n.text_zh.splitlines()[-1] == "排班问题（今明两天）：无"
    assert n.text_en.splitlines()[-1] == "Roster problems (today and tomorrow): none"


def test_the_digest_goes_to_the_department_heads_on_call_at_digest_time_or_to_the_desk():
    heads = [Rotation.daily("facial", H, [20, 21], date(2026, 3, 1), at=time(7, 0)),
             Rotation.daily("facial", H, [22], date(2026, 3, 1), at=time(7, 0))]
    r = roster(rotations=FULL + heads)
    # 7:00 on the 2nd: 21 takes over from 20; 22 is head throughout
    got = roster_digest(r, "facial", date(2026, 3, 2), sh(3, 2, 23))
    assert keys(got) == ["digest:facial:2026-03-02:21", "digest:facial:2026-03-02:22"]
    assert [n.surgeon_id for n in got] == [21, 22] and got[0].text_zh == got[1].text_zh
    # a configured head wins; one nobody has falls back to the desk
    fixed = roster(rotations=FULL + heads, teams={"facial": team("facial", department_head=7)})
    assert keys(roster_digest(fixed, "facial", date(2026, 3, 2), sh(3, 2, 8))) == [
        "digest:facial:2026-03-02:7"]
    ghost = roster(rotations=FULL, teams={"facial": team("facial", department_head=999)})
    assert keys(roster_digest(ghost, "facial", date(2026, 3, 2), sh(3, 2, 8))) == [
        "digest:facial:2026-03-02:desk"]


def test_a_digest_for_an_unknown_team_is_nothing():
    assert roster_digest(roster(rotations=FULL), "nurse", date(2026, 3, 2), sh(3, 2, 8)) == []


# --------------------------------------------------------------------------- roster alerts


def test_a_full_roster_raises_no_alert():
    assert gap_alerts(roster(rotations=FULL), sh(3, 2, 9)) == []


def test_a_gap_is_alerted_to_the_head_and_the_desk_with_a_key_that_holds_while_time_passes():
    r = roster(rotations=FULL, teams={"facial": team("facial", department_head=9),
                                      "replant": team("replant")},
               leave=[Leave(1, sh(3, 5, 10), sh(3, 5, 11))])  # 1 is primary on the 5th
    first = gap_alerts(r, sh(3, 2, 9))
    gap = [n for n in first if n.key.startswith("gap:gap:")]
    assert keys(gap) == ["gap:gap:facial:-:20260305T020000Z:20260305T030000Z:9",
                         "gap:gap:facial:-:20260305T020000Z:20260305T030000Z:desk"]
    assert [n.surgeon_id for n in gap] == [9, None] and gap[0].kind == ROSTER_GAP
    assert gap[0].text_zh == "【96608排班预警】颌面部创伤：3月5日 10:00 至 3月5日 11:00，无一线值班"
    assert gap[0].text_en == ("96608 roster alert: Facial: nobody on call as primary "
                              "5 Mar 10:00–5 Mar 11:00")
    assert {n.key.rsplit(":", 1)[0] for n in first} == {
        "gap:gap:facial:-:20260305T020000Z:20260305T030000Z",
        "gap:on_leave:facial:1:20260305T020000Z:20260305T030000Z",
        "gap:short_chain:facial:-:20260305T020000Z:20260305T030000Z"}
    for later in (sh(3, 2, 9, 1), sh(3, 3, 12), sh(3, 5, 10, 30)):  # ... even while it lasts
        assert keys(gap_alerts(r, later)) == keys(first)
    assert gap_alerts(r, sh(3, 5, 11)) == []  # over


def test_a_changed_finding_is_alerted_again():
    before = roster(rotations=FULL, leave=[Leave(1, sh(3, 5, 10), sh(3, 5, 11))])
    after = roster(rotations=FULL, leave=[Leave(1, sh(3, 5, 10), sh(3, 5, 12))])
    old, new = set(keys(gap_alerts(before, sh(3, 2, 9)))), set(keys(gap_alerts(after, sh(3, 2, 9))))
    assert old and new and not old & new


def test_a_finding_beyond_the_horizon_waits_and_one_running_past_it_is_open():
    # facial's primary rotation ends on the 6th: a gap from then on, without an end
    r = roster(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1), until=date(2026, 3, 6)),
                          *FULL[1:]])
    assert [n for n in gap_alerts(r, sh(3, 2, 9), days=3)] == []
    got = [n for n in gap_alerts(r, sh(3, 2, 9)) if n.key.startswith("gap:gap:")]
    assert keys(got) == ["gap:gap:facial:-:20260306T000000Z:open:desk"]
    assert got[0].text_zh == "【96608排班预警】颌面部创伤：3月6日 08:00起（7天内未结束），无一线值班"
    for later in (sh(3, 3, 9), sh(3, 6, 9), sh(3, 7, 7, 59)):  # begun, still the same finding
        assert keys([n for n in gap_alerts(r, later) if n.key.startswith("gap:gap:")]) == keys(got)
    # a day after it began it is keyed open at both ends: once more, "still unresolved"
    late = [n for n in gap_alerts(r, sh(3, 7, 8)) if n.key.startswith("gap:gap:")]
    assert keys(late) == ["gap:gap:facial:-:open:open:desk"]
    assert late[0].text_zh == "【96608排班预警】颌面部创伤：目前起（7天内未结束），无一线值班"


def test_a_double_booking_goes_to_both_teams_heads():
    teams = {"facial": team("facial", department_head=9), "replant": team("replant", department_head=19)}
    # 1 is facial primary on the 3rd from 08:00
    r = roster(rotations=FULL, teams=teams, shifts=[Shift("replant", 1, A, sh(3, 3, 9), sh(3, 3, 11))])
    got = [n for n in gap_alerts(r, sh(3, 2, 9)) if n.key.startswith("gap:double_booked:")]
    assert keys(got) == [f"gap:double_booked:facial+replant:1:20260303T010000Z:20260303T030000Z:{r}"
                         for r in ("9", "19", "desk")]
    assert got[0].text_zh == "【96608排班预警】医生1 3月3日 09:00 至 3月3日 11:00同时在颌面部创伤和断肢(指)再植值班"


def test_an_unknown_zone_and_an_unknown_surgeon_are_alerted_once():
    r = roster(rotations=[Rotation.daily("facial", P, [1, 99], date(2026, 3, 1)), *FULL[1:]],
               teams={"facial": team("facial", tz="Mars/Olympus"), "replant": team("replant")})
    got = gap_alerts(r, sh(3, 2, 9))
    zone = [n for n in got if n.key.startswith("gap:bad_time_zone:")]
    assert keys(zone) == ["gap:bad_time_zone:facial:-:any:any:desk"]
    assert "时区设置 'Mars/Olympus' 无效" in zone[0].text_zh
    [unknown] = [n for n in got if n.key.startswith("gap:unknown_surgeon:")]
    assert unknown.key == "gap:unknown_surgeon:facial:99:any:any:desk"
    assert "排班中的医生编号99不在医生名单中" in unknown.text_zh
    for later in (sh(3, 3, 9), sh(3, 4, 9)):  # its span moves with the slots; its key does not
        data_errors = {n.key for n in gap_alerts(r, later)
                       if not n.key.startswith(("gap:gap:", "gap:short"))}
        assert data_errors == {zone[0].key, unknown.key}


# --------------------------------------------------------------------------- next handoff


def test_the_next_handoff_of_daily_rotations():
    r = roster(rotations=FULL)
    assert next_handoff(r, ["facial", "replant"], sh(3, 2, 7)) == sh(3, 2, 8)
    assert next_handoff(r, ["facial"], sh(3, 2, 8)) == sh(3, 3, 8)  # strictly after
    assert next_handoff(r, ["facial"], sh(3, 2, 8, 0) + timedelta(seconds=1)) == sh(3, 3, 8)
    assert next_handoff(r, ["facial"], sh(3, 2, 7)).tzinfo is UTC


def test_overrides_and_leave_are_handoffs_of_their_own():
    r = roster(rotations=FULL, overrides=[Override("facial", P, 5, sh(3, 2, 12), sh(3, 2, 14))],
               leave=[Leave(14, sh(3, 2, 15), sh(3, 2, 16))])  # 14 is replant backup on the 2nd
    assert next_handoff(r, ["facial"], sh(3, 2, 8)) == sh(3, 2, 12)
    assert next_handoff(r, ["facial"], sh(3, 2, 12)) == sh(3, 2, 14)
    assert next_handoff(r, ["facial"], sh(3, 2, 14)) == sh(3, 3, 8)
    assert next_handoff(r, ["replant"], sh(3, 2, 14)) == sh(3, 2, 15)
    assert next_handoff(r, ["facial", "replant"], sh(3, 2, 15)) == sh(3, 2, 16)


def test_a_handoff_at_midnight_and_at_month_end():
    midnight = roster(rotations=[Rotation.daily("facial", P, [1, 2], date(2026, 3, 1), at=time(0, 0))])
    assert next_handoff(midnight, ["facial"], sh(3, 31, 23, 59)) == sh(4, 1, 0, 0)
    assert next_handoff(midnight, ["facial"], sh(4, 1, 0, 0)) == sh(4, 2, 0, 0)
    three_days = roster(rotations=[Rotation.every(3, "facial", P, [1, 2], date(2026, 3, 29))])
    assert next_handoff(three_days, ["facial"], sh(3, 30, 9)) == sh(4, 1, 8)
    daily = roster(rotations=FULL)
    assert next_handoff(daily, ["facial"], sh(2, 28, 9)) == sh(3, 1, 8)  # the rotation's start
    assert next_handoff(daily, ["facial"], sh(3, 31, 9)) == sh(4, 1, 8)


def test_a_daylight_saving_handoff_is_at_local_wall_time():
    r = roster(rotations=[Rotation.daily("berlin", P, [1, 2], date(2026, 3, 1))],
               teams={"berlin": team("berlin", tz="Europe/Berlin")})
    after = datetime(2026, 3, 28, 9, tzinfo=BERLIN)
    assert next_handoff(r, ["berlin"], after) == datetime(2026, 3, 29, 6, tzinfo=UTC)  # 08:00 CEST


def test_no_handoff_within_the_horizon_is_none():
    assert next_handoff(roster(), ["facial"], sh(3, 2, 7)) is None
    weekly = roster(rotations=[Rotation.weekly("facial", P, [1, 2], date(2026, 3, 2))])
    assert next_handoff(weekly, ["facial"], sh(3, 3, 9)) is None
    assert next_handoff(weekly, ["facial"], sh(3, 3, 9), horizon=timedelta(days=7)) == sh(3, 9, 8)
    assert next_handoff(roster(rotations=FULL), ["nurse"], sh(3, 2, 7)) is None
    assert next_handoff(roster(rotations=FULL), [], sh(3, 2, 7)) is None


def test_a_team_not_asked_about_does_not_wake_the_push():
    r = roster(rotations=[*FULL[:2], Rotation.daily("replant", P, [11, 12], date(2026, 3, 1),
                                                   at=time(7, 0))])
    assert next_handoff(r, ["facial"], sh(3, 2, 6)) == sh(3, 2, 8)
    assert next_handoff(r, ["facial", "replant"], sh(3, 2, 6)) == sh(3, 2, 7)


# --------------------------------------------------------------------------- names


EVIL = "张三\r\n【96608排班预警】伪造\u2028李四\u202e\x1b[31m"


def test_control_characters_in_names_never_add_lines():
    r = roster(rotations=FULL, names={2: EVIL, 4: EVIL},
               teams={"facial": team("facial"), "replant": Team("replant", "断肢\n再植", "Re\rplant")},
               leave=[Leave(4, sh(3, 2, 10), sh(3, 2, 12))])  # 4 is facial backup on the 2nd
    notices = (shift_reminders(r, sh(3, 2, 7, 30)) + digests_due(r, sh(3, 2, 8))
               + gap_alerts(r, sh(3, 2, 9)))
    assert {n.kind for n in notices} == {SHIFT_REMINDER, ROSTER_DIGEST, ROSTER_GAP}
    for n in notices:
        for line in n.text_zh.splitlines() + n.text_en.splitlines():
            assert line.isprintable(), line
    [reminder] = [n for n in notices if n.key == "remind:facial:primary:2:20260302T000000Z"]
    assert len(reminder.text_zh.splitlines()) == 1
    assert "张三 【96608排班预警】伪造 李四 [31m医生" in reminder.text_zh  # kept, on one line
    [digest] = [n for n in notices if n.key == "digest:facial:2026-03-02:desk"]
    assert len(digest.text_zh.splitlines()) == 8  # title, 4 roles, heading, 2 findings
    assert "- 颌面部创伤：张三 【96608排班预警】伪造 李四 [31m 3月2日 10:00 至" in digest.text_zh
    [replant] = [n for n in notices if n.key == "digest:replant:2026-03-02:desk"]
    assert replant.text_zh.splitlines()[0] == "【96608排班日报】断肢 再植 3月2日（周一）"


def test_clean_keeps_a_name_and_collapses_what_breaks_it():
    assert clean("欧阳娜娜") == "欧阳娜娜"
    assert clean("\u3400\U00020000") == "\u3400\U00020000"  # rare ideographs stay
    assert clean("  A\tB\n\nC\u0085D\u2029") == "A B C D"
    assert clean("A  B") == "A  B"  # spaces of its own are kept


def test_a_notice_is_checked_where_it_is_made():
    with pytest.raises(ValueError):
        Notice("k", "sms", "facial", 1, sh(3, 2), "", "")
    with pytest.raises(ValueError):
        Notice("k", SHIFT_REMINDER, "facial", 1, datetime(2026, 3, 2), "", "")
    with pytest.raises(ValueError):
        Notice("", SHIFT_REMINDER, "facial", 1, sh(3, 2), "", "")
    assert Notice("k", SHIFT_REMINDER, "facial", 1, sh(3, 2), "", "").due_at == datetime(
        2026, 3, 1, 16, tzinfo=UTC)
