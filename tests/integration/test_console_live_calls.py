"""The live board against the real sandboxed Asterisk: a real SIP call shows on
/live/calls.json (served by a console app logged in to that Asterisk's AMI with
the console's own account) while it rings and while it talks, and is gone once
it hangs up."""
from __future__ import annotations

import asyncio
import secrets
import threading
import time

import pytest

from console import create_app
from console.live import hub
from db.session import make_engine
from db.users import UserRole, UserStore
from ivr.ami import AmiClient
from tests.support.console import PASSWORD, sign_in

from conftest_support import Hotline

pytestmark = pytest.mark.integration

CALLER = "13611119921"


def poll(client, predicate, timeout_s: float, what: str):
    """GET /live/calls.json until `predicate(body)` is truthy; that value."""
    deadline = time.monotonic() + timeout_s
    body = None
    while time.monotonic() < deadline:
        response = client.get("/live/calls.json")
        assert response.status_code == 200
        body = response.get_json()
        found = predicate(body)
        if found:
            return found
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}; last answer {body!r}")


def ours(body):
    return [c for c in body["calls"] if c["caller"] == CALLER]


def test_a_real_call_shows_on_the_live_board_while_it_lasts(line: Hotline):
    engine = make_engine(line.config.db_url)
    name = "live-" + secrets.token_hex(3)
    UserStore(engine).create(name, PASSWORD, UserRole.SUPERVISOR)
    app = create_app(line.config, engine=engine,
                     test_config={"TESTING": True, "RATELIMIT_ENABLED": False})
    client = app.test_client()
    sign_in(client, name)
    outcome: dict = {}
    caller = threading.Thread(target=lambda: outcome.update(result=line.call(
        CALLER, press="1", surgeons="ignore,accept", talk_s=10)[0]), daemon=True)
    try:
        ready = poll(client, lambda b: b["ami"]["ok"] and b, 20, "the console's AMI login")
        assert ours(ready) == []
        assert {c["team"] for c in ready["chains"]} >= {"facial", "replant"}
        caller.start()
        # The primary (13700000101) does not answer: a ringing call for a while ...
        (ringing,) = poll(client, lambda b: [c for c in ours(b) if c["state"] == "ringing"],
                          40, "the call ringing")
        assert ringing["target"] == "13700000101" and ringing["target_name"] == "甲 primary facial"
        assert ringing["team"] == "facial" and ringing["case_id"]
        # ... then the backup accepts and they talk.
        (talking,) = poll(client, lambda b: [c for c in ours(b) if c["state"] == "bridged"],
                          40, "the call bridged")
        assert talking["target"] == "13700000102" and talking["target_name"] == "乙 backup facial"
        assert talking["case_id"] == ringing["case_id"] and talking["duration_s"] >= 6
        assert talking["linkedid"] == ringing["linkedid"]
        html = client.get("/live/").get_data(as_text=True)
        assert CALLER in html and "通话中" in html
        caller.join(120)
        assert outcome["result"].bridged_to == "13700000102"
        poll(client, lambda b: b["ami"]["ok"] and not ours(b), 20, "the call gone")
    finally:
        if caller.is_alive():
            caller.join(120)
        hub(app).stop()
        engine.dispose()


def test_the_console_ami_account_can_list_channels_and_nothing_more(line: Hotline):
    async def ask() -> dict[str, str]:
        client = AmiClient("127.0.0.1", line.config.ports.ami, "console",
                           line.config.console_ami_secret(), events=False)
        async with client:
            listed, _ = await client.send_list("CoreShowChannels")
            answers = {"CoreShowChannels": listed.get("Response", "")}
            for action, fields in [
                ("Originate", {"Channel": "Local/s@hotline-nowhere", "Application": "Wait",
                               "Data": "1", "Async": "true"}),
                ("Command", {"Command": "core show version"}),
                ("DBPut", {"Family": "hotline", "Key": "heartbeat", "Val": "0"}),
                # The service's heartbeat (a global): "call" is not the console's.
                ("Setvar", {"Variable": "HOTLINE_HEARTBEAT_1", "Value": "0"}),
                ("Getvar", {"Variable": "SHELL(id)"}),
            ]:
                response = await client.send(action, **fields)
                answers[action] = f"{response.get('Response')}: {response.get('Message')}"
            return answers

    assert asyncio.run(ask()) == {
        "CoreShowChannels": "Success",
        "Originate": "Error: Permission denied",
        "Command": "Error: Permission denied",
        "DBPut": "Error: Permission denied",
        "Setvar": "Error: Permission denied",
        # "reporting" allows Getvar of plain variables; a function needs "system".
        "Getvar": "Error: GetVar Access Forbidden: Variable",
    }
