"""classify: caller classes from a hostile caller-ID."""
from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from routing.callers import (
    RAW_KEEP,
    RAW_SAFE_MAX,
    Caller,
    CallerClass,
    classify,
    normalise_number,
    safe_text,
)

PARTNERS = {"043188888888": 1, "13900000002": 2}


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("13800000001", "13800000001"),
        ("+8613800000001", "13800000001"),
        ("+86 138 0000 0001", "13800000001"),
        ("008613800000001", "13800000001"),
        ("8613800000001", "13800000001"),
        ("138-0000-0001", "13800000001"),
        ("+86431 8888 0000", "043188880000"),
        ("+86 0431 8888 0000", "043188880000"),
        ("0086 10 1234 5678", "01012345678"),
        ("0431-8888-0000", "043188880000"),
        ("+14165551212", "0014165551212"),
        ("0014165551212", "0014165551212"),
        ("120", "120"),
        ("96608", "96608"),
        (" 13800000001 ", "13800000001"),
    ],
)
def test_numbers_are_normalised_to_national_form(raw, number):
    caller = classify(raw, {})
    assert caller == Caller(number, CallerClass.PUBLIC, None, safe_text(raw), raw)
    assert normalise_number(raw) == number


@pytest.mark.parametrize("raw", ["+86 431 8888 8888", "043188888888", "0086-431-88888888", "+8643188888888"])
def test_partner_numbers_take_the_fast_lane(raw):
    caller = classify(raw, PARTNERS)
    assert (caller.number, caller.caller_class, caller.hospital_id) == (
        "043188888888", CallerClass.PARTNER, 1)


def test_partner_mobile():
    assert classify("+86 139 0000 0002", PARTNERS).hospital_id == 2


@pytest.mark.parametrize(
    "raw", [None, "", "   ", "anonymous", "Anonymous", "unknown", "RESTRICTED", "private", "unavailable"]
)
def test_anonymous(raw):
    caller = classify(raw, PARTNERS)
    assert caller.caller_class is CallerClass.ANONYMOUS
    assert caller.number is None and caller.hospital_id is None


HOSTILE = [
    "500&PJSIP/trunk/0014165551212",  # dialplan injection (README-SERIOUSLY)
    "13800000001&PJSIP/trunk/001",
    "1380000'; DROP TABLE cases;--",
    "13800000001; rm -rf /",
    "$(reboot)",
    "${EXTEN}",
    "`id`",
    "138\r\n0000",
    "13800000001\r\nInjected: log line",
    "13800000001\n",
    "\x00",
    "1380000\x000001",
    "../../etc/passwd",
    "..\\..\\windows",
    "1" * 1024,
    "x" * 1024,
    "１３８００００００００１",  # fullwidth digits
    "١٣٨٠٠٠٠٠٠٠١",  # Arabic-Indic digits
    "۱۳۸۰۰۰۰۰۰۰۱",  # Extended Arabic-Indic digits
    "13800000001\u200f",  # bidi mark
    "12",
    "1" * 21,
    "++8613800000001",
    "+",
    "-",
    "+-+13800000001",
    "0x1F",
    "1e10",
    "sip:13800000001@evil",
    "\t13800000001",
    "0086",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_caller_ids_are_invalid(raw):
    caller = classify(raw, PARTNERS)
    assert caller.caller_class is CallerClass.INVALID
    assert caller.number is None and caller.hospital_id is None
    assert_safe(caller.raw_safe)
    assert caller.raw == raw[:RAW_KEEP]


def test_raw_is_kept_but_bounded_and_out_of_repr():
    caller = classify("9" * 5000, {})
    assert caller.raw == "9" * RAW_KEEP
    assert "raw=" not in repr(caller)


def test_not_text_is_invalid():
    caller = classify(b"13800000001", PARTNERS)  # type: ignore[arg-type]
    assert caller.caller_class is CallerClass.INVALID and caller.number is None


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("13800000001", "13800000001"),
        ("a\r\nb\x00c\td", "a\\r\\nb\\x00c\\td"),
        ("back\\slash", "back\\\\slash"),
        ("王建国 13800000001", "王建国 13800000001"),
        ("１", "\\uff11"),
        ("٣", "\\u0663"),
        ("…", "\\u2026"),
        ("\x7f\x1b[31m", "\\x7f\\x1b[31m"),
        ("😀", "\\U0001f600"),
        ("\ud800", "\\ud800"),
    ],
)
def test_raw_safe_escapes(raw, shown):
    assert safe_text(raw) == shown


def test_raw_safe_is_cut_with_a_marker():
    shown = safe_text("x" * 1024)
    assert shown == "x" * (RAW_SAFE_MAX - 1) + "…"
    assert safe_text("x" * RAW_SAFE_MAX) == "x" * RAW_SAFE_MAX  # fits exactly: no marker


def test_a_cut_never_splits_an_escape():
    shown = safe_text("\x00" * 100)
    assert shown.endswith("…") and len(shown) <= RAW_SAFE_MAX
    assert shown[:-1] == "\\x00" * ((RAW_SAFE_MAX - 1) // 4)


def assert_safe(shown: str) -> None:
    assert len(shown) <= RAW_SAFE_MAX
    assert not {"\r", "\n", "\x00"} & set(shown)
    assert all(0x20 <= ord(c) <= 0x7E or 0x3400 <= ord(c) <= 0x9FFF or c == "…" for c in shown)


phone_like = st.from_regex(re.compile(r"\A[+]?[0-9 \-]{0,24}\Z"))


@given(st.one_of(st.none(), st.text(), st.text(max_size=2000), phone_like))
@example("\r\n" * 600)
@example("\x00" * 70)
def test_classify_never_raises_and_raw_safe_is_safe(raw):
    caller = classify(raw, PARTNERS)
    assert_safe(caller.raw_safe)
    assert len(caller.raw_safe) <= 65  # the brief's bound; the code keeps 64
    if caller.number is not None:
        assert re.fullmatch(r"[0-9]{3,22}", caller.number, re.ASCII)
        assert caller.caller_class in (CallerClass.PUBLIC, CallerClass.PARTNER)
    else:
        assert caller.caller_class in (CallerClass.ANONYMOUS, CallerClass.INVALID)
    assert (caller.hospital_id is not None) == (caller.caller_class is CallerClass.PARTNER)


@given(phone_like)
def test_normalising_is_idempotent(raw):
    number = normalise_number(raw)
    if number is not None:
        assert normalise_number(number) == number
