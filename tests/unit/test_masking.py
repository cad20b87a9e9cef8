"""Phone numbers masked where a whole one is not needed: lists, logs (issue 9)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from hotline.notify import LogNotifier
from oncall.notices import Notice
from routing.callers import mask_number


@pytest.mark.parametrize("raw, masked", [
    ("13912345678", "139****5678"),
    ("043188888888", "043*****8888"),
    ("+8613912345678", "+861******5678"),
    ("1234567", "*****67"),  # a local number without its area code
    ("12345678", "****5678"),
    ("120", "*20"),
    ("", ""),
    (None, ""),
    ("anonymous", "anonymous"),
    ("=1+2", "=1+2"),  # under seven digits only the last two show: both
    ("1391234567\\r\\n", "******4567\\r\\n"),  # an escaped raw_safe: the escapes stay
])
def test_mask_number(raw, masked):
    assert mask_number(raw) == masked


def test_only_seven_digits_show_of_a_long_hostile_number():
    masked = mask_number("9" * 1000)
    assert masked == "999" + "*" * 993 + "9999"


def test_the_call_desk_logs_only_a_masked_caller(caplog):
    from tests.unit.test_calls import CALLER, T0, build_roster, FakeRoster, RecordingSink
    from ivr.calls import CallDesk
    from ivr.menu import load_menu
    from hotline.config import PROJECT_DIR

    desk = CallDesk(load_menu(PROJECT_DIR / "ivr" / "menu.toml"), FakeRoster(build_roster()),
                    RecordingSink())
    with caplog.at_level(logging.INFO, logger="ivr.calls"):
        desk.call_start("L-1", "PJSIP/x-1", CALLER, T0)
    text = caplog.text
    assert "call started" in text and CALLER not in text and mask_number(CALLER) in text


def test_the_log_notifier_cuts_numbers_in_notice_texts(caplog):
    log = logging.getLogger("test.notices")
    notice = Notice(key="missed:1", kind="missed_call", team=None, surgeon_id=None,
                    due_at=datetime(2026, 12, 1, tzinfo=timezone.utc),
                    text_zh="【96608未接来电】来电 13912345678，病例 20261201-100000-abcdef",
                    text_en="missed call from 13912345678")
    with caplog.at_level(logging.INFO, logger="test.notices"):
        LogNotifier(log).send(notice, None)
    assert "13912345678" not in caplog.text and "****5678" in caplog.text
    assert "20261201-100000-abcdef" in caplog.text
