"""iCal feeds of the roster and iCal files into an ImportPlan: round trips, foreign
calendars (Outlook), every problem, daylight saving and hostile input."""
from __future__ import annotations

import re
import time as clock
import warnings
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, GloballyUniqueTZIDGuessed

from oncall.model import Role, Roster, Shift, Surgeon, Team
from oncall.roster_ical import (
    MAX_BYTES,
    MAX_OCCURRENCES,
    MAX_SERIES,
    merge_pieces,
    parse_roster_ical,
    shift_uid,
    surgeon_calendar,
    team_calendar,
)
from oncall.roster_import import Severity
from oncall.rotation import Leave, Override, Rotation, shifts_between

SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc
P, B, A, H = Role.PRIMARY, Role.BACKUP, Role.ATTENDING, Role.DEPARTMENT_HEAD
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=SH)


def sh(mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(2026, mo, d, h, mi, tzinfo=SH)


FACIAL = Team("facial", "颌面部创伤", "Facial & craniomaxillofacial trauma")
REPLANT = Team("replant", "断肢(指)再植", "Limb & digit replantation")
SURGEONS = {
    101: Surgeon(101, "王建国", "13800000101"),
    102: Surgeon(102, "李明", "13800000102"),
    103: Surgeon(103, "张伟", "13800000103"),
    104: Surgeon(104, "刘洋", "13800000104"),
    201: Surgeon(201, "陈志强", "13800000201"),
}


def roster(*, surgeons=None, teams=(FACIAL, REPLANT), **kw) -> Roster:
    return Roster(teams={t.code: t for t in teams}, surgeons=surgeons or SURGEONS, **kw)


# facial: primary 102, 103, 104 daily at 08:00 from 1 March; 101 covers 104 on the
# night of 3 March; 103 is on leave on 5 March (local day).
ROSTER = roster(
    rotations=(Rotation.daily("facial", P, [102, 103, 104], date(2026, 3, 1)),),
    overrides=(Override("facial", P, 101, sh(3, 3, 20), sh(3, 4, 8), replaces=104),),
    leave=(Leave(103, sh(3, 5), sh(3, 6)),),
)
WINDOW = (sh(3, 2, 8), sh(3, 8, 8))


def lines(feed: bytes) -> list[bytes]:
    assert feed.endswith(b"\r\n")
    return feed[:-2].split(b"\r\n")


def unfolded(feed: bytes) -> list[str]:
    return feed.decode("utf-8").replace("\r\n ", "").split("\r\n")[:-1]


def events(feed: bytes):
    return Calendar.from_ical(feed).events


def key(shift) -> tuple:
    return (shift.team, shift.surgeon_id, shift.role, shift.start.astimezone(UTC),
            shift.end.astimezone(UTC))


# --------------------------------------------------------------------------- export


def test_team_feed_has_one_event_per_piece_in_force():
    feed = team_calendar(ROSTER, "facial", *WINDOW, now=NOW)
    pieces = shifts_between(ROSTER, "facial", *WINDOW)
    got = sorted((int(e["X-HOTLINE-SURGEON"]), Role(str(e["X-HOTLINE-ROLE"])),
                  e["DTSTART"].dt, e["DTEND"].dt) for e in events(feed))
    assert got == sorted((p.surgeon_id, p.role, p.start, p.end) for p in pieces)
    # the override and the leave are in force: 101 at night on the 3rd, nobody on the 5th until 103's leave ends
    assert (101, P, sh(3, 3, 20), sh(3, 4, 8)) in got
    assert (104, P, sh(3, 3, 8), sh(3, 3, 20)) in got
    assert (103, P, sh(3, 6), sh(3, 6, 8)) in got
    assert not any(lo <= sh(3, 5, 12) < hi for _, _, lo, hi in got)  # nobody stands in for the leave


def test_feed_headers_and_event_properties():
    feed = team_calendar(ROSTER, "facial", *WINDOW, now=NOW)
    text = unfolded(feed)
    for line in ("VERSION:2.0", "CALSCALE:GREGORIAN", "METHOD:PUBLISH",
                 "X-WR-CALNAME:96608 颌面部创伤 值班表", "X-WR-TIMEZONE:Asia/Shanghai",
                 "REFRESH-INTERVAL;VALUE=DURATION:PT1H", "X-PUBLISHED-TTL:PT1H"):
        assert line in text
    assert any(line.startswith("PRODID:") for line in text)
    # every time is UTC in the plain form, DTSTAMP is `now`
    for line in text:
        if line.startswith(("DTSTART", "DTEND", "DTSTAMP")):
            assert re.fullmatch(r"(DTSTART|DTEND|DTSTAMP):\d{8}T\d{6}Z", line), line
    assert "DTSTAMP:20260301T010000Z" in text
    night = next(e for e in events(feed) if int(e["X-HOTLINE-SURGEON"]) == 101)
    assert str(night["SUMMARY"]) == "颌面部创伤 一线值班 · 王建国"
    assert "一线" in str(night["DESCRIPTION"]) and "颌面部创伤" in str(night["DESCRIPTION"])
    assert night["CATEGORIES"].cats == ["一线"]
    assert str(night["X-HOTLINE-TEAM"]) == "facial"
    assert str(night["X-HOTLINE-ROLE"]) == "primary"
    assert str(night["UID"]).endswith("@96608.hotline")
    assert str(night["UID"]) == shift_uid(Shift("facial", 101, P, sh(3, 3, 20), sh(3, 4, 8)))


def test_english_feed():
    feed = team_calendar(ROSTER, "facial", *WINDOW, now=NOW, lang="en")
    text = unfolded(feed)
    assert "X-WR-CALNAME:96608 Facial & craniomaxillofacial trauma on-call roster" in text
    night = next(e for e in events(feed) if int(e["X-HOTLINE-SURGEON"]) == 101)
    assert str(night["SUMMARY"]) == "Facial & craniomaxillofacial trauma primary on call · 王建国"


def test_uid_is_stable_across_exports_and_dtstamp_follows_now():
    first = events(team_calendar(ROSTER, "facial", *WINDOW, now=NOW))
    later = events(team_calendar(ROSTER, "facial", *WINDOW, now=NOW + timedelta(days=3)))
    assert [str(e["UID"]) for e in first] == [str(e["UID"]) for e in later]
    assert len({str(e["UID"]) for e in first}) == len(first)
    assert {e["DTSTAMP"].dt for e in later} == {(NOW + timedelta(days=3)).astimezone(UTC)}
    # the same instant written in another zone is the same shift
    assert shift_uid(Shift("facial", 1, P, sh(3, 1, 8), sh(3, 2, 8))) == shift_uid(
        Shift("facial", 1, P, sh(3, 1, 8).astimezone(BERLIN), sh(3, 2, 8)))


def test_crlf_and_folding_at_75_octets():
    long_team = Team("facial", "颌面部创伤" * 12, "Facial " * 20)
    feed = team_calendar(roster(teams=(long_team,), rotations=ROSTER.rotations),
                         "facial", *WINDOW, now=NOW)
    assert b"\n" not in feed.replace(b"\r\n", b"")
    assert b"\r" not in feed.replace(b"\r\n", b"")
    physical = lines(feed)
    assert all(len(line) <= 75 for line in physical)
    assert any(line.startswith(b" ") for line in physical)  # folding really happened
    feed.decode("utf-8")  # no fold splits a multi-byte character: still valid UTF-8
    for line in physical:
        line.decode("utf-8")


@pytest.mark.parametrize("name", [
    "刘洋\r\nX-EVIL:1", "刘洋\nEND:VEVENT\nBEGIN:VEVENT", "刘洋\rX-EVIL:1", "刘洋;X-EVIL=1:2,3",
    "刘洋\u2028X-EVIL:1", "刘洋\x0bX-EVIL:1\x85X-EVIL:2", "刘洋\\nX-EVIL:1", "刘洋\x00",
])
def test_names_cannot_inject_properties(name):
    surgeons = {**SURGEONS, 104: Surgeon(104, name, "13800000104")}
    team = Team("facial", "颌面部创伤\nX-EVIL:team", "Facial;x,y")
    r = roster(surgeons=surgeons, teams=(team,), rotations=ROSTER.rotations)
    for lang in ("zh", "en"):
        for feed_is_team, feed in ((True, team_calendar(r, "facial", *WINDOW, now=NOW, lang=lang)),
                                   (False, surgeon_calendar(r, 104, *WINDOW, now=NOW, lang=lang))):
            assert not any(line.upper().startswith(b"X-EVIL") for line in lines(feed))
            assert all(len(line) <= 75 for line in lines(feed))
            cal = Calendar.from_ical(feed)
            assert "X-EVIL" not in cal
            evs = cal.events
            assert evs and all("X-EVIL" not in e for e in evs)
            pieces = merge_pieces(shifts_between(r, "facial", *WINDOW))
            assert len(evs) == len([p for p in pieces if feed_is_team or p.surgeon_id == 104])
            assert {str(e["X-HOTLINE-TEAM"]) for e in evs} == {"facial"}
            mine = [e for e in evs if str(e["X-HOTLINE-SURGEON"]) == "104"]
            shown = re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", " ", name).strip()
            assert mine and all(str(e["SUMMARY"]).endswith(" · " + shown) for e in mine)  # kept as text
            for e in evs:
                for line in str(e["SUMMARY"]).splitlines()[1:]:
                    assert not line.startswith("X-EVIL")
            assert parse_roster_ical(feed, r).ok


def test_adjacent_pieces_of_one_surgeon_are_one_event():
    # a one-member rotation is one slot a day; an override by the same surgeon joins it too
    r = roster(rotations=(Rotation.daily("facial", H, [101], date(2026, 3, 1)),),
               overrides=(Override("facial", H, 101, sh(3, 8, 8), sh(3, 9, 8)),))
    feed = team_calendar(r, "facial", sh(3, 2), sh(3, 12), now=NOW)
    (event,) = events(feed)
    assert (event["DTSTART"].dt, event["DTEND"].dt) == (sh(3, 2), sh(3, 12))
    assert merge_pieces(shifts_between(r, "facial", sh(3, 2), sh(3, 12))) == [
        Shift("facial", 101, H, sh(3, 2).astimezone(UTC), sh(3, 12).astimezone(UTC))]


def test_surgeon_feed_covers_every_team_and_only_that_surgeon():
    r = roster(
        rotations=(Rotation.daily("facial", P, [102, 103], date(2026, 3, 1)),
                   Rotation.daily("replant", B, [102, 201], date(2026, 3, 2), at=time(20))),
    )
    feed = surgeon_calendar(r, 102, sh(3, 2), sh(3, 6), now=NOW)
    got = [(str(e["X-HOTLINE-TEAM"]), Role(str(e["X-HOTLINE-ROLE"])), e["DTSTART"].dt, e["DTEND"].dt)
           for e in events(feed)]
    expected = sorted(
        (p.team, p.role, p.start, p.end)
        for code in ("facial", "replant")
        for p in merge_pieces(shifts_between(r, code, sh(3, 2), sh(3, 6))) if p.surgeon_id == 102)
    assert sorted(got) == expected
    assert {team for team, *_ in got} == {"facial", "replant"}
    assert {str(e["X-HOTLINE-SURGEON"]) for e in events(feed)} == {"102"}
    text = unfolded(feed)
    assert "X-WR-CALNAME:96608 李明 值班表" in text
    assert "X-WR-TIMEZONE:Asia/Shanghai" in text
    replant = next(e for e in events(feed) if str(e["X-HOTLINE-TEAM"]) == "replant")
    assert str(replant["SUMMARY"]) == "断肢(指)再植 二线值班 · 李明"


def test_export_refuses_unknown_team_surgeon_naive_times_and_languages():
    with pytest.raises(LookupError):
        team_calendar(ROSTER, "nope", *WINDOW, now=NOW)
    with pytest.raises(LookupError):
        surgeon_calendar(ROSTER, 999, *WINDOW, now=NOW)
    with pytest.raises(ValueError):
        team_calendar(ROSTER, "facial", *WINDOW, now=datetime(2026, 3, 1))
    with pytest.raises(ValueError):
        team_calendar(ROSTER, "facial", datetime(2026, 3, 1), datetime(2026, 3, 2), now=NOW)
    with pytest.raises(ValueError):
        team_calendar(ROSTER, "facial", *WINDOW, now=NOW, lang="fr")


def test_an_empty_window_is_a_valid_empty_feed():
    feed = team_calendar(ROSTER, "replant", *WINDOW, now=NOW)
    assert events(feed) == []
    assert parse_roster_ical(feed, ROSTER).ok


# --------------------------------------------------------------------------- round trip


def test_round_trip_team_feed():
    feed = team_calendar(ROSTER, "facial", *WINDOW, now=NOW)
    expected = [key(s) for s in merge_pieces(shifts_between(ROSTER, "facial", *WINDOW))]
    plan = parse_roster_ical(feed, ROSTER, window=WINDOW)
    assert plan.ok, plan.report()
    assert sorted(key(s) for s in plan.shifts) == sorted(expected)
    assert plan.replace == {"facial": (WINDOW[0].astimezone(UTC), WINDOW[1].astimezone(UTC))}
    assert plan.lines == tuple(range(1, len(expected) + 1))
    # without a window, the span of the events
    plan = parse_roster_ical(feed, ROSTER)
    assert plan.ok and plan.replace == {"facial": (min(e[3] for e in expected), max(e[4] for e in expected))}
    # the team and role arguments agree with our own properties
    assert parse_roster_ical(feed, ROSTER, team="facial", role=P, window=WINDOW).ok


def test_round_trip_surgeon_feed_warns_that_it_replaces_the_whole_team():
    r = roster(rotations=(Rotation.daily("facial", P, [102, 103], date(2026, 3, 1)),
                          Rotation.daily("replant", B, [102, 201], date(2026, 3, 2))))
    feed = surgeon_calendar(r, 102, sh(3, 2), sh(3, 6), now=NOW, lang="en")
    plan = parse_roster_ical(feed, r, window=(sh(3, 2), sh(3, 6)))
    assert plan.ok
    assert {s.team for s in plan.shifts} == {"facial", "replant"}
    assert set(plan.replace) == {"facial", "replant"}
    assert [p.severity for p in plan.problems] == [Severity.WARNING]
    assert plan.problems[0].line == 0


def test_our_properties_must_agree_with_the_arguments():
    feed = team_calendar(ROSTER, "facial", *WINDOW, now=NOW)
    plan = parse_roster_ical(feed, ROSTER, team="replant", window=WINDOW)
    assert not plan.ok and not plan.shifts
    assert "the import is for replant" in plan.errors[0].message
    plan = parse_roster_ical(feed, ROSTER, role=B, window=WINDOW)
    assert not plan.ok


# --------------------------------------------------------------------------- foreign calendars

OUTLOOK = """\
BEGIN:VCALENDAR
PRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN
VERSION:2.0
METHOD:PUBLISH
X-WR-CALNAME:颌面外科值班
BEGIN:VTIMEZONE
TZID:China Standard Time
BEGIN:STANDARD
DTSTART:16010101T000000
TZOFFSETFROM:+0800
TZOFFSETTO:+0800
END:STANDARD
END:VTIMEZONE
BEGIN:VEVENT
CLASS:PUBLIC
UID:040000008200E00074C5B7101A82E00800000000A001
SUMMARY:值班
ATTENDEE;CN=王建国;RSVP=TRUE:mailto:wjg@hospital.example
ATTENDEE;CN=值班秘书;RSVP=TRUE:mailto:office@hospital.example
DTSTART;TZID="China Standard Time":20260302T080000
DTEND;TZID="China Standard Time":20260303T080000
X-MICROSOFT-CDO-BUSYSTATUS:BUSY
END:VEVENT
BEGIN:VEVENT
UID:backup-0302
SUMMARY:二线 13800000102
DTSTART;TZID=Asia/Shanghai:20260302T080000
DTEND;TZID=Asia/Shanghai:20260303T080000
END:VEVENT
BEGIN:VEVENT
UID:head-allday
SUMMARY:科主任 张伟
DTSTART;VALUE=DATE:20260302
DTEND;VALUE=DATE:20260304
END:VEVENT
BEGIN:VEVENT
UID:weekly-liming
SUMMARY:一线 李明
DTSTART;TZID=Asia/Shanghai:20260303T080000
DTEND;TZID=Asia/Shanghai:20260304T080000
RRULE:FREQ=WEEKLY;BYDAY=TU;UNTIL=20260330T160000Z
EXDATE;TZID=Asia/Shanghai:20260310T080000
END:VEVENT
BEGIN:VEVENT
UID:weekly-liming
RECURRENCE-ID;TZID=Asia/Shanghai:20260317T080000
SUMMARY:一线 张伟 (换班)
DTSTART;TZID=Asia/Shanghai:20260317T080000
DTEND;TZID=Asia/Shanghai:20260318T080000
END:VEVENT
BEGIN:VEVENT
UID:weekly-liming
RECURRENCE-ID;TZID=Asia/Shanghai:20260324T080000
STATUS:CANCELLED
SUMMARY:一线 李明
DTSTART;TZID=Asia/Shanghai:20260324T080000
DTEND;TZID=Asia/Shanghai:20260325T080000
END:VEVENT
BEGIN:VEVENT
UID:cancelled
STATUS:CANCELLED
SUMMARY:一线 刘洋
DTSTART:20260305T000000Z
DTEND:20260306T000000Z
END:VEVENT
BEGIN:VEVENT
UID:floating
SUMMARY:Backup: Liu Yang
DTSTART:20260305T080000
DURATION:P1D
END:VEVENT
END:VCALENDAR
"""
LIU = {**SURGEONS, 104: Surgeon(104, "Liu Yang", "13800000104")}
MARCH = (sh(3, 1), sh(4, 1))


def ics(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("utf-8")


def test_foreign_outlook_calendar():
    plan = parse_roster_ical(ics(OUTLOOK), roster(surgeons=LIU), team="facial", window=MARCH)
    assert plan.ok, plan.report()
    got = sorted((s.surgeon_id, s.role, s.start, s.end, line) for s, line in zip(plan.shifts, plan.lines))
    assert got == sorted([
        (101, P, sh(3, 2, 8), sh(3, 3, 8), 1),  # ATTENDEE CN, Outlook's own zone name
        (102, B, sh(3, 2, 8), sh(3, 3, 8), 2),  # phone in SUMMARY, IANA TZID
        (103, H, sh(3, 2, 8), sh(3, 4, 8), 3),  # all-day: 08:00 handoff to 08:00 after the last day
        (102, P, sh(3, 3, 8), sh(3, 4, 8), 4),  # weekly; the 10th is an EXDATE,
        (103, P, sh(3, 17, 8), sh(3, 18, 8), 5),  # the 17th moved to 张伟, the 24th cancelled
        (104, B, sh(3, 5, 8), sh(3, 6, 8), 8),  # floating = the team's zone; DURATION
    ])
    assert all(s.team == "facial" for s in plan.shifts)
    assert plan.replace == {"facial": (MARCH[0].astimezone(UTC), MARCH[1].astimezone(UTC))}


def test_role_argument_wins_over_summary_words_and_no_window_means_the_span():
    data = ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\n"
               "BEGIN:VEVENT\nUID:a\nSUMMARY:二线 王建国\nDTSTART;TZID=Asia/Shanghai:20260302T080000\n"
               "DTEND;TZID=Asia/Shanghai:20260303T080000\nEND:VEVENT\n"
               "BEGIN:VEVENT\nUID:b\nSUMMARY:二线 李明\nDTSTART;TZID=Asia/Shanghai:20260303T080000\n"
               "DTEND;TZID=Asia/Shanghai:20260304T080000\nEND:VEVENT\nEND:VCALENDAR\n")
    plan = parse_roster_ical(data, ROSTER, team="颌面部创伤", role=A)
    assert plan.ok, plan.report()
    assert [(s.surgeon_id, s.role) for s in plan.shifts] == [(101, A), (102, A)]
    assert plan.replace == {"facial": (sh(3, 2, 8).astimezone(UTC), sh(3, 4, 8).astimezone(UTC))}
    plan = parse_roster_ical(data, ROSTER, team="facial")
    assert {s.role for s in plan.shifts} == {B}


def test_a_file_cannot_change_how_another_file_reads_a_zone_name():
    # icalendar caches the first VTIMEZONE it sees per TZID, process-wide
    hostile = OUTLOOK.replace("+0800", "-0500")
    parse_roster_ical(ics(hostile), roster(surgeons=LIU), team="facial", window=MARCH)
    plan = parse_roster_ical(ics(OUTLOOK), roster(surgeons=LIU), team="facial", window=MARCH)
    assert plan.shifts[plan.lines.index(1)].start == sh(3, 2, 8)
    plan = parse_roster_ical(ics(hostile), roster(surgeons=LIU), team="facial", window=MARCH)
    assert plan.shifts[plan.lines.index(1)].start == datetime(2026, 3, 2, 8, tzinfo=timezone(-timedelta(hours=5)))


def test_windows_zone_name_without_a_vtimezone():
    text = OUTLOOK.replace("TZID:China Standard Time", "TZID:Other")
    plan = parse_roster_ical(ics(text), roster(surgeons=LIU), team="facial", window=MARCH)
    assert plan.ok and plan.shifts[0].start == sh(3, 2, 8)


BERLIN_TEAM = Team("facial", "颌面部创伤", "Facial", tz="Europe/Berlin")


def vevent(body: str, uid: str = "u1") -> bytes:
    return ics(f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//test//EN\nBEGIN:VEVENT\nUID:{uid}\n"
               f"{body.strip()}\nEND:VEVENT\nEND:VCALENDAR\n")


def test_all_day_event_across_spring_forward_in_berlin():
    r = roster(teams=(BERLIN_TEAM,))
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART;VALUE=DATE:20260328\nDTEND;VALUE=DATE:20260330"),
                             r, team="facial")
    assert plan.ok, plan.report()
    (shift,) = plan.shifts
    assert shift.start == datetime(2026, 3, 28, 8, tzinfo=BERLIN)  # 07:00 UTC (CET)
    assert shift.end == datetime(2026, 3, 30, 8, tzinfo=BERLIN)  # 06:00 UTC (CEST)
    assert shift.end - shift.start == timedelta(hours=47)
    # DURATION:P1D and a daily rule keep the 08:00 handoff on the wall clock too
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART;TZID=Europe/Berlin:20260328T080000\n"
                                    "DURATION:P1D\nRRULE:FREQ=DAILY;COUNT=3"),
                             r, team="facial", window=(datetime(2026, 3, 1, tzinfo=UTC),
                                                       datetime(2026, 4, 1, tzinfo=UTC)))
    assert plan.ok, plan.report()
    assert [(s.start, s.end - s.start) for s in plan.shifts] == [
        (datetime(2026, 3, 28, 8, tzinfo=BERLIN), timedelta(hours=23)),
        (datetime(2026, 3, 29, 8, tzinfo=BERLIN), timedelta(hours=24)),
        (datetime(2026, 3, 30, 8, tzinfo=BERLIN), timedelta(hours=24)),
    ]


