"""The 96608 call path end to end: real SIP calls, real DTMF, the real Asterisk."""
from __future__ import annotations

from pathlib import Path

import pytest

from routing.escalation import AttemptOutcome

from conftest_support import NURSE, PARTNER_NUMBER, Hotline

pytestmark = pytest.mark.integration

A = AttemptOutcome


def outcomes(case):
    return [(a.phone, a.outcome) for a in case.attempts]


def test_happy_path_primary_accepts_and_the_call_is_recorded(line: Hotline):
    result, since = line.call("13611110001", press="1", surgeons="accept", talk_s=3)
    assert result.bridged_to == "13700000101"
    case = line.case_for("13611110001", since)
    assert case.team == "facial"
    assert [m.choice for m in case.menu] == ["1"]
    assert outcomes(case) == [("13700000101", A.ACCEPTED)]
    assert case.outcome == "connected" and case.connected_surgeon_id == 1
    assert case.connected_at is not None and case.ended_at >= case.connected_at
    assert case.hangup_by == "caller"
    assert case.caller.caller_class.value == "public"
    recording = Path(case.recording_path)
    assert recording.name == f"{case.case_id}.wav" and recording.stat().st_size > 1000
    assert case.recording_s >= 2
    # Sealed at rest once measured (vault/): only the instance's key ring opens it.
    from vault import MAGIC, read_recording

    assert recording.read_bytes()[:4] == MAGIC
    audio = read_recording(recording, line.config.vault(create=False))
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE" and len(audio) > 16000


def test_primary_does_not_answer_backup_accepts(line: Hotline):
    result, since = line.call("13611110002", press="2", surgeons="ignore,accept")
    assert [r.number for r in result.rings] == ["13700000201", "13700000202"]
    case = line.case_for("13611110002", since)
    assert outcomes(case) == [("13700000201", A.NO_ANSWER), ("13700000202", A.ACCEPTED)]
    assert case.attempts[0].answered is False and case.attempts[0].ring_s >= 5
    assert case.connected_surgeon_id == 4 and case.outcome == "connected"


def test_surgeon_declines_and_the_next_one_accepts(line: Hotline):
    result, since = line.call("13611110003", press="1", surgeons="decline,accept")
    case = line.case_for("13611110003", since)
    assert outcomes(case) == [("13700000101", A.DECLINED), ("13700000102", A.ACCEPTED)]
    assert case.attempts[0].answered is True
    assert result.bridged_to == "13700000102"


def test_answered_without_a_key_counts_as_no_answer_and_escalates(line: Hotline):
    # A mobile voicemail box picks up but never presses 1: it must not swallow the call.
    result, since = line.call("13611110004", press="1", surgeons="no-key,accept")
    case = line.case_for("13611110004", since)
    assert outcomes(case) == [("13700000101", A.NO_ANSWER), ("13700000102", A.ACCEPTED)]
    assert case.attempts[0].answered is True
    assert result.bridged_to == "13700000102"


def test_caller_hangs_up_in_the_menu_case_kept_as_abandoned(line: Hotline):
    result, since = line.call("13611110005", press="", hangup_in_menu=True)
    assert result.rings == []
    case = line.case_for("13611110005", since)
    assert case.outcome == "abandoned" and case.hangup_by == "caller"
    assert case.attempts == [] and case.team is None


def test_invalid_then_missing_input_goes_to_the_duty_nurse(line: Hotline):
    # menu-test.toml: max_retries = 1 -> one invalid key, one timeout, then the nurse.
    result, since = line.call("13611110006", press="7", surgeons="accept")
    assert [r.number for r in result.rings] == [NURSE]
    case = line.case_for("13611110006", since)
    assert [m.choice for m in case.menu] == ["invalid", "timeout"]
    assert case.team == "nurse"
    assert [(a.kind, a.outcome) for a in case.attempts] == [("nurse", A.ACCEPTED)]
    assert case.outcome == "nurse"


def test_nobody_on_call_rings_the_duty_nurse(line: Hotline):
    result, since = line.call("13611110007", press="3", surgeons="accept")
    assert [r.number for r in result.rings] == [NURSE]
    case = line.case_for("13611110007", since)
    assert case.team == "burns" and case.outcome == "nurse"


def test_partner_hospital_skips_the_menu_to_referral(line: Hotline):
    result, since = line.call(PARTNER_NUMBER, press="", surgeons="accept")
    assert [r.number for r in result.rings] == ["13700000401"]
    case = line.case_for(PARTNER_NUMBER, since)
    assert case.caller.caller_class.value == "partner" and case.caller.hospital_id == 1
    assert case.team == "referral" and [m.choice for m in case.menu] == ["partner"]
    assert case.outcome == "connected"


def test_chain_exhausted_then_nurse_missed_ends_in_voicemail_and_a_callback(line: Hotline):
    from db.repo import CaseRepository
    from db.session import make_engine

    result, since = line.call("13611110008", press="2", surgeons="ignore", timeout_s=90)
    assert [r.number for r in result.rings] == ["13700000201", "13700000202", NURSE]
    case = line.case_for("13611110008", since)
    assert [a.outcome for a in case.attempts] == [A.NO_ANSWER] * 3
    assert case.outcome == "voicemail" and case.hangup_by == "system"
    voicemail = Path(case.voicemail_path)
    assert voicemail.name == f"{case.case_id}-voicemail.wav" and voicemail.stat().st_size > 1000
    engine = make_engine(line.config.db_url)
    try:
        callbacks = [c for c in CaseRepository(engine).callbacks() if c.case_id == case.case_id]
    finally:
        engine.dispose()
    assert len(callbacks) == 1


def test_service_stopped_before_the_call_static_fallback_still_reaches_a_human(line: Hotline):
    from hotline import instance

    instance.stop_service(line.config)
    try:
        result, since = line.call("13611110009", press="", surgeons="accept")
        assert [r.number for r in result.rings] == [NURSE]
        assert result.bridged_to == NURSE
    finally:
        instance.start_service(line.config, env=line.env)


def test_the_same_call_path_on_postgresql(line: Hotline, pg_database):
    """The service on PostgreSQL instead of SQLite: the case lands there, complete."""
    from conftest_support import seed_test_network

    url = pg_database.render_as_string(hide_password=False)
    seed_test_network(url)
    line.restart_service({**line.env, "HOTLINE_DATABASE_URL": url})
    try:
        result, since = line.call("13611110010", press="2", surgeons="decline,accept")
        case = line.case_for("13611110010", since, db_url=url)
        assert outcomes(case) == [("13700000201", A.DECLINED), ("13700000202", A.ACCEPTED)]
        assert case.outcome == "connected" and case.recording_s >= 1
        assert result.bridged_to == "13700000202"
    finally:
        line.restart_service()


def test_english_menu_then_a_choice(line: Hotline):
    # 9 switches the prompts to English; the next key chooses the team.
    result, since = line.call("13611110011", press="91", press_gap_s=2.5, surgeons="accept")
    case = line.case_for("13611110011", since)
    assert case.language == "en"
    assert [m.choice for m in case.menu] == ["9", "1"]
    assert case.team == "facial" and case.outcome == "connected"
