"""A roster change made with `hotline roster` reaches live calls through the real Asterisk.

The CLI writes to the database; the running service notices the write (roster
version probe), re-pushes the chain into AstDB and routes the next call by it.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from hotline import instance

from conftest_support import Hotline

pytestmark = pytest.mark.integration


def roster_cli(line: Hotline, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "hotline", "roster", *args], env=line.env,
                          capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def first_in_chain(line: Hotline, team: str) -> str:
    out = instance.asterisk_cli(line.config, f"database get hotline-chain {team}/1")
    return " ".join(out)


def wait_first_in_chain(line: Hotline, team: str, phone: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if phone in first_in_chain(line, team):
            return
        time.sleep(0.3)
    raise AssertionError(f"AstDB never showed {phone} first for {team}: {first_in_chain(line, team)!r}")


def iso(at: datetime) -> str:
    return at.astimezone(timezone.utc).isoformat()


def test_an_override_from_the_cli_routes_the_next_call_and_its_removal_restores(line: Hotline):
    line.wait_mirror("13700000101")
    now = datetime.now(timezone.utc)
    added = roster_cli(line, "override", "add", "--team", "facial", "--role", "一线",
                       "--surgeon", "2", "--start", iso(now - timedelta(minutes=1)),
                       "--end", iso(now + timedelta(minutes=30)), "--note", "integration test")
    override_id = re.search(r"override (\d+) added", added.stdout).group(1)
    try:
        shown = roster_cli(line, "now", "--team", "facial").stdout
        assert shown.index("乙 backup facial") < shown.index("until")
        wait_first_in_chain(line, "facial", "13700000102")

        result, since = line.call("13611114001", press="1", surgeons="accept")
        assert [r.number for r in result.rings][:1] == ["13700000102"]
        case = line.case_for("13611114001", since)
        assert case.connected_surgeon_id == 2 and case.outcome == "connected"
    finally:
        roster_cli(line, "override", "remove", "--id", override_id)
    wait_first_in_chain(line, "facial", "13700000101")
    audit = roster_cli(line, "audit", "--subject", "override").stdout
    assert f"remove_override  override {override_id}" in audit
    assert f"add_override     override {override_id}" in audit


def test_roster_check_reports_the_team_nobody_covers(line: Hotline):
    done = roster_cli(line, "check", "--days", "1", check=False)
    assert done.returncode == 3, done.stderr
    assert re.search(r"^gap\s+burns\s", done.stdout, re.M)
