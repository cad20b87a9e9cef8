"""The network's figures from the database (db.figures), on SQLite and PostgreSQL.

Hand-built cases with known answers: every count, the median and 90th
percentile of known delays (to the microsecond) per team and per surgeon,
the escalation depth, the local-day boundaries, the summary in both
languages. Both databases must give exactly the numbers of the Python
reference (`cases.figures.percentile_cont`), hence exactly the same numbers.
"""
from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert

from cases.figures import Reach, percentile_cont
from db.figures import load_figures
from db.models import CaseNoteRow, CaseRow, PartnerHospitalRow
from db.repo import write_roster
from db.users import UserRole, UserStore
from oncall.model import Rank, Surgeon, Team

SH = ZoneInfo("Asia/Shanghai")
UTC = timezone.utc
MARCH = (date(2026, 3, 1), date(2026, 3, 31))
TEAMS = (Team("facial", "颌面部创伤", "Facial trauma"), Team("replant", "断肢(指)再植", "Replantation"),
         Team("referral", "转诊转运", "Referral"))
SURGEONS = (Surgeon(1, "王建国", "13800000001", Rank.ATTENDING),
            Surgeon(2, "李明", "13800000002", Rank.RESIDENT),
            Surgeon(3, "张伟", "13800000003", Rank.ATTENDING),
            Surgeon(9, "赵主任", "13800000009", Rank.CHIEF))
# A hostile name: a spreadsheet formula, for the CSV export's sake.
HOSPITALS = ((1, "省人民医院"), (2, "=HYPERLINK(\"http://evil\",\"x\")"))


def local(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=SH)


def row(case_id: str, started: datetime, outcome: str, team: str | None = "facial", *,
        delay_us: int | None = None, surgeon: int | None = None, seq: int | None = None,
        hospital: int | None = None) -> dict:
    connected = started + timedelta(microseconds=delay_us) if delay_us is not None else None
    return {
        "case_id": case_id, "linkedid": f"L{case_id}", "revision": 3,
        "caller_number": "043188000001" if hospital else "13912345678",
        "caller_class": "partner" if hospital else "public", "caller_raw": None,
        "caller_raw_safe": "13912345678", "partner_hospital_id": hospital, "language": "zh",
        "team": team, "started_at": started, "connected_at": connected,
        "connected_surgeon_id": surgeon, "connected_seq": seq,
        "ended_at": started + timedelta(minutes=5), "hangup_by": "caller", "outcome": outcome,
        "recording_path": None, "recording_s": None, "voicemail_path": None, "voicemail_at": None,
        "updated_at": started + timedelta(minutes=5),
    }


# The cases of March 2026 (and two just outside), with their delays in microseconds.
CASES = [
    row("F1", local(3, 1, 8), "connected", delay_us=10_000_000, surgeon=1, seq=1),
    row("F2", local(3, 1, 23, 59, 59), "connected", delay_us=20_500_000, surgeon=1, seq=1),
    row("F3", local(3, 2, 0, 0, 0), "connected", delay_us=30_250_000, surgeon=2, seq=2),
    row("F4", local(3, 10, 9), "connected", delay_us=41_000_001, surgeon=3, seq=5),
    row("F5", local(3, 10, 10), "abandoned"),
    row("F6", local(3, 11, 10), "voicemail"),
    row("R1", local(3, 15, 10), "connected", "replant", delay_us=60_000_000, surgeon=2, seq=1, hospital=1),
    row("R2", local(3, 15, 11), "nurse", "replant", delay_us=95_000_000, seq=3, hospital=2),
    row("P1", local(3, 20, 10), "connected", "referral", delay_us=15_000_000, surgeon=9, seq=1, hospital=1),
    row("P2", local(3, 20, 11), "abandoned", "referral", hospital=2),
    row("N1", local(3, 31, 23, 30), "abandoned", None),
    row("X1", local(2, 28, 23, 59, 59), "connected", delay_us=1_000_000, surgeon=1, seq=1),
    row("X2", local(4, 1, 0, 0, 0), "connected", "referral", delay_us=1_000_000, surgeon=9, seq=1, hospital=1),
]
NOTES = [  # (case, disposition)
    ("F1", "consultation"), ("F1", "consultation"),  # answered anyway: counted once
    ("F2", "advice_only"), ("F2", None),
    ("F5", "consultation"), ("F5", "consultation"),  # a call-back consultation, counted once
    ("R1", "referral_accepted"), ("R1", "transfer_arranged"), ("R1", "transfer_arranged"),
    ("R2", "referral_accepted"),  # taken by the duty nurse, marked a referral
    ("P1", "referral_accepted"),  # the referral line, answered: already a referral
    ("P2", "consultation"),  # an unanswered referral-line call, consulted later
    ("X1", "transfer_arranged"),  # outside the range
]


def seed_reference(engine: Engine) -> None:
    with engine.begin() as conn:
        write_roster(conn, TEAMS, SURGEONS, ())
        conn.execute(insert(PartnerHospitalRow), [
            {"id": h, "name": name, "level": "三级", "city": "长春"} for h, name in HOSPITALS])


