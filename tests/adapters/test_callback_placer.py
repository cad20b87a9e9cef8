"""The callback placer against fake AMI peers: one Originate per request, never resent.

An in-memory store (the pure transitions of network/callbacks.py) stands in for
the database; AMI is either a fake sender in-process or the real AmiClient
against the loopback FakeAmi of test_ami.py, which drops the connection on
Originate -- the client reconnects, and the Originate is still sent only once.
"""
from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from db.callbacks import Placement
from hotline.callbacks import CONTEXT, CallbackPlacer, UnknownPlacement, callback_routes
from ivr import channel_vars as V
from ivr.ami import AmiDisconnected, Message
from ivr.fastagi import AgiRequest
from ivr.handlers import BadRequest
from network import callbacks as cb
from network.callbacks import CallbackReason, CallbackStatus, CallbackTask, PlacementOutcome
from tests.adapters.test_ami import FakeAmi, client_for, run, wait_until
from tests.support.clock import Clock

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=timezone.utc)
LINKEDID = "1772431200.42"


class MemoryStore:
    """The CallbackStore contract over a dict, with the same pure transitions."""

    def __init__(self, *tasks: CallbackTask) -> None:
        self.tasks = {t.id: t for t in tasks}
        self.results: list[tuple[int, PlacementOutcome, str | None]] = []
        self.case_ids: dict[int, str] = {}

    def requests(self):
        return [t for t in self.tasks.values() if t.status is CallbackStatus.PLACING]

    def take(self, task_id):
        task = self.tasks[task_id]
        if task.status is not CallbackStatus.PLACING:
            return None
        self.tasks[task_id] = task = cb.start_placing(task, T0)
        return Placement(task, 3, "丙", "13700000201")

    def record_result(self, task_id, outcome, callback_case_id=None):
        self.results.append((task_id, outcome, callback_case_id))
        self.tasks[task_id] = cb.record_result(self.tasks[task_id], T0, outcome, callback_case_id)
        return self.tasks[task_id]

    def set_callback_case(self, task_id, case_id):
        self.case_ids[task_id] = case_id
        return True

    def settle_interrupted(self, keep=frozenset()):
        return []

    def expire_requests(self):
        return []


class Sink:
    def __init__(self) -> None:
        self.snapshots: list[tuple[object, bool]] = []

    def submit(self, case, final=False):
        import copy
        self.snapshots.append((copy.deepcopy(case), final))