def test_floating_time_is_the_team_zone():
    r = roster(teams=(BERLIN_TEAM,))
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART:20260329T080000\nDTEND:20260330T080000"),
                             r, team="facial")
    assert plan.shifts[0].start == datetime(2026, 3, 29, 8, tzinfo=BERLIN)


def test_window_cuts_shifts():
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260310T000000Z"),
                             ROSTER, team="facial",
                             window=(datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)))
    assert [(s.start, s.end) for s in plan.shifts] == [
        (datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC))]
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260302T000000Z"),
                             ROSTER, team="facial",
                             window=(datetime(2026, 3, 5, tzinfo=UTC), datetime(2026, 3, 20, tzinfo=UTC)))
    assert plan.ok and plan.shifts == () and set(plan.replace) == {"facial"}


def test_all_day_weekly_series_with_date_exdate():
    plan = parse_roster_ical(vevent("SUMMARY:二线 李明\nDTSTART;VALUE=DATE:20260302\n"
                                    "RRULE:FREQ=WEEKLY;UNTIL=20260330\nEXDATE;VALUE=DATE:20260309,20260323"),
                             ROSTER, team="facial", window=MARCH)
    assert plan.ok, plan.report()
    assert [(s.role, s.start, s.end) for s in plan.shifts] == [
        (B, sh(3, 2, 8), sh(3, 3, 8)), (B, sh(3, 16, 8), sh(3, 17, 8)), (B, sh(3, 30, 8), sh(3, 31, 8))]