def seed_cases(engine: Engine, *, people: bool = True) -> None:
    """The reference data (unless already there), the cases above and their notes."""
    if people:
        seed_reference(engine)
    users = UserStore(engine)
    author = users.create("notes", "correct horse battery", UserRole.SUPERVISOR)
    with engine.begin() as conn:
        conn.execute(insert(CaseRow), CASES)
        started = {c["case_id"]: c["started_at"] for c in CASES}
        conn.execute(insert(CaseNoteRow), [
            {"case_id": case_id, "at": started[case_id] + timedelta(hours=2), "user_id": author.id,
             "surgeon_id": 1, "disposition": disposition, "text": "note"}
            for case_id, disposition in NOTES])


def seconds(*delays_us: int) -> list[float]:
    return [us / 1_000_000 for us in delays_us]


def reach(delays_us: list[int], seqs: list[int]) -> Reach:
    values = seconds(*delays_us)
    buckets = [0] * 5
    for s in seqs:
        buckets[min(s, 5) - 1] += 1
    return Reach(answered=len(values), median_s=percentile_cont(values, 0.5),
                 p90_s=percentile_cont(values, 0.9), depth_sum=sum(seqs), depth=tuple(buckets))


@pytest.fixture
def seeded(engine) -> Engine:
    seed_cases(engine)
    return engine


def test_counts_rates_and_dispositions_for_a_month(seeded):
    f = load_figures(seeded, *MARCH)
    t = f.tally
    assert (t.calls, t.connected, t.nurse, t.voicemail, t.abandoned, t.fallback, t.in_progress) == \
        (11, 6, 1, 1, 3, 0, 0)
    assert t.answer_rate == 6 / 11
    # 6 answered + F5 (abandoned, marked consultation) + P2 (unanswered, consulted later)
    assert t.consultations == 8
    # P1 (referral line, answered) + R1 and R2 (marked); P2 is an unanswered request
    assert t.referrals == 3
    assert t.transfers == 1  # R1, whose two transfer notes count once; X1 is outside
    assert t.partner_calls == 4 and f.partner_hospitals == 2
    assert [(h.hospital_id, h.calls) for h in f.hospitals] == [(1, 2), (2, 2)]
    assert f.hospitals[0].name == "省人民医院"


def test_time_to_reach_a_surgeon_and_depth_overall_per_team_and_per_surgeon(seeded):
    f = load_figures(seeded, *MARCH)
    all_delays = [10_000_000, 20_500_000, 30_250_000, 41_000_001, 60_000_000, 15_000_000]
    assert f.reach == reach(all_delays, [1, 1, 2, 5, 1, 1])
    assert f.reach.median_s == pytest.approx(25.375) and f.reach.p90_s == pytest.approx(50.5000005)
    assert f.reach.mean_depth == 11 / 6 and f.reach.depth == (4, 1, 0, 0, 1)

    teams = {tf.team: tf for tf in f.teams}
    assert list(teams) == ["facial", "referral", "replant", None]  # most calls first, no team last
    assert teams["facial"].reach == reach([10_000_000, 20_500_000, 30_250_000, 41_000_001], [1, 1, 2, 5])
    assert teams["facial"].reach.p90_s == pytest.approx(30.25 + (41.000001 - 30.25) * 0.7)
    assert teams["replant"].reach == reach([60_000_000], [1])  # the nurse's R2 is not a surgeon
    assert teams["referral"].reach == reach([15_000_000], [1])
    assert teams[None].reach == Reach()

    facial = teams["facial"].tally
    assert (facial.calls, facial.connected, facial.abandoned, facial.voicemail, facial.consultations,
            facial.referrals, facial.transfers) == (6, 4, 1, 1, 5, 0, 0)
    replant = teams["replant"].tally
    assert (replant.calls, replant.connected, replant.nurse, replant.consultations, replant.referrals,
            replant.transfers, replant.partner_calls) == (2, 1, 1, 1, 2, 1, 2)
    referral = teams["referral"].tally
    assert (referral.calls, referral.connected, referral.abandoned, referral.consultations,
            referral.referrals) == (2, 1, 1, 2, 1)
    assert (teams[None].tally.calls, teams[None].tally.abandoned) == (1, 1)

    surgeons = {sf.surgeon_id: sf for sf in f.surgeons}
    assert surgeons[1].name == "王建国"
    assert surgeons[1].reach == reach([10_000_000, 20_500_000], [1, 1])
    assert surgeons[1].reach.median_s == 15.25 and surgeons[1].reach.p90_s == pytest.approx(19.45)
    assert surgeons[2].reach == reach([30_250_000, 60_000_000], [2, 1])
    assert surgeons[2].reach.median_s == 45.125
    assert surgeons[3].reach == reach([41_000_001], [5]) and surgeons[3].reach.depth == (0, 0, 0, 0, 1)
    assert surgeons[9].reach == reach([15_000_000], [1])
    assert [s.surgeon_id for s in f.surgeons] == [1, 2, 3, 9]  # most answered first


