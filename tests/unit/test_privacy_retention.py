"""The retention policy (pure): defaults, validation, overrides, cut-offs; the export's pure helpers."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from privacy.export import ExportError, check_number, member_name, readme_text
from privacy.retention import (AUDIT_MIN_DAYS, CASE_RECORD_DAYS, DataKind, RetentionError,
                               RetentionPolicy, cutoffs, load_policy)

NOW = datetime(2026, 12, 1, 3, 30, tzinfo=timezone.utc)


def test_defaults_follow_the_law_and_the_brief():
    policy = RetentionPolicy()
    assert policy.cases_days == CASE_RECORD_DAYS == 5475  # 15 years, 医疗机构病历管理规定
    assert policy.recordings_days == 1095
    assert policy.audit_days == 1095
    assert policy.notices_days == 90
    assert policy.sessions_days == 30
    assert policy.blocklist_days == 365
    assert policy.warnings() == []
    assert {k.config_key for k in DataKind} == {
        "retention_cases_days", "retention_recordings_days", "retention_audit_days",
        "retention_notices_days", "retention_sessions_days", "retention_blocklist_days"}


def test_cutoffs_are_exactly_the_period_back():
    got = cutoffs(RetentionPolicy(), NOW)
    assert set(got) == set(DataKind)
    assert got[DataKind.RECORDINGS] == NOW - timedelta(days=1095)
    assert got[DataKind.CASES] == NOW - timedelta(days=5475)
    assert got[DataKind.SESSIONS] == NOW - timedelta(days=30)
    # Another zone, same instant: the same cut-offs.
    local = NOW.astimezone(ZoneInfo("Asia/Shanghai"))
    assert cutoffs(RetentionPolicy(), local)[DataKind.AUDIT] == got[DataKind.AUDIT]


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="naive"):
        cutoffs(RetentionPolicy(), datetime(2026, 1, 1))


@pytest.mark.parametrize("key", ["recordings", "recordings_days", "retention_recordings_days"])
def test_overrides_by_kind_field_or_config_key(key):
    assert load_policy({key: 400}).recordings_days == 400
    assert load_policy({key: 400}).cases_days == 5475


def test_no_overrides_is_the_default():
    assert load_policy({}) == RetentionPolicy() == load_policy(None)


@pytest.mark.parametrize("overrides, message", [
    ({"recordings": -1}, "at least 1"),
    ({"recordings": 0}, "at least 1"),
    ({"audit": 0}, "at least 1"),
    ({"audit": AUDIT_MIN_DAYS - 1}, "Cybersecurity Law"),
    ({"audit": 30}, "6 months"),
    ({"cases": 365, "recordings": 366}, "cannot outlive its case"),
    ({"recordings": 6000}, "cannot outlive its case"),
    ({"notices": 1}, "sent twice"),
    ({"sessions": 0}, "at least 1"),
    ({"blocklist": 10 ** 6}, "at most"),
    ({"cases": True}, "whole number"),
    ({"cases": "5475"}, "whole number"),
    ({"cases": 1.5}, "whole number"),
    ({"recording": 10}, "unknown retention setting"),
    ({"retention_recordings": 10}, "unknown retention setting"),
    ({"'; DROP TABLE cases; --": 10}, "unknown retention setting"),
])
def test_nonsense_is_refused(overrides, message):
    with pytest.raises(RetentionError, match=message):
        load_policy(overrides)


def test_audit_minimum_is_accepted_and_a_short_case_period_warns():
    assert load_policy({"audit": AUDIT_MIN_DAYS}).audit_days == AUDIT_MIN_DAYS
    policy = load_policy({"cases": 3650, "recordings": 365})
    assert policy.cases_days == 3650
    assert any("15 years" in w for w in policy.warnings())


def test_recordings_may_equal_cases():
    assert load_policy({"cases": 2000, "recordings": 2000}).recordings_days == 2000


# -- the export's pure helpers ---------------------------------------------------


@pytest.mark.parametrize("raw, number", [
    ("13912345678", "13912345678"),
    ("+86 139-1234-5678", "13912345678"),
    ("8613912345678", "13912345678"),
    ("043188888888", "043188888888"),
])
def test_check_number_normalises(raw, number):
    assert check_number(raw) == number


@pytest.mark.parametrize("raw", [
    "", "   ", "139'; DROP TABLE cases; --", "139$(rm -rf /)", "139`id`", "139|cat", "139%",
    "１３９１２３４５６７８", "139１２３４５６７８", "1" * 1024, "13912345678\n", "13912345678\x00",
    "../../etc/passwd", "13912345678*", None, 13912345678, b"13912345678",
])
def test_check_number_refuses_hostile_input(raw):
    with pytest.raises(ExportError) as caught:
        check_number(raw)
    # The refusal never echoes the input back.
    if isinstance(raw, str) and len(raw) > 3:
        assert raw not in str(caught.value)


def test_member_names_cannot_leave_the_recordings_folder():
    assert member_name("20261201-033000-abcdef", "call", "/x/a.WAV") == \
        "recordings/20261201-033000-abcdef-call.wav"
    assert member_name("r-17.2:x/../y", "voicemail", "/x/a.exe") == \
        "recordings/r-17.2_x_.._y-voicemail.bin"


def test_readme_is_bilingual_and_holds_only_the_masked_number():
    text = readme_text("139****5678", NOW, 3, 2, 1)
    assert "139****5678" in text and "13912345678" not in text
    assert "个人信息保护法" in text and "Personal Information Protection Law" in text
    assert "2026-12-01 11:30" in text  # Asia/Shanghai
    assert "Audio not included: 1" in text


def test_policy_from_a_config_with_or_without_the_keys():
    from types import SimpleNamespace

    from privacy.retention import policy_from_config

    assert policy_from_config(SimpleNamespace()) == RetentionPolicy()
    config = SimpleNamespace(retention_recordings_days=730, retention_notices_days=None)
    assert policy_from_config(config) == RetentionPolicy(recordings_days=730)
    with pytest.raises(RetentionError, match="Cybersecurity"):
        policy_from_config(SimpleNamespace(retention_audit_days=90))