def test_globally_unique_tzid():
    # icalendar warns that it guesses the zone; in production that is a log line,
    # here pytest's filterwarnings=error would turn it into an unreadable file.
    body = ("SUMMARY:王建国\nDTSTART;TZID=/freeassociation.sourceforge.net/Europe/Berlin:20260301T080000\n"
            "DTEND;TZID=/freeassociation.sourceforge.net/Europe/Berlin:20260302T080000")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GloballyUniqueTZIDGuessed)
        plan = parse_roster_ical(vevent(body), ROSTER, team="facial")
    assert plan.ok and plan.shifts[0].start == datetime(2026, 3, 1, 8, tzinfo=BERLIN)


def test_recurring_events_per_file_are_capped():
    one = "BEGIN:VEVENT\nUID:s{n}\nSUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260301T010000Z\n" \
          "RRULE:FREQ=DAILY;COUNT=1\nEND:VEVENT\n"
    data = ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\n"
               + "".join(one.format(n=n) for n in range(MAX_SERIES + 1)) + "END:VCALENDAR\n")
    plan = parse_roster_ical(data, ROSTER, team="facial", window=MARCH)
    assert [p.line for p in plan.errors if "recurring events in the file" in p.message] == [MAX_SERIES + 1]


def test_rdate_adds_occurrences():
    plan = parse_roster_ical(vevent("SUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260302T000000Z\n"
                                    "RDATE:20260305T000000Z,20260307T000000Z"), ROSTER, team="facial")
    assert [s.start.day for s in plan.shifts] == [1, 5, 7]


