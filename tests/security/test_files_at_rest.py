"""Personal data on disk (issue 18, item 6), against the demo as `hotline up` runs it.

Two real SIP calls go through the demo (tests/security/demo_support.py): one
the service serves whole, one while the service is down, so that the
service's reconcile job (every 5 s here) makes its case and attaches its
recording. Then the instance's files are read the way another local user or
a backup would see them.
"""
from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Iterator

import pytest

from conftest_support import Hotline
from db.repo import CaseRepository
from db.session import make_engine
from hotline import instance
from routing.callers import mask_number
from vault import is_sealed_file, read_recording

pytestmark = pytest.mark.integration

SERVED_CALLER = "13611180061"  # the service serves this call whole
RECONCILED_CALLER = "13611180062"  # the service is down: reconciliation makes the case
PRESS = "2"  # replantation: 丙 13700000201 accepts
SURGEON = "13700000201"


@pytest.fixture(scope="module")
def two_calls(demo: Hotline):
    """A call the service serves whole, then one while it is down; both cases finished.

    The second call takes the dialplan's mirror of the chains (the service is
    stopped): the surgeon accepts, MixMonitor records, and the case is made
    later by the service's reconcile job from CDR/CEL -- its caller, every
    phone rung and the recording, all written to the service log as it goes.
    """
    demo.wait_mirror()
    result, served_since = demo.call(SERVED_CALLER, press=PRESS, surgeons="accept", talk_s=3)
    assert result.bridged_to == SURGEON
    served = demo.case_for(SERVED_CALLER, served_since)
    instance.stop_service(demo.config)
    try:
        result, since = demo.call(RECONCILED_CALLER, press=PRESS, surgeons="accept", talk_s=3)
        assert result.bridged_to == SURGEON
    finally:
        instance.start_service(demo.config, env=demo.env)
    assert demo.wait_no_channels() == 0
    # The job waits cases.reconcile.SETTLE_S (60 s) after a call's last event.
    reconciled = demo.case_for(RECONCILED_CALLER, since, timeout_s=150)
    assert reconciled.case_id.startswith("r-"), "not a case the reconciler made"
    assert reconciled.recording_path, "reconciliation attached no recording"
    return served, reconciled


# -- item 6: personal data on disk ------------------------------------------------------
def _walk(root: Path) -> Iterator[Path]:
    yield root
    for path in root.rglob("*"):
        if not path.is_symlink():
            yield path


def test_no_file_of_the_instance_is_readable_by_other_users(demo, two_calls):
    config = demo.config
    roots = [config.var_dir, config.data_key_path.parent.parent]
    seen, open_to_others = 0, []
    for root in roots:
        for path in _walk(root):
            seen += 1
            mode = path.lstat().st_mode
            if stat.S_IMODE(mode) & 0o077:
                open_to_others.append(f"{oct(stat.S_IMODE(mode))} {path}")
    names = {p.name for root in roots for p in _walk(root)}
    # The walk saw what matters: the database, Asterisk's records and logs, a recording.
    assert {"files.db", "cdr.db", "cel.db", "console.log", "service.log", "security.log",
            "messages.log", "data.key", Path(two_calls[0].recording_path).name} <= names, names
    assert seen > 50
    assert open_to_others == [], "\n".join(open_to_others)


def test_no_log_holds_a_whole_number_or_a_key_pressed(demo, two_calls):
    logs = [p for p in demo.config.var_dir.rglob("*") if p.is_file() and p.suffix == ".log"]
    assert {p.name for p in logs} >= {"console.log", "service.log", "messages.log", "security.log"}
    numbers = (SERVED_CALLER, RECONCILED_CALLER, SURGEON)
    found = []
    for log in logs:
        for number, line in ((n, line) for line in log.read_text(errors="replace").splitlines()
                             for n in numbers if n in line):
            found.append(f"{log.name}: {number}: {line[:300]}")
    assert found == [], "\n".join(found[:20])
    service_log = (demo.config.instance_dir / "log" / "service.log").read_text(errors="replace")
    # The reconcile job did log the call it made a case of -- its numbers masked.
    assert f"caller {mask_number(RECONCILED_CALLER)}" in service_log, "no reconcile line to check"
    # Keys: the dialplan trace (Read() results, DTMF events) is what would hold them.
    keyed = [f"{log.name}: {line[:200]}" for log in logs
             for line in log.read_text(errors="replace").splitlines()
             if "DTMF" in line or "Executing [" in line or "HOTLINE_CHOICE" in line]
    assert keyed == [], "\n".join(keyed[:20])


def test_every_recording_is_sealed_whichever_path_stored_it(demo, two_calls):
    served, reconciled = two_calls
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not all(
            is_sealed_file(Path(c.recording_path)) for c in (served, reconciled)):
        time.sleep(0.5)
    assert is_sealed_file(Path(served.recording_path)), "the case writer's recording is plain"
    assert is_sealed_file(Path(reconciled.recording_path)), "the reconciled recording is plain"
    audio = [p for p in demo.config.recordings_dir.rglob("*") if p.is_file()]
    assert len(audio) >= 2 and [p for p in audio if not is_sealed_file(p)] == []


def test_the_key_ring_lives_apart_from_the_data(demo, two_calls):
    config = demo.config
    ring = config.data_key_path
    assert ring.is_file() and not ring.resolve().is_relative_to(config.var_dir.resolve())
    assert stat.S_IMODE(ring.stat().st_mode) == 0o600
    assert stat.S_IMODE(ring.parent.stat().st_mode) == 0o700
    assert [p for p in config.var_dir.rglob("data.key")] == []
    # It is the ring that sealed the recordings.
    engine = make_engine(config.db_url)
    try:
        case = CaseRepository(engine).get_by_linkedid(two_calls[0].linkedid)
    finally:
        engine.dispose()
    assert read_recording(Path(case.recording_path), config.vault(create=False))[:4] == b"RIFF"
