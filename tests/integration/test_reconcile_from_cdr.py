"""Reconciliation end to end: a call served while the service was down becomes one case.

Real Asterisk writes CDR/CEL into the instance's log dir; the reconciler reads
them there, as the service's job and `hotline reconcile` do.
"""
from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pytest

from conftest_support import NURSE, Hotline
from db.repo import CaseRepository
from db.session import make_engine
from hotline import instance
from hotline.config import PROJECT_DIR
from hotline.reconcile import CEL_FILE, build_reconciler
from routing.escalation import NURSE as NURSE_KIND
from routing.escalation import AttemptOutcome

pytestmark = pytest.mark.integration


def test_call_served_by_the_static_fallback_is_reconciled_into_one_case(line: Hotline):
    # A call the service serves itself: reconciliation must leave its case alone.
    _, live_since = line.call("13611119001", press="1", surgeons="accept", talk_s=1)
    live = line.case_for("13611119001", live_since)

    instance.stop_service(line.config)
    try:
        result, since = line.call("13611119002", press="", surgeons="accept", talk_s=2)
        assert result.bridged_to == NURSE
    finally:
        instance.start_service(line.config, env=line.env)
    assert line.wait_no_channels() == 0
    assert (line.config.instance_dir / "log" / CEL_FILE).is_file()

    engine = make_engine(line.config.db_url)
    try:
        repo = CaseRepository(engine)

        def mine():
            return [c for c in repo.recent(50)
                    if c.caller.raw_safe == "13611119002" and c.started_at >= since - timedelta(seconds=2)]

        assert mine() == [], "the service was down: no case can exist yet"
        # settle_s=0: the call has just ended, and no service is writing it.
        reconciler = build_reconciler(line.config, engine, settle_s=0)
        # The window may also hold the end of an earlier test's call (one Asterisk per
        # session): only this test's two calls are counted exactly.
        window = (live_since, datetime.now(timezone.utc) + timedelta(seconds=1))
        report = reconciler.run(*window)
        assert report.errors == [] and report.count("error") == 0, report.lines()
        assert report.count("created") == 1 and report.count("unchanged") >= 1, report.lines()

        [case] = mine()
        assert case.case_id == f"r-{case.linkedid}"
        assert case.fallback and case.outcome == "fallback"
        assert case.caller.number == "13611119002" and case.caller.caller_class.value == "public"
        [attempt] = case.attempts
        assert (attempt.kind, attempt.phone, attempt.outcome) == (NURSE_KIND, NURSE, AttemptOutcome.ACCEPTED)
        assert attempt.answered
        assert case.connected_seq == 1 and case.connected_at is not None
        assert case.started_at < attempt.started_at < case.connected_at < case.ended_at
        assert case.ended_at - case.connected_at >= timedelta(seconds=1)  # talked 2 s
        assert case.hangup_by == "caller"
        assert repo.get(live.case_id).revision == live.revision  # left alone

        again = reconciler.run(*window)
        assert not again.changed and again.errors == [], again.lines()
        assert again.count("unchanged") == report.count("created") + report.count("unchanged")
        assert mine()[0].revision == case.revision
    finally:
        engine.dispose()

    # The command, as an operator runs it (calls this fresh are left to the service).
    out = subprocess.run([sys.executable, "-m", "hotline", "reconcile", "--since", "10m", "--dry-run"],
                         env=line.env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "dry run: nothing saved" in out.stdout and " calls: " in out.stdout