# --------------------------------------------------------------------------- problems

WHEN = "DTSTART:20260301T000000Z\nDTEND:20260302T000000Z"


@pytest.mark.parametrize("body, kw, words", [
    ("SUMMARY:王建国\nDTEND:20260302T000000Z", {}, "no DTSTART"),
    ("SUMMARY:王建国\nDTSTART:20260302T000000Z\nDTEND:20260301T000000Z", {}, "ends before it starts"),
    ("SUMMARY:王建国\nDTSTART:20260302T000000Z\nDTEND:20260302T000000Z", {}, "ends before it starts"),
    ("SUMMARY:王建国\nDTSTART;VALUE=DATE:20260302\nDTEND;VALUE=DATE:20260302", {}, "ends before it starts"),
    ("SUMMARY:王建国\nDTSTART:20260302T000000Z\nDURATION:-PT1H", {}, "ends before it starts"),
    ("SUMMARY:王建国\nDTSTART:20260302T000000Z", {}, "no DTEND or DURATION"),
    ("SUMMARY:王建国\nDTSTART:garbage\nDTEND:20260302T000000Z", {}, "DTSTART"),
    ("SUMMARY:王建国\nDTSTART:20260301T000000Z\nDTSTART:20260301T010000Z\nDTEND:20260302T000000Z", {},
     "more than once"),
    ("SUMMARY:王建国\n" + WHEN + "\nDURATION:PT1H", {}, "both DTEND and DURATION"),
    ("SUMMARY:王建国\nDTSTART;VALUE=DATE:20260302\nDTEND:20260303T000000Z", {}, "all-day"),
    ("SUMMARY:王建国\nDTSTART;TZID=Mars/Olympus:20260301T080000\nDTEND;TZID=Mars/Olympus:20260302T080000",
     {}, "unknown time zone Mars/Olympus"),
    ("SUMMARY:一线 某某\n" + WHEN, {}, "no known surgeon"),
    ("SUMMARY:王建国 李明\n" + WHEN, {}, "several surgeons"),
    ("SUMMARY:x\nATTENDEE;CN=王建国:mailto:a@x\nATTENDEE;CN=李明:mailto:b@x\n" + WHEN, {}, "several surgeons"),
    ("SUMMARY:一线 二线 王建国\n" + WHEN, {}, "several roles"),
    ("SUMMARY:王建国\nX-HOTLINE-TEAM:nope\n" + WHEN, {}, "unknown team nope"),
    ("SUMMARY:王建国\nX-HOTLINE-ROLE:janitor\n" + WHEN, {}, "unknown role janitor"),
    ("SUMMARY:王建国\nX-HOTLINE-SURGEON:999\n" + WHEN, {}, "unknown surgeon id 999"),
    ("SUMMARY:王建国\n" + WHEN, {"team": None}, "no team"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:FREQ=DAILY", {"window": None}, "needs an import window"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:FREQ=HOURLY", {}, "FREQ=HOURLY is not supported"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:FREQ=DAILY;COUNT=3;UNTIL=20260310T000000Z", {}, "both COUNT and UNTIL"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:BYDAY=MO", {}, "no FREQ"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:FREQ=DAILY\nEXRULE:FREQ=WEEKLY", {}, "EXRULE"),
    ("SUMMARY:王建国\n" + WHEN + "\nRRULE:FREQ=DAILY",
     {"window": (datetime(2026, 1, 1, tzinfo=UTC), datetime(2046, 1, 1, tzinfo=UTC))},
     f"more than {MAX_OCCURRENCES} occurrences"),
    ("SUMMARY:王建国\nDTSTART:19000101T000000Z\nDTEND:19000102T000000Z\nRRULE:FREQ=DAILY", {},
     "more than 100 years"),
    ("SUMMARY:王建国\nDTSTART;VALUE=DATE:20260301\nRDATE:20260305T000000Z", {}, "recurs on dates"),
    ("SUMMARY:王建国\n" + WHEN + "\nRECURRENCE-ID;RANGE=THISANDFUTURE:20260301T000000Z", {}, "THISANDFUTURE"),
])
def test_event_problems(body, kw, words):
    kw = {"team": "facial", "window": MARCH, **kw}
    plan = parse_roster_ical(vevent(body, uid="evt-7"), ROSTER, **kw)
    assert not plan.ok and plan.shifts == ()
    messages = [p.message for p in plan.errors]
    assert any(words in m for m in messages), messages
    assert all(p.line == 1 and p.column == "UID evt-7" for p in plan.errors)
    assert all(p.message_zh for p in plan.errors)


def test_problem_line_is_the_index_of_the_vevent():
    good = "BEGIN:VEVENT\nUID:a\nSUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260302T000000Z\nEND:VEVENT\n"
    bad = "BEGIN:VEVENT\nUID:b\nSUMMARY:王建国\nDTEND:20260302T000000Z\nEND:VEVENT\n"
    todo = "BEGIN:VTODO\nUID:t\nEND:VTODO\n"
    data = ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\n" + good + todo + good.replace("UID:a", "UID:c")
               .replace("20260301", "20260305").replace("20260302", "20260306") + bad + "END:VCALENDAR\n")
    plan = parse_roster_ical(data, ROSTER, team="facial")
    assert [(p.line, p.column) for p in plan.errors] == [(3, "UID b")]
    assert plan.lines == (1, 2)
    assert plan.report()[0].startswith("line 3, UID b: the event has no DTSTART")


