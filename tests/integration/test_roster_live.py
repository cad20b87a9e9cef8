"""A roster change made with `hotline roster` reaches live calls through the real Asterisk.

The CLI writes to the database; the running service notices the write (roster
version probe), re-pushes the chain into Asterisk's globals and routes the next call by it.
"""
from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

import pytest

from ivr.channel_vars import chain_var

from conftest_support import Hotline, mirrored_chains

pytestmark = pytest.mark.integration


def roster_cli(line: Hotline, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "hotline", "roster", *args], env=line.env,
                          capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def first_in_chain(line: Hotline, team: str) -> str:
    return mirrored_chains(line.config).get(chain_var(team, 1), "")


def wait_first_in_chain(line: Hotline, team: str, phone: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if first_in_chain(line, team) == phone:
            return
        time.sleep(0.3)
    raise AssertionError(f"the mirror never showed {phone} first for {team}: {first_in_chain(line, team)!r}")


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token(line: Hotline, name: str, role: str, *extra: str) -> str:
    done = subprocess.run([sys.executable, "-m", "hotline", "token", "create", "--name", name,
                           "--role", role, *extra], env=line.env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_json_api_served_by_hotline_console_changes_live_routing(line: Hotline):
    import json
    import urllib.request

    port = free_port()
    log = open(line.workdir / "console.log", "wb")  # read it when this test fails
    console = subprocess.Popen([sys.executable, "-m", "hotline", "console", "--port", str(port)],
                               env=line.env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/api/v1/roster"
    try:
        supervisor = token(line, "it-supervisor", "supervisor")
        calendar = token(line, "it-calendar", "calendar")

        def call(method: str, path: str, body: dict | None = None) -> dict:
            request = urllib.request.Request(
                base + path, method=method, data=json.dumps(body).encode() if body else None,
                headers={"Authorization": f"Bearer {supervisor}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())

        deadline = time.monotonic() + 20
        while True:  # until waitress listens
            try:
                chain = call("GET", "/now?team=replant")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert "13700000201" in json.dumps(chain, ensure_ascii=False), chain

        now = datetime.now(timezone.utc)
        added = call("POST", "/overrides", {
            "team": "replant", "role": "primary", "surgeon_id": 4,
            "start": iso(now - timedelta(minutes=1)), "end": iso(now + timedelta(minutes=30))})
        try:
            wait_first_in_chain(line, "replant", "13700000202")
        finally:
            call("DELETE", f"/overrides/{added['id']}")
        wait_first_in_chain(line, "replant", "13700000201")

        with urllib.request.urlopen(f"{base}/teams/replant.ics?token={calendar}", timeout=10) as feed:
            assert feed.headers["Content-Type"].startswith("text/calendar")
            assert b"BEGIN:VEVENT" in feed.read()
    finally:
        console.terminate()
        console.wait(10)
        log.close()


def test_the_running_service_alerts_a_roster_gap_once_across_a_restart(line: Hotline):
    from sqlalchemy import select

    from db.models import NoticeRow
    from db.session import make_engine

    engine = make_engine(line.config.db_url)

    def gap_alerts(team: str) -> list:
        with engine.connect() as conn:
            return conn.execute(select(NoticeRow.key, NoticeRow.sent_at).where(
                NoticeRow.kind == "roster_gap", NoticeRow.team == team)).all()

    def wait_sent(team: str, timeout_s: float = 90.0) -> list:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = gap_alerts(team)
            if rows and all(sent is not None for _, sent in rows):
                return rows
            time.sleep(0.5)
        raise AssertionError(f"no sent gap alert for {team}: {gap_alerts(team)!r}")

    leave_id = None
    try:
        # Nobody is on call for burns in the test network: the service's collect
        # job (at start, then every minute) alerts it, the deliver job sends it.
        before = wait_sent("burns")
        line.restart_service()
        line.wait_mirror()
        # A new finding after the restart proves the new process collects and
        # delivers; the old alert must not have been made or sent again.
        start = datetime.now(timezone.utc) + timedelta(hours=2)
        added = roster_cli(line, "leave", "add", "--surgeon", "5", "--start", iso(start),
                           "--end", iso(start + timedelta(hours=1)))
        leave_id = added.stdout.split()[1]
        wait_sent("referral")
        assert gap_alerts("burns") == before
    finally:
        if leave_id:
            roster_cli(line, "leave", "remove", "--id", leave_id)
        engine.dispose()
