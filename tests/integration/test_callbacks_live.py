"""Callbacks through the real sandboxed Asterisk, with real SIP phones.

A call that ends in voicemail opens a callback task; a surgeon's API token
places it (POST /api/v1/callbacks/<id>/place, the console app in-process on
the instance's database); the service's one AMI Originate rings that
surgeon's baresip phone first, the surgeon presses 1, then the caller's phone
(an account on the surgeons' trunk whose user is the caller's number) rings
and answers. The callback is stored as its own case linked to the first, with
its recording, and the task is done. Also: "call me back" (key 8) in the menu.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest

from conftest_support import NURSE, SURGEONS, Hotline
from db.callbacks import CallbackStore
from db.repo import CaseRepository
from db.session import make_engine
from db.tokens import TokenStore
from network.callbacks import CallbackReason, CallbackStatus
from testphones.callback import TrunkPhones

CALLER = "13629000001"  # this file's callers: 1362900xxxx
CALL_ME_BACK = "13629000002"
REJECTED = "13629000003"
SURGEON = SURGEONS[2]  # 丙, primary of replant: 13700000201


@pytest.fixture
def engine(line: Hotline):
    engine = make_engine(line.config.db_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _wait(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_voicemail_becomes_a_task_placed_from_the_api_surgeon_first_then_the_caller(
        line: Hotline, engine):
    from console import create_app

    # 1. Burns has nobody on call: the duty nurse rings out, the caller leaves a voicemail.
    result, since = line.call(CALLER, press="3", surgeons="ignore", timeout_s=90)
    assert [r.number for r in result.rings] == [NURSE]
    first = line.case_for(CALLER, since)
    assert first.outcome == "voicemail"
    store = CallbackStore(engine)
    task = _wait(lambda: store.for_case(first.case_id), 20, "the callback task")
    assert (task.reason, task.status, task.number) == (CallbackReason.VOICEMAIL,
                                                       CallbackStatus.OPEN, CALLER)
    assert task.owner_surgeon_id is None  # burns had no primary on call

    # 2. The duty desk gives it to a surgeon (burns has nobody on call; a surgeon
    # acts only on their own tasks or their teams'), whose token places it.
    store.assign(task.id, SURGEON.id, "it:desk")
    _, secret = TokenStore(engine).create(f"cb-live-{int(time.time())}", "surgeon",
                                          surgeon_id=SURGEON.id)
    app = create_app(engine=engine, test_config={"TESTING": True, "SECRET_KEY": "it-only"})
    workdir = Path(tempfile.mkdtemp(dir=line.workdir))
    with TrunkPhones(workdir, [s.phone for s in SURGEONS] + [NURSE, CALLER],
                     line.config.ports.surgeon_phones) as phones:
        answer = app.test_client().post(f"/api/v1/callbacks/{task.id}/place",
                                        headers={"Authorization": f"Bearer {secret}"})
        assert answer.status_code == 202, answer.get_data(as_text=True)
        assert answer.get_json()["callback"]["status"] == "placing"

        # 3. The surgeon's phone rings first; they answer and press 1.
        ring = phones.wait_ring(timeout_s=20)
        assert ring.user == SURGEON.phone
        assert store.get(task.id).status is CallbackStatus.PLACED
        phones.answer(SURGEON.phone)
        phones.press("1", after_s=1.0)

        # 4. Then the caller's phone rings over the surgeons' trunk, and answers.
        ring = phones.wait_ring(timeout_s=20)
        assert ring.user == CALLER
        phones.answer(CALLER)
        time.sleep(3.0)  # talk
        phones.hang_up(CALLER)
        phones.wait_closed(SURGEON.phone)
    assert phones.rings == [SURGEON.phone, CALLER]  # each once: no second Originate

    # 5. The task is done and names the callback's own case, linked to the first.
    done = _wait(lambda: (lambda t: t if t.status is CallbackStatus.DONE else None)(
        store.get(task.id)), 20, "the task to be done")
    assert done.attempts == 1 and done.callback_case_id and done.closed_by == "service"
    repo = CaseRepository(engine)
    callback = _wait(lambda: (lambda c: c if c is not None and c.ended_at is not None
                              and c.recording_path else None)(repo.get(done.callback_case_id)),
                     20, "the callback case with its recording")
    assert callback.linked_case_id == first.case_id
    assert callback.caller.number == CALLER and callback.outcome == "connected"
    assert [(a.surgeon_id, a.role, a.outcome.value) for a in callback.attempts] == [
        (SURGEON.id, "callback", "accepted")]
    assert Path(callback.recording_path).stat().st_size > 1000
    assert store.linked_cases(first.case_id)[0][0] == callback.case_id
    assert store.for_case(callback.case_id) is None  # a callback opens no task of its own


def test_call_me_back_key_confirms_ends_the_call_and_opens_a_requested_task(line: Hotline, engine):
    result, since = line.call(CALL_ME_BACK, press="8", surgeons="ignore", timeout_s=30)
    assert result.rings == [] and result.caller_closed.startswith("hotline ended the call")
    case = line.case_for(CALL_ME_BACK, since)
    assert [m.label for m in case.menu] == ["callback"] and case.hangup_by == "system"
    task = _wait(lambda: CallbackStore(engine).for_case(case.case_id), 20, "the callback task")
    assert (task.reason, task.status, task.number, task.due_at) == (
        CallbackReason.REQUESTED, CallbackStatus.OPEN, CALL_ME_BACK, case.ended_at)


def test_a_surgeon_who_rejects_the_callback_leaves_it_open_with_a_note(line: Hotline, engine):
    """The OriginateResponse Failure from the real Asterisk reaches the task: reopened,
    nothing resent, the caller's phone never rung."""
    result, since = line.call(REJECTED, press="3", surgeons="ignore", timeout_s=90)
    first = line.case_for(REJECTED, since)
    store = CallbackStore(engine)
    task = _wait(lambda: store.for_case(first.case_id), 20, "the callback task")
    workdir = Path(tempfile.mkdtemp(dir=line.workdir))
    with TrunkPhones(workdir, [s.phone for s in SURGEONS] + [NURSE, REJECTED],
                     line.config.ports.surgeon_phones) as phones:
        store.request_placement(task.id, "it:test", surgeon_id=SURGEON.id)
        ring = phones.wait_ring(timeout_s=20)
        assert ring.user == SURGEON.phone
        phones.hang_up(SURGEON.phone)  # rejects the ringing call
        reopened = _wait(lambda: (lambda t: t if t.status is CallbackStatus.OPEN else None)(
            store.get(task.id)), 30, "the task to be reopened")
        time.sleep(2.0)  # time for a (wrong) second Originate to ring
    assert phones.rings == [SURGEON.phone]
    assert reopened.attempts == 1 and reopened.callback_case_id is None
    assert reopened.note.split(" / ")[0] in ("医生未接听或拒接", "医生电话占线"), reopened.note