def test_clashes_come_from_overlap_problems():
    data = ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\n"
               "BEGIN:VEVENT\nUID:a\nSUMMARY:一线 王建国\nDTSTART:20260301T000000Z\nDTEND:20260302T000000Z\nEND:VEVENT\n"
               "BEGIN:VEVENT\nUID:b\nSUMMARY:一线 李明\nDTSTART:20260301T120000Z\nDTEND:20260302T120000Z\nEND:VEVENT\n"
               "END:VCALENDAR\n")
    plan = parse_roster_ical(data, ROSTER, team="facial")
    assert not plan.ok
    assert [(p.line, p.column) for p in plan.errors] == [(2, "time")]


def test_ambiguous_surgeon_names():
    twins = {**SURGEONS, 105: Surgeon(105, "张伟", "13800000105")}
    plan = parse_roster_ical(vevent("SUMMARY:一线 张伟\n" + WHEN), roster(surgeons=twins), team="facial")
    assert not plan.ok and "more than one surgeon" in plan.errors[0].message
    # the phone tells them apart
    plan = parse_roster_ical(vevent("SUMMARY:一线 13800000105\n" + WHEN), roster(surgeons=twins), team="facial")
    assert plan.ok and plan.shifts[0].surgeon_id == 105


def test_names_and_role_words_match_whole_words_and_longest_names():
    people = {1: Surgeon(1, "Li", "13900000001"), 2: Surgeon(2, "李明华", "13900000002"),
              3: Surgeon(3, "李明", "13900000003")}
    r = roster(surgeons=people)
    plan = parse_roster_ical(vevent("SUMMARY:Lisa forehead cover: 李明华\n" + WHEN), r, team="facial")
    assert plan.ok, plan.report()
    assert (plan.shifts[0].surgeon_id, plan.shifts[0].role) == (2, P)
    plan = parse_roster_ical(vevent("SUMMARY:Department Head (Li)\n" + WHEN), r, team="facial")
    assert (plan.shifts[0].surgeon_id, plan.shifts[0].role) == (1, H)
    # a date or a surgeon id in SUMMARY is not a phone
    plan = parse_roster_ical(vevent("SUMMARY:李明 2026-03-01 #1 20260301\n" + WHEN), r, team="facial")
    assert plan.ok and plan.shifts[0].surgeon_id == 3


