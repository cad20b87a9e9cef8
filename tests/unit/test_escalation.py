"""Escalation: whole decision sequences, and the bound on dials."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team
from routing.escalation import (
    Attempt,
    AttemptOutcome,
    ChainStep,
    Dial,
    EscalationChain,
    Stop,
    Voicemail,
    build_chain,
    next_decision,
)

AT = datetime(2026, 3, 2, 14, 0, tzinfo=ZoneInfo("Asia/Shanghai"))
NURSE = ChainStep(None, "值班护士", "13800009999", "nurse", 30)
NO, BUSY, DECLINED, FAILED, OK = (
    AttemptOutcome.NO_ANSWER, AttemptOutcome.BUSY, AttemptOutcome.DECLINED,
    AttemptOutcome.FAILED, AttemptOutcome.ACCEPTED,
)


def step(sid: int, role: str = "primary") -> ChainStep:
    return ChainStep(sid, f"医生{sid}", f"1380000{sid:04d}", role, 25)


def chain(*sids: int, repeats: int = 0) -> EscalationChain:
    return EscalationChain("facial", tuple(step(s) for s in sids), repeats)


def run(ch: EscalationChain, outcomes, nurse: ChainStep | None = NURSE):
    """Play a call: answer each Dial with the next outcome; return the dials and the end."""
    attempts: list[Attempt] = []
    dials: list[Dial] = []
    outcomes = iter(outcomes)
    while True:
        decision = next_decision(ch, attempts, nurse)
        if not isinstance(decision, Dial):
            return dials, decision
        dials.append(decision)
        attempts.append(Attempt(decision.seq, decision.step, decision.kind, next(outcomes)))


def who(dials) -> list:
    return [(d.seq, d.kind, d.step.surgeon_id) for d in dials]


def test_primary_no_answer_then_backup_accepts():
    dials, end = run(chain(1, 2, 3), [NO, OK])
    assert who(dials) == [(1, "chain", 1), (2, "chain", 2)]
    assert end == Stop("accepted")


def test_declines_and_busy_move_on():
    dials, end = run(chain(1, 2, 3), [DECLINED, BUSY, OK])
    assert who(dials) == [(1, "chain", 1), (2, "chain", 2), (3, "chain", 3)]
    assert end == Stop("accepted")


def test_the_chain_repeats_then_the_nurse_then_voicemail():
    dials, end = run(chain(1, 2, repeats=1), [NO, FAILED, DECLINED, NO, NO])
    assert who(dials) == [
        (1, "chain", 1), (2, "chain", 2), (3, "chain", 1), (4, "chain", 2), (5, "nurse", None)]
    assert dials[-1].step == NURSE
    assert end == Voicemail()


def test_accepted_on_the_second_pass():
    dials, end = run(chain(1, 2, repeats=2), [NO, NO, NO, OK])
    assert who(dials)[-1] == (4, "chain", 2)
    assert end == Stop("accepted")


def test_nurse_accepts():
    dials, end = run(chain(1), [NO, OK])
    assert who(dials) == [(1, "chain", 1), (2, "nurse", None)]
    assert end == Stop("accepted")


def test_empty_chain_goes_to_the_nurse_at_once():
    dials, end = run(chain(), [NO])
    assert who(dials) == [(1, "nurse", None)]
    assert end == Voicemail()


def test_empty_chain_and_no_nurse_is_voicemail_not_silence():
    assert run(chain(), [], nurse=None) == ([], Voicemail())


def test_no_nurse_goes_to_voicemail_after_the_chain():
    dials, end = run(chain(1, 2), [NO, NO], nurse=None)
    assert len(dials) == 2 and end == Voicemail()


def test_an_attempt_without_outcome_counts_as_not_accepted():
    ch = chain(1, 2)
    decision = next_decision(ch, [Attempt(1, step(1), "chain", None)], NURSE)
    assert decision == Dial(step(2), "chain", 2)


def test_after_voicemail_it_stays_voicemail():
    ch = chain(1)
    attempts = [Attempt(1, step(1), "chain", NO), Attempt(2, NURSE, "nurse", NO)]
    assert next_decision(ch, attempts, NURSE) == Voicemail()
    assert next_decision(ch, attempts, NURSE) == Voicemail()


def test_accepted_anywhere_stops():
    ch = chain(1, 2)
    attempts = [Attempt(1, step(1), "chain", OK), Attempt(2, step(2), "chain", NO)]
    assert next_decision(ch, attempts, NURSE) == Stop("accepted")


def test_negative_repeats_count_as_none():
    dials, end = run(chain(1, repeats=-3), [NO, NO])
    assert who(dials) == [(1, "chain", 1), (2, "nurse", None)]


def test_build_chain_from_the_roster():
    day = AT.replace(hour=8)
    roster = Roster(
        teams={"facial": Team("facial", "颌面部创伤", "Facial", ring_s=20, repeats=2)},
        surgeons={i: Surgeon(i, f"医生{i}", f"1380000{i:04d}", Rank.ATTENDING) for i in (1, 2, 3)},
        shifts=(
            Shift("facial", 3, Role.DEPARTMENT_HEAD, day, day + timedelta(days=1)),
            Shift("facial", 1, Role.PRIMARY, day, day + timedelta(days=1)),
            Shift("facial", 2, Role.BACKUP, day, day + timedelta(days=1)),
        ),
    )
    ch = build_chain(roster, "facial", AT)
    assert ch == EscalationChain("facial", (
        ChainStep(1, "医生1", "13800000001", "primary", 20),
        ChainStep(2, "医生2", "13800000002", "backup", 20),
        ChainStep(3, "医生3", "13800000003", "department_head", 20),
    ), 2)
    assert ch.max_dials == 10
    assert build_chain(roster, "facial", AT - timedelta(days=1)).steps == ()
    assert build_chain(roster, "nope", AT) == EscalationChain("nope", (), 0)


not_accepted = st.sampled_from([o for o in AttemptOutcome if o is not OK] + [None])


@given(
    size=st.integers(0, 6),
    repeats=st.integers(-1, 4),
    with_nurse=st.booleans(),
    outcomes=st.lists(st.one_of(not_accepted, st.just(OK)), max_size=60),
)
def test_dials_are_bounded_and_numbered(size, repeats, with_nurse, outcomes):
    ch = chain(*range(1, size + 1), repeats=repeats)
    nurse = NURSE if with_nurse else None
    outcomes = outcomes + [NO] * (ch.max_dials + 1)  # never run out: the bound must hold anyway
    dials, end = run(ch, outcomes, nurse)
    assert len(dials) <= ch.max_dials
    assert [d.seq for d in dials] == list(range(1, len(dials) + 1))
    assert sum(d.kind == "nurse" for d in dials) <= 1
    answered = outcomes[: len(dials)]
    if OK in answered:
        assert end == Stop("accepted") and answered.index(OK) == len(dials) - 1
    else:
        assert end == Voicemail()
        assert len(dials) == size * (1 + max(0, repeats)) + (1 if with_nurse else 0)
