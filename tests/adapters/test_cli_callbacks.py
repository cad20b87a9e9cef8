"""`hotline callback ...` against a real database (SQLite and PostgreSQL)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from cases.lifecycle import mark_ended, open_case, set_team, set_voicemail
from db.callbacks import CallbackStore
from db.repo import CaseRepository, write_roster
from hotline.cli import main
from network.callbacks import CallbackStatus
from oncall.model import Rank, Surgeon, Team
from routing.callers import classify

T0 = datetime.now(timezone.utc) - timedelta(minutes=30)


@pytest.fixture
def hotline(engine, db_url, tmp_path, monkeypatch, capsys):
    with engine.begin() as conn:
        write_roster(conn, [Team("facial", "颌面部创伤", "Facial")],
                     [Surgeon(1, "王建国", "13800000001", Rank.ATTENDING)], ())
    for case_id, caller in (("C-1", "13912345678"), ("C-2", None)):
        case = open_case(case_id, f"1.{case_id[-1]}", classify(caller, {}), T0)
        set_team(case, T0, "facial")
        set_voicemail(case, T0 + timedelta(seconds=40), f"/rec/{case_id}-voicemail.wav")
        mark_ended(case, T0 + timedelta(seconds=60), "system")
        CaseRepository(engine).save(case)
    monkeypatch.setenv("HOTLINE_DATABASE_URL", db_url)
    monkeypatch.setenv("HOTLINE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("HOTLINE_CONFIG", raising=False)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err
    return run


def test_list_place_assign_close(hotline, engine):
    store = CallbackStore(engine)
    known, unknown = store.for_case("C-1"), store.for_case("C-2")
    code, out, _ = hotline("callback", "list")
    assert code == 0 and "13912345678" in out and "unknown-number" in out and "OVERDUE" in out
    code, _, err = hotline("callback", "place", str(known.id))
    assert code == 1 and "no owner" in err  # nobody to ring first
    assert hotline("callback", "place", str(known.id), "--surgeon", "77")[0] == 1  # no such surgeon
    code, out, _ = hotline("callback", "place", str(known.id), "--surgeon", "1")
    assert code == 0 and "placing" in out
    task = store.get(known.id)
    assert task.status is CallbackStatus.PLACING and task.placed_by.startswith("cli:")
    assert hotline("callback", "assign", str(unknown.id), "--surgeon", "1")[0] == 0
    assert store.get(unknown.id).owner_surgeon_id == 1
    assert hotline("callback", "close", str(unknown.id))[0] == 2  # --note is required
    code, out, _ = hotline("callback", "close", str(unknown.id), "--note", "reached", "--cancelled")
    assert code == 0 and "cancelled" in out
    assert hotline("callback", "close", "999", "--note", "x")[0] == 1
    assert hotline("callback", "place")[0] == 2