@pytest.mark.parametrize("data, words", [
    (b"", "no VCALENDAR"),
    (b"hello world", "not an iCalendar file"),
    (b"BEGIN:VCARD\r\nFN:x\r\nEND:VCARD\r\n", "no VCALENDAR"),
    (b"END:VCALENDAR\r\n", "not an iCalendar file"),
    ("BEGIN:VCALENDAR\r\nX-NAME:颌面\r\nEND:VCALENDAR\r\n".encode("gb18030"), "not UTF-8"),
    (b"BEGIN:VCALENDAR\r\n" + b"X-PAD:" + b"x" * MAX_BYTES + b"\r\nEND:VCALENDAR\r\n", "larger than 2 MB"),
])
def test_file_problems(data, words):
    plan = parse_roster_ical(data, ROSTER, team="facial")
    assert not plan.ok and plan.shifts == ()
    ((problem),) = plan.problems
    assert problem.line == 0 and words in problem.message, problem.message


def test_unknown_team_argument_and_bad_window():
    plan = parse_roster_ical(vevent("SUMMARY:王建国\n" + WHEN), ROSTER, team="ophthalmology")
    assert [(p.line, p.column) for p in plan.errors] == [(0, "team")]
    with pytest.raises(ValueError):
        parse_roster_ical(b"", ROSTER, window=(datetime(2026, 3, 2), datetime(2026, 3, 1)))
    with pytest.raises(ValueError):
        parse_roster_ical(b"", ROSTER, window=(sh(3, 2), sh(3, 1)))
    with pytest.raises(TypeError):
        parse_roster_ical("BEGIN:VCALENDAR", ROSTER)  # type: ignore[arg-type]