class FakeSender:
    """AMI as the placer sees it: records every action; answers as told."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, dict]] = []
        self.listeners: list = []
        self.fail = fail

    def add_listener(self, listener):
        self.listeners.append(listener)

    async def send(self, action, /, *, response_timeout_s=None, **fields):
        self.sent.append((action, fields))
        if self.fail is not None:
            raise self.fail
        return Message([("Response", "Success"), ("ActionID", f"h-{len(self.sent)}"),
                        ("Message", "Originate successfully queued")])

    def emit(self, *headers):
        for listener in self.listeners:
            listener(Message(list(headers)))


def placing_task(task_id: int = 7) -> CallbackTask:
    task = CallbackTask(id=task_id, case_id="C-1", reason=CallbackReason.VOICEMAIL, due_at=T0,
                        status=CallbackStatus.OPEN, created_at=T0, number="13629000001",
                        team="replant", owner_surgeon_id=3)
    return cb.request_placement(task, T0, "user:sup")


def placer_for(store, ami, sink=None, **kw) -> CallbackPlacer:
    return CallbackPlacer(store, ami, sink or Sink(), lambda: T0 + timedelta(seconds=5),
                          hotline_number="96608", new_id=lambda at: "CB-1", **kw)


async def settle():
    for _ in range(20):  # the store writes run on worker threads
        await asyncio.sleep(0.01)


def test_one_originate_per_request_ringing_the_surgeon_first():
    store, ami = MemoryStore(placing_task()), FakeSender()

    async def scenario():
        placer = placer_for(store, ami)
        assert await placer.poll_once() == 1
        assert await placer.poll_once() == 0  # placed now: not taken again
        await settle()
        return placer

    placer = run(scenario())
    assert len(ami.sent) == 1
    action, fields = ami.sent[0]
    assert action == "Originate"
    assert fields["Channel"] == "PJSIP/13700000201@surgeons"
    assert (fields["Context"], fields["Exten"], fields["Priority"]) == (CONTEXT, "s", "1")
    assert fields["Variable"] == ["HOTLINE_CALLBACK=7"] and fields["Async"] == "true"
    assert fields["CallerID"] == '"96608 callback" <96608>'
    assert store.tasks[7].status is CallbackStatus.PLACED and 7 in placer.in_flight


def test_an_originate_failure_reopens_the_task_and_nothing_is_resent():
    store, ami = MemoryStore(placing_task()), FakeSender()

    async def scenario():
        placer = placer_for(store, ami)
        await placer.poll_once()
        ami.emit(("Event", "OriginateResponse"), ("ActionID", "h-1"), ("Response", "Failure"),
                 ("Reason", "3"))
        await settle()
        await placer.poll_once()
        await settle()
        return placer

    placer = run(scenario())
    assert len(ami.sent) == 1 and placer.in_flight == {}
    assert store.results == [(7, PlacementOutcome.SURGEON_NO_ANSWER, None)]
    assert store.tasks[7].status is CallbackStatus.OPEN


def test_the_dialplan_requests_make_the_linked_callback_case_and_a_connected_result():
    store, ami, sink = MemoryStore(placing_task()), FakeSender(), Sink()

    clock = Clock(T0 + timedelta(seconds=5))

    async def scenario():
        placer = placer_for(store, ami, sink)
        routes = dict(callback_routes(placer, clock))
        await placer.poll_once()
        channel = FakeChannel()
        await routes["callback_start"](request(["7"]), channel)
        clock.now = T0 + timedelta(seconds=7)
        with pytest.raises(BadRequest):
            await routes["callback_start"](request(["7;Dial"]), FakeChannel())
        with pytest.raises(UnknownPlacement):  # a placement this service is not making
            await routes["callback_start"](request(["8"]), FakeChannel())
        with pytest.raises(UnknownPlacement):  # the same placement from another call
            await routes["callback_accepted"](request(["7"], linkedid="1.2"), FakeChannel())
        await routes["callback_accepted"](request(["7"]), FakeChannel())
        clock.now = T0 + timedelta(seconds=12)
        await routes["callback_end"](request(["7", "dialing", "ANSWER", "4",
                                              "PJSIP/surgeons-00000003"]), FakeChannel())
        await settle()
        return channel

    channel = run(scenario())
    assert channel.values == {V.TARGET: "13629000001", V.CASE_ID: "CB-1", V.RING_S: "40",
                              V.OK: "1"}
    assert store.case_ids == {7: "CB-1"}
    assert store.results == [(7, PlacementOutcome.CONNECTED, "CB-1")]
    assert store.tasks[7].status is CallbackStatus.DONE
    case, final = sink.snapshots[-1]
    assert final and case.linked_case_id == "C-1" and case.linkedid == LINKEDID
    assert case.outcome == "connected" and case.hangup_by == "caller"
    assert case.started_at == T0 + timedelta(seconds=5)
    assert case.connected_at == T0 + timedelta(seconds=8)  # the end minus ANSWEREDTIME
    assert case.ended_at == T0 + timedelta(seconds=12)
    assert [(a.surgeon_id, a.role, a.outcome.value) for a in case.attempts] == [
        (3, "callback", "accepted")]


def test_a_surgeon_who_never_presses_1_reopens_the_task():
    store, ami, sink = MemoryStore(placing_task()), FakeSender(), Sink()

    async def scenario():
        placer = placer_for(store, ami, sink)
        routes = dict(callback_routes(placer, lambda: T0 + timedelta(seconds=10)))
        await placer.poll_once()
        await routes["callback_start"](request(["7"]), FakeChannel())
        await routes["callback_end"](request(["7", "no-key", "", "", ""]), FakeChannel())
        await settle()

    run(scenario())
    assert store.results == [(7, PlacementOutcome.SURGEON_NO_KEY, "CB-1")]
    assert store.tasks[7].status is CallbackStatus.OPEN
    case, final = sink.snapshots[-1]
    assert final and case.outcome == "abandoned" and case.attempts[0].outcome.value == "no-answer"


def test_ami_lost_with_the_originate_unanswered_is_never_resent_and_ends_unknown():
    store, ami = MemoryStore(placing_task()), FakeSender(fail=AmiDisconnected("gone"))

    async def scenario():
        placer = placer_for(store, ami, no_word_s=0.2)
        await placer.poll_once()
        assert 7 in placer.in_flight and placer.in_flight[7].ami_lost
        await asyncio.sleep(0.3)
        ami.fail = None  # AMI is back
        await placer.poll_once()
        await settle()
        return placer

    placer = run(scenario())
    assert len(ami.sent) == 1 and placer.originates == 1
    assert store.results == [(7, PlacementOutcome.UNKNOWN, None)]
    assert store.tasks[7].status is CallbackStatus.OPEN
    assert store.tasks[7].note.startswith("结果未知")


def test_with_the_real_ami_client_a_dropped_originate_is_not_resent_after_the_reconnect():
    store = MemoryStore(placing_task())

    async def scenario():
        async with FakeAmi(drop_on={"Originate"}) as fake:
            client = client_for(fake)
            placer = placer_for(store, None, no_word_s=1.0)
            placer.use_ami(client)
            await client.connect()
            await placer.poll_once()
            await wait_until(lambda: client.reconnects == 1 and client.connected)
            pong = await client.send("Ping")
            for _ in range(3):
                await placer.poll_once()
            await asyncio.sleep(1.1)
            await placer.poll_once()
            await settle()
            await asyncio.sleep(0.2)  # time for a (wrong) resend to show up
            await client.close()
            return fake, pong

    fake, pong = run(scenario())
    assert pong["Ping"] == "Pong"
    assert fake.connections == 2 and fake.count("Originate") == 1
    assert [a["Action"][0] for a in fake.received] == ["Login", "Originate", "Login", "Ping"]
    assert store.results == [(7, PlacementOutcome.UNKNOWN, None)]


def test_an_early_originate_response_is_matched_once_the_answer_is_read():
    store, ami = MemoryStore(placing_task()), FakeSender()
    original = ami.send

    async def send_and_report_first(action, /, **kw):
        response = await original(action, **kw)
        # The event is dispatched before the placer has read the response.
        ami.emit(("Event", "OriginateResponse"), ("ActionID", response.action_id),
                 ("Response", "Failure"), ("Reason", "5"))
        return response

    ami.send = send_and_report_first  # type: ignore[method-assign]

    async def scenario():
        placer = placer_for(store, ami)
        await placer.poll_once()
        await settle()

    run(scenario())
    assert store.results == [(7, PlacementOutcome.SURGEON_BUSY, None)]


# --------------------------------------------------------------------------- AGI helpers


class FakeChannel:
    usable = True

    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def set_variable(self, name: str, value: str) -> None:
        self.values[name] = value


def request(args: list[str], linkedid: str = LINKEDID) -> AgiRequest:
    env = {"agi_network_script": f"x?linkedid={linkedid}", "agi_channel": "PJSIP/surgeons-00000002"}
    return AgiRequest(env, "x", args, {"linkedid": linkedid})


def test_memory_store_matches_the_pure_machine():
    task = replace(placing_task(), attempts=cb.MAX_ATTEMPTS)
    store = MemoryStore(task)
    store.take(7)
    assert store.record_result(7, PlacementOutcome.FAILED).status is CallbackStatus.FAILED


def test_a_result_the_database_refuses_is_retried():
    store, ami = MemoryStore(placing_task()), FakeSender()
    failures = [OSError("database away"), OSError("still away")]
    record = store.record_result

    def flaky(*args):
        if failures:
            raise failures.pop(0)
        return record(*args)

    store.record_result = flaky  # type: ignore[method-assign]

    async def scenario():
        placer = placer_for(store, ami, retry_s=(0.01, 0.01, 0.01))
        await placer.poll_once()
        ami.emit(("Event", "OriginateResponse"), ("ActionID", "h-1"), ("Response", "Failure"),
                 ("Reason", "5"))
        await settle()
        await placer.stop()

    run(scenario())
    assert failures == [] and store.results == [(7, PlacementOutcome.SURGEON_BUSY, None)]


def test_requests_wait_while_ami_is_not_logged_in():
    store, ami = MemoryStore(placing_task()), FakeSender()
    ami.connected = False  # type: ignore[attr-defined]

    async def scenario():
        placer = placer_for(store, ami)
        assert await placer.poll_once() == 0
        ami.connected = True  # type: ignore[attr-defined]
        assert await placer.poll_once() == 1

    run(scenario())
    assert len(ami.sent) == 1 and store.tasks[7].status is CallbackStatus.PLACED
