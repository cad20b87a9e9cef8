"""Issue 18, item 2: FastAGI requests forged by a local process, against the real hotline.

The sandboxed Asterisk 22, the service as its own process, baresip phones
(tests/security/conftest.py). The attacker is any program on this host: it
connects to the service's FastAGI port from 127.0.0.1 -- an allowed peer --
and speaks the protocol as res_agi does. Without this instance's proof
(ivr/handlers.py `request_proof`, keyed by a 0600 file only Asterisk and the
service read) a request changes no case, opens no task and is told nothing.
With a proof seen once (a replay), a request must still agree with what the
service knows of the call: an ended case changes no more.
"""
from __future__ import annotations

import hashlib
import secrets
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from conftest_support import LogTail
from db.repo import CaseRepository
from db.session import make_engine
from routing.escalation import AttemptOutcome as A

pytestmark = pytest.mark.integration

FACIAL_PRIMARY, FACIAL_BACKUP = "13700000101", "13700000102"


def agi_exchange(port: int, route: str, linkedid: str, args: tuple[str, ...] = (), *,
                 proof: str | None = None, uniqueid: str | None = None,
                 channel: str = "PJSIP/caller-0000beef", callerid: str = "13611118888",
                 timeout_s: float = 5.0) -> bytes:
    """One FastAGI request as res_agi makes it; every command answered "200 result=1".

    Returns everything the service wrote before it closed the connection.
    """
    query = f"linkedid={linkedid}" + (f"&proof={proof}" if proof is not None else "")
    script = f"{route}?{query}"
    env = {"agi_network": "yes", "agi_network_script": script,
           "agi_request": f"agi://127.0.0.1:{port}/{script}", "agi_channel": channel,
           "agi_language": "zh", "agi_type": "PJSIP", "agi_uniqueid": uniqueid or linkedid,
           "agi_version": "22.0.0", "agi_callerid": callerid, "agi_calleridname": "unknown",
           "agi_context": "hotline-agi", "agi_extension": "s", "agi_priority": "3"}
    env |= {f"agi_arg_{i}": arg for i, arg in enumerate(args, start=1)}
    said = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall("".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n")
        buffer = b""
        while True:
            data = sock.recv(4096)
            if not data:
                return said
            said += data
            buffer += data
            while b"\n" in buffer:
                _, buffer = buffer.split(b"\n", 1)
                sock.sendall(b"200 result=1\n")


def request_proof(key: str, linkedid: str, route: str) -> str:
    """The proof as the dialplan computes it: ${SHA1(key:linkedid:route)} (extensions.conf.j2).

    Written out here rather than imported, so the test checks the contract itself.
    """
    return hashlib.sha1(f"{key}:{linkedid}:{route}".encode()).hexdigest()


def instance_key(line) -> str:
    """The instance's FastAGI key, read as a process with the service's rights would."""
    path = line.config.instance_dir / "agi.secret"
    return path.read_text().strip() if path.exists() else "this-instance-has-no-key"


def fresh_linkedid() -> str:
    """A linkedid of the shape Asterisk makes, for a call that never existed."""
    return f"{int(time.time())}.{900000 + secrets.randbelow(99999)}"


def open_callbacks(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        return len(CaseRepository(engine).callbacks("open"))
    finally:
        engine.dispose()


def stored(db_url: str, linkedid: str):
    engine = make_engine(db_url)
    try:
        return CaseRepository(engine).get_by_linkedid(linkedid)
    finally:
        engine.dispose()


def call_end_args(voicemail: str = "") -> tuple[str, ...]:
    """call_end's ten arguments in the dialplan's order (hangup source .. fallback used)."""
    return ("PJSIP/caller-0000beef", "16", "ANSWER", "1", "1", "30", "36", "", voicemail, "1")


def test_a_forged_call_without_proof_opens_no_case_and_learns_no_number(line):
    """The whole life of a fake connected call, as a local process would play it."""
    port, linkedid = line.config.ports.agi, fresh_linkedid()
    tail = LogTail(line.config.instance_dir / "log" / "service.log")
    callbacks_before = open_callbacks(line.config.db_url)
    replies = {route: agi_exchange(port, route, linkedid, args) for route, args in (
        ("call_start", ()), ("menu", ("1",)), ("route", ("facial", "1")),
        ("accepted", ("1",)), ("call_end", call_end_args()))}
    # A proof made for another call or another request proves nothing here either.
    key = instance_key(line)
    replies["accepted (proof of call_start)"] = agi_exchange(
        port, "accepted", linkedid, ("1",), proof=request_proof(key, linkedid, "call_start"))
    replies["call_start (proof of another call)"] = agi_exchange(
        port, "call_start", linkedid, proof=request_proof(key, fresh_linkedid(), "call_start"))
    assert replies == {route: b"" for route in replies}, "the service answered a forged request"
    time.sleep(1.0)  # the case writer's thread would have written by now
    assert stored(line.config.db_url, linkedid) is None
    assert open_callbacks(line.config.db_url) == callbacks_before
    log = tail.wait_for(lambda text: "no valid proof" in text)
    # Logged once for the burst (rate-limited), with the peer; never the key.
    assert log.count("no valid proof") == 1 and "'127.0.0.1'" in log
    assert key not in log
    assert "Traceback" not in log


def test_a_forged_accept_while_the_surgeon_rings_changes_nothing(line):
    """The primary's phone rings; a local process says they pressed 1. The call
    goes on as if nobody had spoken: the primary rings out, the backup accepts."""
    caller = "13611118801"
    port, key = line.config.ports.agi, instance_key(line)
    forged: dict[str, bytes] = {}
    done = threading.Event()

    def forge() -> None:
        try:
            since = datetime.now(timezone.utc) - timedelta(seconds=60)
            engine = make_engine(line.config.db_url)
            try:
                live = [c for c in CaseRepository(engine).recent(20)
                        if c.caller.raw_safe == caller and c.started_at >= since]
            finally:
                engine.dispose()
            linkedid = live[0].linkedid
            forged["unproven"] = agi_exchange(port, "accepted", linkedid, ("1",),
                                              channel="PJSIP/surgeons-0000beef", uniqueid=linkedid + "1")
            # A replayed proof: right call and request, but attempt 2 was never ordered.
            forged["not ordered"] = agi_exchange(
                port, "accepted", linkedid, ("2",), proof=request_proof(key, linkedid, "accepted"),
                channel="PJSIP/surgeons-0000beef", uniqueid=linkedid + "1")
        finally:
            done.set()

    def hook(event: str) -> None:
        if event == f"ring:{FACIAL_PRIMARY}":
            threading.Thread(target=forge, daemon=True).start()

    result, since = line.call(caller, press="1", surgeons="ignore,accept", talk_s=2, hook=hook)
    assert done.wait(10)
    assert [r.number for r in result.rings] == [FACIAL_PRIMARY, FACIAL_BACKUP]
    assert result.bridged_to == FACIAL_BACKUP
    case = line.case_for(caller, since)
    assert [(a.phone, a.outcome) for a in case.attempts] == [
        (FACIAL_PRIMARY, A.NO_ANSWER), (FACIAL_BACKUP, A.ACCEPTED)]
    assert case.connected_seq == 2 and case.outcome == "connected" and not case.fallback
    assert forged["unproven"] == b""
    assert b"HOTLINE_OK" not in forged["not ordered"]


def test_an_ended_case_is_not_ended_again_with_or_without_proof(line):
    """After a real call: a forged call_end (and a replayed one, with the proof
    a call_end of that call would carry) attaches no voicemail, bumps no
    revision, opens no callback task and makes no second case."""
    caller = "13611118802"
    result, since = line.call(caller, press="1", surgeons="accept", talk_s=1)
    assert result.bridged_to == FACIAL_PRIMARY
    case = line.case_for(caller, since)
    time.sleep(1.0)  # the recording is attached and sealed after the end
    before = stored(line.config.db_url, case.linkedid)
    callbacks_before = open_callbacks(line.config.db_url)
    voicemail = str(Path(line.config.recordings_dir).resolve() / f"{case.case_id}-voicemail.wav")
    port, key = line.config.ports.agi, instance_key(line)
    unproven = agi_exchange(port, "call_end", case.linkedid, call_end_args(voicemail))
    replayed = agi_exchange(port, "call_end", case.linkedid, call_end_args(voicemail),
                            proof=request_proof(key, case.linkedid, "call_end"))
    time.sleep(1.0)
    after = stored(line.config.db_url, case.linkedid)
    assert after.case_id == before.case_id and after.revision == before.revision
    assert after.voicemail_path is None and after.outcome == "connected"
    assert open_callbacks(line.config.db_url) == callbacks_before
    engine = make_engine(line.config.db_url)
    try:
        assert [c.case_id for c in CaseRepository(engine).recent(50)
                if c.linkedid == case.linkedid or c.caller.raw_safe == caller] == [case.case_id]
    finally:
        engine.dispose()
    assert unproven == b"" and b"HOTLINE_CASE_ID" not in replayed


def test_the_key_is_private_and_not_in_the_dialplan_the_console_can_read(line):
    """Only the key's file holds it (0600); the rendered dialplan names the file
    (AMI ShowDialPlan, which the console's "reporting" right allows, shows the
    dialplan), and no global carries it (Getvar of a plain global needs no more)."""
    key_file = line.config.instance_dir / "agi.secret"
    key = key_file.read_text().strip()
    assert key_file.stat().st_mode & 0o777 == 0o600
    extensions = (line.config.instance_dir / "etc" / "extensions.conf").read_text()
    assert key not in extensions and str(key_file) in extensions
    from conftest_support import asterisk_globals

    assert key not in "".join(asterisk_globals(line.config).values())
    from attack_support import AmiSession, console_account

    user, secret = console_account(line.config)
    with AmiSession(line.config.ports.ami) as ami:
        assert ami.login(user, secret).get("Response") == "Success"
        answer = ami.action("Getvar", Variable=f"FILE({key_file})")
    assert key not in " ".join(answer.values())
    # Nothing this instance logged or recorded holds it: the service's log,
    # Asterisk's (the dialplan trace is on in tests) and the CDR/CEL files.
    logs = [p for p in (line.config.instance_dir / "log").rglob("*") if p.is_file()]
    assert logs and not [p.name for p in logs if key.encode() in p.read_bytes()]