def test_an_empty_calendar_for_a_team_and_window_clears_the_window():
    data = ics("BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nEND:VCALENDAR\n")
    plan = parse_roster_ical(data, ROSTER, team="facial", window=MARCH)
    assert plan.ok and plan.shifts == ()
    assert plan.replace == {"facial": (MARCH[0].astimezone(UTC), MARCH[1].astimezone(UTC))}
    assert parse_roster_ical(data, ROSTER).replace == {}


def test_echoed_values_are_escaped_and_cut():
    nasty = "某某\x1b[31m\u202e" + "x" * 300
    plan = parse_roster_ical(vevent(f"SUMMARY:{nasty}\n" + WHEN, uid="u\x07" + "y" * 200), ROSTER,
                             team="facial")
    (problem,) = plan.errors
    for text in (problem.message, problem.message_zh, problem.column):
        assert "\x1b" not in text and "\u202e" not in text and "\x07" not in text
        assert len(text) < 200
    assert "\\u001b" in problem.message and "…" in problem.message
    assert problem.column.startswith("UID u\\u0007")


def test_impossible_rules_and_hostile_zones_stay_cheap():
    began = clock.monotonic()
    body = ("SUMMARY:王建国\nDTSTART:20260301T000000Z\nDTEND:20260302T000000Z\n"
            "RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30")
    plan = parse_roster_ical(vevent(body), ROSTER, team="facial", window=MARCH)
    assert plan.ok and [s.start.day for s in plan.shifts] == [1]  # DTSTART only
    hostile_zone = ics(
        "BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nBEGIN:VTIMEZONE\nTZID:Nowhere Time\nBEGIN:STANDARD\n"
        "DTSTART:16010101T000000\nRRULE:FREQ=SECONDLY\nTZOFFSETFROM:+0800\nTZOFFSETTO:+0800\n"
        "END:STANDARD\nEND:VTIMEZONE\nBEGIN:VEVENT\nUID:z\nSUMMARY:王建国\n"
        "DTSTART;TZID=Nowhere Time:20260301T080000\nDTEND;TZID=Nowhere Time:20260302T080000\n"
        "END:VEVENT\nEND:VCALENDAR\n")
    plan = parse_roster_ical(hostile_zone, ROSTER, team="facial")
    assert "unknown time zone" in plan.errors[0].message
    assert clock.monotonic() - began < 3


