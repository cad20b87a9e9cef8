"""Major-incident mode and blocked callers through the real Asterisk, with real SIP phones.

app_queue rings every on-call surgeon at once, queues further callers (partner
hospitals ahead), and the service keeps the queue's members; a blocked number
hears goodbye and rings nobody. Caller numbers 1363000xxxx are this file's own.
The session's Asterisk and service are shared with every other integration
test: every test switches incidents off and removes its blocks on the way out.
"""
from __future__ import annotations

import asyncio
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest

from db.blocklist import BlockList
from db.incidents import IncidentStore
from db.session import make_engine
from hotline import instance
from ivr.ami import AmiClient
from routing.escalation import AttemptOutcome
from routing.callers import CallerClass
from routing.queue import (PARTNER_PRIO, PUBLIC_PRIO, Waiting, join_position, member_interface,
                           queue_priority)
from testphones.crowd import Caller, SurgeonBank

from conftest_support import NURSE, PARTNER_NUMBER, Hotline

pytestmark = pytest.mark.integration

A = AttemptOutcome
ACTOR = "test:incidents"
FACIAL = ("13700000101", "13700000102")  # primary and backup on call for facial
REFERRAL = "13700000401"


@pytest.fixture
def network(line: Hotline) -> Iterator[tuple[IncidentStore, BlockList]]:
    """The incident store and block list of the running service; all switched off after."""
    engine = make_engine(line.config.db_url)
    incidents, blocks = IncidentStore(engine), BlockList(engine)
    try:
        yield incidents, blocks
    finally:
        for incident in incidents.active():
            incidents.switch_off(incident.team, ACTOR)
        for entry in blocks.entries():
            if entry.number.startswith("1363000"):
                blocks.remove(entry.number, ACTOR)
        for team in ("facial", "referral", "replant"):
            wait_members(line, team, set())
        engine.dispose()


def members(line: Hotline, team: str) -> set[str]:
    out = instance.asterisk_cli(line.config, f"queue show hotline-{team}")
    return {phone for phone in ("13700000101", "13700000102", "13700000201", "13700000202",
                                REFERRAL) if any(member_interface(phone) in row for row in out)}


def wait_members(line: Hotline, team: str, phones: set[str], timeout_s: float = 20.0) -> None:
    """Until the service has made the team's queue hold exactly `phones`."""
    deadline = time.monotonic() + timeout_s
    while (found := members(line, team)) != phones:
        if time.monotonic() > deadline:
            raise AssertionError(f"queue hotline-{team} holds {sorted(found)}, not {sorted(phones)}")
        time.sleep(0.3)


def queue_entries(line: Hotline, team: str, channels: dict[str, str] | None = None
                  ) -> list[tuple[int, str, int]]:
    """(position, caller number, priority) of each caller waiting, from AMI QueueStatus;
    `channels`, if given, gets each caller number's channel."""
    async def ask():
        ami = AmiClient("127.0.0.1", line.config.ports.ami, "hotline", line.config.ami_secret(),
                        events=False)
        await ami.connect()
        try:
            _, events = await ami.send_list("QueueStatus", Queue=f"hotline-{team}")
        finally:
            await ami.close()
        entries = [e for e in events if e.get("Event") == "QueueEntry"]
        if channels is not None:
            channels.update({e.get("CallerIDNum", ""): e.get("Channel", "") for e in entries})
        return sorted((int(e["Position"]), e.get("CallerIDNum", ""), int(e.get("Priority", -1)))
                      for e in entries)
    return asyncio.run(ask())


def heard(line: Hotline, channel: str, timeout_s: float = 30.0) -> list[str]:
    """The sound files Asterisk played to `channel` (its full log), once a whole
    position announcement is among them."""
    log = line.config.instance_dir / "log" / "full.log"
    mark = f"<{channel}> Playing '"
    deadline = time.monotonic() + timeout_s
    while True:
        files = [row.split(mark, 1)[1].split("'", 1)[0]
                 for row in log.read_text(errors="replace").splitlines() if mark in row]
        if any(f.startswith(("queue-callswaiting", "queue-youarenext")) for f in files):
            return files
        if time.monotonic() > deadline:
            raise AssertionError(f"no position announcement to {channel}: {files}")
        time.sleep(0.3)