def test_calls_count_on_their_local_day(seeded):
    f = load_figures(seeded, *MARCH)
    assert len(f.days) == 31 and f.days[0].day == date(2026, 3, 1) and f.days[-1].day == date(2026, 3, 31)
    by_day = {d.day.day: (d.calls, d.connected, d.abandoned, d.voicemail) for d in f.days if d.calls}
    # F2 at 23:59:59 stays on the 1st; F3 at 00:00:00 (16:00 UTC the day before) is the 2nd;
    # X1 (28 Feb 23:59:59) and X2 (1 Apr 00:00) are outside.
    assert by_day == {1: (2, 2, 0, 0), 2: (1, 1, 0, 0), 10: (2, 1, 1, 0), 11: (1, 0, 0, 1),
                      15: (2, 1, 0, 0), 20: (2, 1, 1, 0), 31: (1, 0, 1, 0)}
    one_day = load_figures(seeded, date(2026, 3, 2), date(2026, 3, 2))
    assert one_day.tally.calls == 1 and one_day.reach.median_s == 30.25


def test_the_summary_in_both_languages(seeded):
    f = load_figures(seeded, *MARCH)
    assert f.summary("zh") == "2026年3月1日至3月31日：热线共接听 11 例，实时会诊 8 例，转诊 3 例，来自 2 家合作医院"
    assert f.summary("en") == ("From 1 March to 31 March 2026: 11 calls, 8 real-time consultations, "
                               "3 referrals, from 2 partner hospitals")


def test_one_team(seeded):
    f = load_figures(seeded, *MARCH, team="replant")
    assert f.team == "replant" and [tf.team for tf in f.teams] == ["replant"]
    assert (f.tally.calls, f.tally.referrals, f.tally.transfers, f.partner_hospitals) == (2, 2, 1, 2)
    assert f.reach == reach([60_000_000], [1])
    assert [s.surgeon_id for s in f.surgeons] == [2]
    assert load_figures(seeded, *MARCH, team="no-such-team").tally.calls == 0


def test_an_empty_range_is_all_zeros(seeded):
    f = load_figures(seeded, date(2025, 1, 1), date(2025, 1, 7))
    assert f.tally.calls == 0 and f.tally.answer_rate is None
    assert f.reach == Reach() and f.reach.mean_depth is None
    assert f.teams == () and f.surgeons == () and f.hospitals == () and f.partner_hospitals == 0
    assert [d.calls for d in f.days] == [0] * 7
    assert f.summary("en") == ("From 1 January to 7 January 2025: 0 calls, 0 real-time consultations, "
                               "0 referrals, from 0 partner hospitals")


def test_percentiles_of_many_random_delays_match_the_reference_exactly(engine):
    """Whatever the database, every percentile equals the Python reference bit for bit."""
    seed_reference(engine)
    rng = random.Random(8)
    rows, delays = [], {"facial": [], "replant": []}
    by_surgeon: dict[int, list[float]] = {1: [], 2: [], 3: []}
    for n in range(301):
        team = rng.choice(("facial", "replant"))
        surgeon = rng.choice((1, 2, 3))
        delay_us = rng.randrange(2_000_000, 400_000_000)
        started = local(5, 1 + n % 28, rng.randrange(24), rng.randrange(60), rng.randrange(60)) \
            + timedelta(microseconds=rng.randrange(1_000_000))
        rows.append(row(f"R{n}", started, "connected", team, delay_us=delay_us, surgeon=surgeon,
                        seq=rng.randint(1, 7)))
        delays[team].append(delay_us / 1_000_000)
        by_surgeon[surgeon].append(delay_us / 1_000_000)
    with engine.begin() as conn:
        conn.execute(insert(CaseRow), rows)
    f = load_figures(engine, date(2026, 5, 1), date(2026, 5, 31))
    everything = delays["facial"] + delays["replant"]
    assert (f.reach.median_s, f.reach.p90_s) == (percentile_cont(everything, 0.5), percentile_cont(everything, 0.9))
    for tf in f.teams:
        assert (tf.reach.median_s, tf.reach.p90_s) == \
            (percentile_cont(delays[tf.team], 0.5), percentile_cont(delays[tf.team], 0.9))
    for sf in f.surgeons:
        assert (sf.reach.median_s, sf.reach.p90_s) == \
            (percentile_cont(by_surgeon[sf.surgeon_id], 0.5), percentile_cont(by_surgeon[sf.surgeon_id], 0.9))
    assert f.reach.depth_sum == sum(r["connected_seq"] for r in rows)
    assert f.reach.depth[4] == sum(1 for r in rows if r["connected_seq"] >= 5)


def test_sequential_and_parallel_runs_agree(seeded):
    assert load_figures(seeded, *MARCH, parallel=True) == load_figures(seeded, *MARCH, parallel=False)


def test_a_bad_range_is_refused():
    from cases.figures import RangeError
    with pytest.raises(RangeError):
        load_figures(None, date(2026, 3, 2), date(2026, 3, 1))  # type: ignore[arg-type]
    with pytest.raises(RangeError):
        load_figures(None, date(1999, 12, 31), date(2026, 3, 1))  # type: ignore[arg-type]
