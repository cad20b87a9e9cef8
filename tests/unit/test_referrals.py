"""The referral state machine, the patient's essentials, time since injury and ischaemia
urgency (network.referrals): pure, no I/O, time passed in."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from network.referrals import (
    CLOCK_SKEW,
    MAX_INJURY,
    OPEN,
    STATUS_LABELS,
    TRANSITIONS,
    IllegalTransition,
    InvalidPatient,
    Part,
    Patient,
    ReasonRequired,
    Referral,
    ReferralStatus as S,
    Sex,
    UnknownStatus,
    Urgency,
    elapsed_words,
    ischaemia,
    new_referral,
    parse_status,
    patient,
    replant_part,
    since_injury,
    transition,
)

UTC = timezone.utc
T0 = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
LEGAL = {
    (S.REQUESTED, S.ACCEPTED), (S.REQUESTED, S.DECLINED), (S.REQUESTED, S.CANCELLED),
    (S.ACCEPTED, S.EN_ROUTE), (S.ACCEPTED, S.CANCELLED),
    (S.EN_ROUTE, S.ARRIVED), (S.EN_ROUTE, S.CANCELLED),
    (S.ARRIVED, S.ADMITTED),
}


def made(status: S = S.REQUESTED, *, team: str | None = "replant", injury: str = "",
         injured_at: datetime | None = None, surgeon: int | None = None) -> Referral:
    return Referral(7, "C-1", 1, status, team, surgeon,
                    Patient(40, Sex.MALE, injury, injured_at), T0, T0, 3)


# --------------------------------------------------------------------------- transitions


@pytest.mark.parametrize("current,wanted", sorted(product(S, S), key=str))
def test_every_pair_of_statuses_is_legal_exactly_when_the_machine_says(current, wanted):
    referral = made(current)
    note = "患者家属要求" if wanted in (S.DECLINED, S.CANCELLED) else ""
    at = T0 + timedelta(minutes=5)
    if (current, wanted) in LEGAL:
        change = transition(referral, wanted, at=at, actor="user:sup", note=note)
        assert change.referral.status is wanted
        assert change.referral.version == 4
        assert change.referral.updated_at == at
        assert change.referral.events[-1] == change.event
        assert change.event.status is wanted and change.event.actor == "user:sup"
        assert change.event.note == note
        assert referral.status is current  # the old value is not touched
    else:
        with pytest.raises(IllegalTransition) as raised:
            transition(referral, wanted, at=at, actor="user:sup", note=note)
        assert raised.value.current is current and raised.value.wanted is wanted
        assert STATUS_LABELS[current][0] in raised.value.message_zh
        assert current.value in raised.value.message


def test_the_table_is_the_legal_set_and_the_final_states_have_no_way_out():
    assert {(a, b) for a, nexts in TRANSITIONS.items() for b in nexts} == LEGAL
    assert {s for s in S if s.final} == {S.DECLINED, S.ADMITTED, S.CANCELLED}
    assert set(OPEN) == {S.REQUESTED, S.ACCEPTED, S.EN_ROUTE, S.ARRIVED}
    assert all(s in STATUS_LABELS for s in S)
    assert STATUS_LABELS[S.EN_ROUTE] == ("转运途中", "patient en route")


@pytest.mark.parametrize("wanted,current", [(S.DECLINED, S.REQUESTED), (S.CANCELLED, S.REQUESTED),
                                            (S.CANCELLED, S.ACCEPTED), (S.CANCELLED, S.EN_ROUTE)])
@pytest.mark.parametrize("note", ["", "   ", "\n"])
def test_declining_or_cancelling_needs_a_reason(wanted, current, note):
    with pytest.raises(ReasonRequired) as raised:
        transition(made(current), wanted, at=T0, actor="user:sup", note=note)
    assert "原因" in raised.value.message_zh


def test_a_surgeon_who_accepts_an_unassigned_referral_becomes_its_receiving_surgeon():
    change = transition(made(), S.ACCEPTED, at=T0, actor="user:doc1", by_surgeon=1)
    assert change.referral.surgeon_id == 1
    kept = transition(made(surgeon=3), S.ACCEPTED, at=T0, actor="user:doc1", by_surgeon=1)
    assert kept.referral.surgeon_id == 3  # someone was assigned: they stay
    staff = transition(made(), S.ACCEPTED, at=T0, actor="user:sup")
    assert staff.referral.surgeon_id is None


def test_unknown_statuses_and_naive_times_are_refused():
    for bad in ("", "ACCEPTED", "en route", None, 3, "admitted "):
        with pytest.raises(UnknownStatus):
            parse_status(bad)
    assert parse_status("en_route") is S.EN_ROUTE
    with pytest.raises(UnknownStatus):
        transition(made(), "approved", at=T0, actor="x")
    with pytest.raises(ValueError):
        transition(made(), S.ACCEPTED, at=datetime(2026, 3, 10), actor="x")


def test_notes_keep_line_breaks_but_refuse_control_characters():
    change = transition(made(), S.DECLINED, at=T0, actor="x", note="  床位已满\r\n请转省医院 ")
    assert change.event.note == "床位已满\n请转省医院"
    for hostile in ("床位\x00已满", "ok\u202eevil", "a\u2028b", "\x1b[31m"):
        with pytest.raises(InvalidPatient) as raised:
            transition(made(), S.DECLINED, at=T0, actor="x", note=hostile)
        assert raised.value.field == "note"
    with pytest.raises(InvalidPatient):
        transition(made(), S.ACCEPTED, at=T0, actor="x", note="x" * 1001)


def test_a_new_referral_is_requested_at_version_one_with_its_first_event():
    change = new_referral(case_id="C-9", hospital_id=2, team="referral", surgeon_id=None,
                          patient=Patient(), at=T0, actor="api:his", note="请求转诊")
    assert change.referral.status is S.REQUESTED and change.referral.version == 1
    assert change.referral.events == (change.event,)
    assert change.event.note == "请求转诊" and change.event.at == T0


# A random walk through the machine: whatever is tried, the referral is always in a
# state the table reaches, every accepted step is one the table lists, the
# version counts exactly the accepted steps, and a final state refuses everything.
@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(list(S)), st.sampled_from(["", "原因"])),
                max_size=12))
def test_random_sequences_of_transitions_follow_the_table(steps):
    referral = made()
    accepted = 0
    seen = [referral.status]
    for n, (wanted, note) in enumerate(steps):
        at = T0 + timedelta(minutes=n + 1)
        legal = wanted in TRANSITIONS[referral.status]
        needs_reason = wanted in (S.DECLINED, S.CANCELLED) and not note
        try:
            change = transition(referral, wanted, at=at, actor="t", note=note)
        except IllegalTransition:
            assert not legal
            continue
        except ReasonRequired:
            assert legal and needs_reason
            continue
        assert legal and not needs_reason
        assert change.referral.status is wanted
        referral = change.referral
        accepted += 1
        seen.append(wanted)
    assert referral.version == 3 + accepted
    assert len(referral.events) == accepted
    assert all(b in TRANSITIONS[a] for a, b in zip(seen, seen[1:]))
    assert [e.status for e in referral.events] == seen[1:]
    if referral.status.final:
        for wanted in S:
            with pytest.raises(IllegalTransition):
                transition(referral, wanted, at=T0, actor="t", note="原因")


# --------------------------------------------------------------------------- essentials


def test_essentials_within_range_are_kept_trimmed():
    injured = T0 - timedelta(hours=2)
    p = patient(age=0, sex="female", injury="  右手示指离断  ", injured_at=injured, now=T0)
    assert p == Patient(0, Sex.FEMALE, "右手示指离断", injured)
    assert patient(age=120, now=T0).age == 120
    assert patient(now=T0) == Patient(None, Sex.UNKNOWN, "", None)
    assert patient(sex="", now=T0).sex is Sex.UNKNOWN
    within_skew = T0 + CLOCK_SKEW
    assert patient(injured_at=within_skew, now=T0).injured_at == within_skew


@pytest.mark.parametrize("field,kwargs", [
    ("age", {"age": -1}), ("age", {"age": 121}), ("age", {"age": True}), ("age", {"age": "40"}),
    ("age", {"age": 40.5}),
    ("sex", {"sex": "M"}), ("sex", {"sex": "男"}), ("sex", {"sex": 1}),
    ("injury", {"injury": "x" * (MAX_INJURY + 1)}), ("injury", {"injury": "断指\n伤"}),
    ("injury", {"injury": "a\x07b"}), ("injury", {"injury": "\u202e指"}), ("injury", {"injury": 5}),
    ("injured_at", {"injured_at": datetime(2026, 3, 10, 1, 0)}),
    ("injured_at", {"injured_at": T0 + CLOCK_SKEW + timedelta(seconds=1)}),
    ("injured_at", {"injured_at": T0 - timedelta(days=366)}),
])
def test_essentials_out_of_range_are_refused_naming_the_field(field, kwargs):
    with pytest.raises(InvalidPatient) as raised:
        patient(now=T0, **kwargs)
    assert raised.value.field == field
    assert raised.value.message_zh


def test_injury_of_exactly_the_limit_is_accepted():
    assert len(patient(injury="指" * MAX_INJURY, now=T0).injury) == MAX_INJURY


# --------------------------------------------------------------------------- time since injury


def test_time_since_injury():
    referral = made(injured_at=T0 - timedelta(hours=2, minutes=5, seconds=59))
    assert since_injury(referral, T0) == timedelta(hours=2, minutes=5, seconds=59)
    assert since_injury(made(), T0) is None
    assert since_injury(made(injured_at=T0 + timedelta(minutes=2)), T0) == timedelta(0)
    assert elapsed_words(timedelta(hours=2, minutes=5, seconds=59)) == ("2小时05分", "2 h 05 min")
    assert elapsed_words(timedelta(hours=50)) == ("2天2小时", "2 d 2 h")
    assert elapsed_words(None) == ("", "")


@pytest.mark.parametrize("injury,part", [
    ("右手示指离断", Part.DIGIT), ("左拇指完全离断", Part.DIGIT), ("severed thumb", Part.DIGIT),
    ("two fingers amputated", Part.DIGIT), ("右前臂离断", Part.LIMB), ("左手掌及手指离断", Part.LIMB),
    ("amputated forearm", Part.LIMB), ("finger caught in a farm machine", Part.DIGIT),
    ("离断伤", Part.UNKNOWN), ("", Part.UNKNOWN),
])
def test_which_part_the_injury_names(injury, part):
    assert replant_part(injury) is part


# Thresholds (hours since injury): digit 6 / 10 / 12, limb (and unknown part) 3 / 5 / 6.
@pytest.mark.parametrize("injury,hours,urgency", [
    ("右手示指离断", 0, Urgency.OK), ("右手示指离断", 5.99, Urgency.OK),
    ("右手示指离断", 6, Urgency.URGENT), ("右手示指离断", 9.99, Urgency.URGENT),
    ("右手示指离断", 10, Urgency.CRITICAL), ("右手示指离断", 12, Urgency.BEYOND),
    ("右前臂离断", 2.99, Urgency.OK), ("右前臂离断", 3, Urgency.URGENT),
    ("右前臂离断", 5, Urgency.CRITICAL), ("右前臂离断", 6, Urgency.BEYOND),
    ("离断伤", 5.5, Urgency.CRITICAL),  # part not stated: the limb's stricter limits
])
def test_ischaemia_urgency_of_a_replantation(injury, hours, urgency):
    referral = made(injury=injury, injured_at=T0 - timedelta(hours=hours))
    found = ischaemia(referral, T0)
    assert found.urgency is urgency
    assert found.limit == timedelta(hours=12 if "指" in injury else 6)


def test_no_urgency_without_a_replantation_a_time_or_an_open_referral():
    # Another team, nothing about amputation: the time shows, no colour.
    facial = made(team="facial", injury="面部裂伤", injured_at=T0 - timedelta(hours=8))
    assert ischaemia(facial, T0).urgency is Urgency.NONE
    assert ischaemia(facial, T0).elapsed == timedelta(hours=8)
    # The referral line's team, but the injury says amputation: it is a replantation.
    line = made(team="referral", injury="左拇指离断", injured_at=T0 - timedelta(hours=11))
    assert ischaemia(line, T0).urgency is Urgency.CRITICAL
    assert ischaemia(made(injury="右手示指离断"), T0).urgency is Urgency.NONE  # time unknown
    admitted = made(S.ADMITTED, injury="右前臂离断", injured_at=T0 - timedelta(hours=7))
    assert ischaemia(admitted, T0).urgency is Urgency.NONE