def wait_entries(line: Hotline, team: str, count: int, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while len(entries := queue_entries(line, team)) != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"hotline-{team}: {entries}, expected {count} callers")
        time.sleep(0.3)
    return entries


def workdir(line: Hotline) -> Path:
    return Path(tempfile.mkdtemp(dir=line.workdir))


def caller(line: Hotline, number: str) -> Caller:
    return Caller(workdir(line), line.config.ports.sip, line.config.sip_secret(), number).start()


def bank(line: Hotline, plan: dict[str, str]) -> SurgeonBank:
    return SurgeonBank(workdir(line), line.phones, line.config.ports.surgeon_phones, plan).start()


def test_major_incident_rings_every_surgeon_at_once_and_queues_the_second_caller(line, network):
    incidents, _ = network
    incidents.switch_on("facial", ACTOR, "drill: highway pile-up")
    wait_members(line, "facial", set(FACIAL))
    since = datetime.now(timezone.utc)
    surgeons = bank(line, {"13700000101": "accept"})
    first = second = None
    try:
        first = caller(line, "13630000001").dial(press="1")
        rings = surgeons.wait_rings(set(FACIAL))
        # Both phones rang before anyone answered (nobody may answer before release()).
        assert surgeons.accepted == [] and {r.number for r in rings} == set(FACIAL)
        second = caller(line, "13630000002").dial(press="1")
        entries = wait_entries(line, "facial", 2)
        assert [(pos, num) for pos, num, _ in entries] == [(1, "13630000001"), (2, "13630000002")]
        assert {prio for _, _, prio in entries} == {PUBLIC_PRIO}
        channels: dict[str, str] = {}
        queue_entries(line, "facial", channels)
        # The second caller heard the incident prompts, then its place (2) in
        # Asterisk's own queue sounds: "there are 2 calls waiting".
        files = heard(line, channels["13630000002"])
        assert [f for f in files if "/prompts/" in f][0].endswith("/incident.slin")
        announced = files[next(i for i, f in enumerate(files) if f.startswith("queue-thereare")):]
        assert announced[:3] == ["queue-thereare.slin", "digits/2.slin", "queue-callswaiting.slin"]
        surgeons.release()
        surgeons.wait_accepted("13700000101")
        # The first caller is bridged and leaves the queue; the second moves up.
        entries = wait_entries(line, "facial", 1)
        assert entries[0][:2] == (1, "13630000002")
        time.sleep(2)  # talk a little: the recording has something in it
        first.hangup()
        second.hangup()
    finally:
        for phone in (first, second):
            if phone is not None:
                phone.stop()
        surgeons.stop()
    case = line.case_for("13630000001", since)
    assert case.team == "facial" and case.outcome == "connected" and case.connected_surgeon_id == 1
    by_phone = {a.phone: a for a in case.attempts[:2]}
    assert set(by_phone) == set(FACIAL)  # one attempt per ringing surgeon, honestly recorded
    assert by_phone["13700000101"].outcome is A.ACCEPTED
    assert by_phone["13700000102"].outcome is A.CANCELLED
    assert case.recording_path and Path(case.recording_path).stat().st_size > 1000
    waited = line.case_for("13630000002", since)
    assert waited.team == "facial" and waited.outcome == "abandoned"
    assert waited.connected_seq is None and waited.hangup_by == "caller"


