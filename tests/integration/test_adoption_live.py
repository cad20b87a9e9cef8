"""Issue 18, item 9: a call the current worker never saw start is adopted, live.

The real supervisor (`hotline serve`), the sandboxed Asterisk, baresip phones.
The worker is stopped (SIGSTOP) just as the hotline answers, so the call's
call_start reaches a process that never answers it; the supervisor kills and
replaces it. The replacement hears of the call first at the menu: it must
adopt it there -- start time, caller, menu path and team as they were --
instead of answering UnknownCall and opening the case only at the hang-up.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from conftest_support import Hotline, LogTail, asterisk_globals, kill_service
from hotline import instance
from ivr.channel_vars import HEARTBEAT

pytestmark = pytest.mark.integration

REPLANT_PRIMARY = "13700000201"


def heartbeat_fresh(line: Hotline, within_s: int = 2) -> bool:
    """Whether the service's heartbeat global in Asterisk is fresh (the dialplan asks it)."""
    value = asterisk_globals(line.config).get(HEARTBEAT, "0")
    return value.isdigit() and time.time() - int(value) <= within_s


def test_a_call_whose_start_went_to_a_hung_worker_is_adopted_by_the_next(broken: Hotline):
    caller = "13611110191"
    tail = LogTail(broken.config.instance_dir / "log" / "service.log")
    stopped: list[int] = []

    def hook(event: str) -> None:
        if event == "answered":
            worker = instance.worker_pid(broken.config)
            assert worker is not None
            os.kill(worker, signal.SIGSTOP)
            stopped.append(worker)
            # The caller presses only once the supervisor's replacement serves
            # (its heartbeat is fresh in Asterisk): the menu request is its first
            # word of this call, whatever the machine's speed.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if instance.worker_pid(broken.config) not in (None, worker) and heartbeat_fresh(broken):
                    return
                time.sleep(0.3)
            raise AssertionError("the supervisor did not replace the stopped worker")

    result, since = broken.call(caller, press="2", surgeons="accept", hook=hook, press_after_s=1.0)
    assert stopped and instance.worker_pid(broken.config) not in (None, *stopped)
    assert result.bridged_to == REPLANT_PRIMARY
    case = broken.case_for(caller, since)
    # Opened when the call began (the linkedid's second), not at the hang-up.
    assert since - timedelta(seconds=2) <= case.started_at <= since + timedelta(seconds=5)
    assert case.ended_at - case.started_at >= timedelta(seconds=8)
    assert case.team == "replant" and [m.choice for m in case.menu] == ["2"]
    assert [(a.phone, a.outcome.value) for a in case.attempts] == [(REPLANT_PRIMARY, "accepted")]
    assert case.outcome == "connected" and not case.fallback
    assert case.recording_path  # named as the dialplan named it: the writer found it
    log = tail.new()
    assert "its start reached no service worker" in log
    assert "UnknownCall" not in log


def test_reconciliation_gives_a_case_adopted_at_the_hang_up_its_team_and_menu(broken: Hotline):
    """The service is gone from the answer to the first ring (the mirror routes the
    call) and back for the hang-up, which adopts the call. Its case then holds no
    team and no menu path; reconciliation reads both from Asterisk's CEL."""
    from db.repo import CaseRepository
    from db.session import make_engine
    from hotline.reconcile import build_reconciler

    caller = "13611110192"
    restarted = threading.Event()

    def restart() -> None:
        instance.start_service(broken.config, env=broken.env)
        restarted.set()

    def hook(event: str) -> None:
        if event == "answered":
            kill_service(broken)
        elif event == f"ring:{REPLANT_PRIMARY}":
            threading.Thread(target=restart, daemon=True).start()

    result, since = broken.call(caller, press="2", surgeons="accept", talk_s=8, hook=hook)
    assert restarted.wait(20) and result.bridged_to == REPLANT_PRIMARY
    case = broken.case_for(caller, since)
    assert case.case_id == f"u{case.linkedid}" and case.fallback  # adopted at the hang-up
    assert broken.wait_no_channels() == 0
    engine = make_engine(broken.config.db_url)
    try:
        report = build_reconciler(broken.config, engine, settle_s=0).run(
            since - timedelta(seconds=5), datetime.now(timezone.utc) + timedelta(seconds=1))
        assert report.errors == [], report.lines()
        fixed = CaseRepository(engine).get_by_linkedid(case.linkedid)
    finally:
        engine.dispose()
    assert fixed.case_id == case.case_id
    assert since - timedelta(seconds=2) <= fixed.started_at <= since + timedelta(seconds=5)
    assert fixed.team == "replant" and [(m.choice, m.label) for m in fixed.menu] == [("2", "replant")]
    assert [a.phone for a in fixed.attempts] == [REPLANT_PRIMARY]