# --------------------------------------------------------------------------- property


@st.composite
def rotation_rosters(draw):
    tz = draw(st.sampled_from(["Asia/Shanghai", "Europe/Berlin", "America/New_York"]))
    base = date(2026, 3, 20) + timedelta(days=draw(st.sampled_from([0, 200])))
    zone = ZoneInfo(tz)
    rotations = []
    for role in draw(st.lists(st.sampled_from(list(Role)), min_size=1, max_size=3, unique=True)):
        for layer in range(draw(st.integers(1, 2))):
            start = base + timedelta(days=draw(st.integers(0, 8)))
            rotations.append(Rotation(
                "facial", role, tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))), start,
                draw(st.sampled_from([(time(8),), (time(0),), (time(2, 30),), (time(8), time(20))])),
                draw(st.sampled_from([1, 1, 2, 7])), layer=layer,
                until=draw(st.one_of(st.none(), st.integers(1, 12).map(lambda d: start + timedelta(days=d))))))
    origin = datetime.combine(base, time(0), zone)

    def stretch():
        lo = origin + timedelta(hours=draw(st.integers(0, 14 * 24)))
        return lo, lo + timedelta(hours=draw(st.integers(1, 60)))

    overrides = [Override("facial", draw(st.sampled_from(list(Role))), draw(st.integers(1, 6)), *stretch(),
                          replaces=draw(st.one_of(st.none(), st.integers(1, 6))))
                 for _ in range(draw(st.integers(0, 3)))]
    leave = [Leave(draw(st.integers(1, 6)), *stretch()) for _ in range(draw(st.integers(0, 2)))]
    surgeons = {i: Surgeon(i, f"医生{i}", f"1390000{i:04d}") for i in range(1, 7)}
    r = Roster(teams={"facial": Team("facial", "颌面部创伤", "Facial", tz=tz)}, surgeons=surgeons,
               rotations=tuple(rotations), overrides=tuple(overrides), leave=tuple(leave))
    window = (origin + timedelta(days=2), origin + timedelta(days=12))
    return r, window, draw(st.sampled_from(["zh", "en"]))


@settings(max_examples=60, deadline=None)
@given(rotation_rosters())
def test_export_then_import_reproduces_the_shifts_in_force(case):
    r, window, lang = case
    expected = sorted(key(s) for s in merge_pieces(shifts_between(r, "facial", *window)))
    feed = team_calendar(r, "facial", *window, now=NOW, lang=lang)
    plan = parse_roster_ical(feed, r, window=window)
    assert plan.ok, plan.report()
    assert sorted(key(s) for s in plan.shifts) == expected
    assert plan.replace == ({"facial": tuple(w.astimezone(UTC) for w in window)} if expected else {})
    # a foreign reader of the same feed (team given, our X- properties dropped) agrees on the times
    foreign = re.sub(rb"\r\nX-HOTLINE-[A-Z]+:[^\r]*", b"", feed)
    plan = parse_roster_ical(foreign, r, team="facial", window=window)
    assert plan.ok, plan.report()
    assert sorted(key(s) for s in plan.shifts) == expected
