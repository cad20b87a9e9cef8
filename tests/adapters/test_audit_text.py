"""An audit entry is written whatever hostile text it names (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import datetime, timezone

from db.users import AuditLog


def test_a_nul_in_any_field_is_stored_as_a_replacement_character(engine):
    log = AuditLog(engine, clock=lambda: datetime(2026, 12, 1, tzinfo=timezone.utc))
    log.record("user:ev\x00il", "sign_in_failed", "user", "ad\x00min", ip="1.2.3.4\x00",
               detail={"reason": "bad\x00password"})
    (entry,), total = log.entries(action="sign_in_failed")
    assert total == 1
    assert (entry.actor, entry.subject_id, entry.ip) == ("user:ev\ufffdil", "ad\ufffdmin",
                                                         "1.2.3.4\ufffd")
    assert entry.detail["reason"] == "bad\x00password"  # kept in the JSON, escaped


def test_long_values_are_cut_to_their_columns(engine):
    log = AuditLog(engine)
    log.record("a" * 500, "x" * 100, "s" * 100, "i" * 500, ip="9" * 100)
    (entry,), _ = log.entries()
    assert (len(entry.actor), len(entry.action), len(entry.subject), len(entry.subject_id),
            len(entry.ip)) == (128, 48, 32, 64, 64)