def test_a_partner_hospital_waits_ahead_of_the_public(line, network):
    incidents, _ = network
    incidents.switch_on("referral", ACTOR, "mass casualty")
    wait_members(line, "referral", {REFERRAL})
    since = datetime.now(timezone.utc)
    surgeons = bank(line, {})  # the referral surgeon's phone rings and rings: callers wait
    phones: list[Caller] = []
    try:
        phones.append(caller(line, "13630000011").dial(press="4"))  # at the head, ringing
        wait_entries(line, "referral", 1)
        phones.append(caller(line, "13630000012").dial(press="4"))
        waiting = wait_entries(line, "referral", 2)
        phones.append(caller(line, PARTNER_NUMBER).dial())  # the fast lane: no key to press
        entries = wait_entries(line, "referral", 3)
        # app_queue puts the partner ahead of every public caller -- the head
        # one too, though its ring had started -- exactly as routing.queue says.
        expected = [Waiting(num, prio, datetime.now(timezone.utc)) for _, num, prio in waiting]
        position = join_position(expected, queue_priority(CallerClass.PARTNER))
        assert position == 1
        assert entries == [(1, PARTNER_NUMBER, PARTNER_PRIO), (2, "13630000011", PUBLIC_PRIO),
                           (3, "13630000012", PUBLIC_PRIO)]
        assert {r.number for r in surgeons.rings} == {REFERRAL}
    finally:
        for phone in phones:
            phone.stop()
        surgeons.stop()
    partner = line.case_for(PARTNER_NUMBER, since)
    assert partner.caller.caller_class.value == "partner" and partner.team == "referral"


def test_switched_off_the_team_rings_one_by_one_again(line, network):
    incidents, _ = network
    incidents.switch_on("facial", ACTOR, "short drill")
    wait_members(line, "facial", set(FACIAL))
    incidents.switch_off("facial", ACTOR)
    wait_members(line, "facial", set())
    result, since = line.call("13630000021", press="1", surgeons="ignore,accept")
    assert [r.number for r in result.rings] == list(FACIAL)
    case = line.case_for("13630000021", since)
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        ("13700000101", A.NO_ANSWER), ("13700000102", A.ACCEPTED)]
    assert case.attempts[0].ring_s >= 5  # the backup rang only after the primary rang out


def test_a_blocked_number_hears_goodbye_and_nobody_rings(line, network):
    incidents, blocks = network
    blocks.add("13630000031", "abusive calls (test)", ACTOR)
    # The block list and the incidents reload together: once the service has
    # acted on this later switch, it has the block too.
    incidents.switch_on("replant", ACTOR, "sync point")
    wait_members(line, "replant", {"13700000201", "13700000202"})
    incidents.switch_off("replant", ACTOR)
    wait_members(line, "replant", set())
    result, since = line.call("13630000031", press="", surgeons="accept", timeout_s=30)
    assert result.rings == []
    assert result.caller_closed and result.caller_closed.startswith("hotline ended the call")
    case = line.case_for("13630000031", since)
    assert [m.choice for m in case.menu] == ["blocked"]
    assert case.attempts == [] and case.team is None
    assert case.outcome == "abandoned" and case.hangup_by == "system"


def test_switched_off_while_callers_wait_they_are_not_stuck_but_go_to_the_nurse(line, network):
    incidents, _ = network
    incidents.switch_on("facial", ACTOR, "drill")
    wait_members(line, "facial", set(FACIAL))
    since = datetime.now(timezone.utc)
    surgeons = bank(line, {NURSE: "accept"})  # the surgeons let it ring; the nurse answers
    phones: list[Caller] = []
    try:
        phones.append(caller(line, "13630000041").dial(press="1"))  # at the head, ringing
        surgeons.wait_rings(set(FACIAL))
        phones.append(caller(line, "13630000042").dial(press="1"))
        wait_entries(line, "facial", 2)
        rung_before = len(surgeons.rings)
        incidents.switch_off("facial", ACTOR)
        # The queue empties (leavewhenempty): the waiting caller leaves it and the
        # service sends it on to the duty nurse, who answers and presses 1.
        surgeons.release()
        surgeons.wait_rings({NURSE}, timeout_s=30, since=rung_before)
        surgeons.wait_accepted(NURSE)
    finally:
        for phone in phones:
            phone.stop()
        surgeons.stop()
    waited = line.case_for("13630000042", since)
    assert waited.team == "facial"
    assert [(a.kind, a.phone, a.outcome) for a in waited.attempts] == [
        ("nurse", NURSE, A.ACCEPTED)]
    assert waited.outcome == "nurse"
