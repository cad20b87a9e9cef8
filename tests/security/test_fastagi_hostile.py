"""Issue 9, part 4 -- FastAGI: only Asterisk may talk to it, and no peer can hurt another call.

FastAGI has no authentication and res_agi waits for commands without a
timeout, so the server (ivr/fastagi.py) must bound everything a peer
controls. These tests attack the real FastAgiServer, with the service's real
handlers behind it, over loopback sockets: each hostile connection is closed
within its deadline, no handler runs for it, nothing reaches the case sink --
and a well-formed call served at the same time completes normally.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hotline.config import load_config
from ivr import channel_vars as V
from ivr.calls import CallDesk
from ivr.fastagi import ERROR_VARIABLE, FastAgiServer
from ivr.handlers import build_routes
from ivr.menu import load_menu
from oncall.model import Rank, Role, Roster, Shift, Surgeon, Team

PROJECT_DIR = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
LINKEDID = "1796000000.7"
SURGEON = Surgeon(1, "甲 facial primary", "13700000101", Rank.ATTENDING)


def agi_env(script: str = f"call_start?linkedid={LINKEDID}", uniqueid: str = LINKEDID,
            **extra: str) -> bytes:
    """An environment as res_agi sends it (agi_network first, a blank line last)."""
    env = {
        "agi_network": "yes", "agi_network_script": script,
        "agi_request": f"agi://127.0.0.1:4573/{script}", "agi_channel": "PJSIP/caller-00000001",
        "agi_language": "en", "agi_type": "PJSIP", "agi_uniqueid": uniqueid,
        "agi_version": "22.10.1", "agi_callerid": "13800138000", "agi_calleridname": "Dr. Li",
        "agi_context": "hotline-agi", "agi_extension": "s", "agi_priority": "3",
        **extra,
    }
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


class Sink:
    def __init__(self) -> None:
        self.cases: list = []

    def submit(self, case, final: bool = False) -> None:
        self.cases.append(case)


class Rosters:
    def roster(self) -> Roster:
        return Roster(teams={"facial": Team("facial", "颌面部创伤", "Facial trauma")},
                      surgeons={SURGEON.id: SURGEON},
                      shifts=(Shift("facial", SURGEON.id, Role.PRIMARY, T0 - timedelta(days=1),
                                    T0 + timedelta(days=1)),))

    def partner_numbers(self):
        return {}


@pytest.fixture
def desk():
    sink = Sink()
    return CallDesk(load_menu(PROJECT_DIR / "ivr" / "menu.toml"), Rosters(), sink,
                    new_id=lambda at: "C-0001"), sink


def server_for(desk, tmp_path, **kwargs) -> FastAgiServer:
    call_desk, _ = desk
    routes = build_routes(call_desk, lambda: T0, tmp_path)
    return FastAgiServer(routes, port=0, **kwargs)


async def play(port: int, env: bytes, source: str | None = None) -> list[str]:
    """Asterisk's side of one request: send env, answer every command 200, record them."""
    local = (source, 0) if source else None
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
    commands = []
    try:
        writer.write(env)
        await writer.drain()
        while line := await reader.readline():
            commands.append(line.decode().rstrip("\n"))
            writer.write(b"200 result=1\n")
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return commands


async def hostile(port: int, payload: bytes, *, trickle_s: float = 0.0,
                  hold_s: float = 0.0) -> tuple[bytes, float]:
    """Send `payload` (in 1-line pieces every `trickle_s`), then wait; (what came back, seconds to EOF)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = loop.time()
    received = b""
    try:
        pieces = payload.split(b"\n") if trickle_s else [payload]
        for i, piece in enumerate(pieces):
            writer.write(piece + (b"\n" if trickle_s and i < len(pieces) - 1 else b""))
            await writer.drain()
            if trickle_s:
                await asyncio.sleep(trickle_s)
        if hold_s:
            await asyncio.sleep(hold_s)
        received = await asyncio.wait_for(reader.read(), 15)
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return received, loop.time() - started


def run(coro, timeout: float = 30.0):
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


_rng = random.Random(9)
HOSTILE = {
    "1 MB on one line": b"agi_network: yes\nagi_calleridname: " + b"A" * (1 << 20) + b"\n\n",
    "1 MB without a newline": b"agi_network: yes\nagi_calleridname: " + b"A" * (1 << 20),
    "10,000 lines": b"agi_network: yes\n" + b"".join(b"agi_x%d: y\n" % i for i in range(10_000)) + b"\n",
    "binary junk": bytes(_rng.randrange(256) for _ in range(64 * 1024)),
    "NUL inside a value": agi_env(agi_calleridname="Dr.\x00Li"),
    "a repeated key overriding the route": agi_env() [:-1] + b"agi_network_script: call_end\n\n",
    "an HTTP request": b"GET /call_start HTTP/1.1\r\nHost: hotline\r\n\r\n",
    "a TLS hello": bytes.fromhex("160301012c010001280303") + bytes(range(32)) * 8,
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_environment_is_refused_at_once_while_a_call_is_served(name, desk, tmp_path):
    async def scenario():
        async with server_for(desk, tmp_path, env_timeout_s=10.0) as server:
            (received, seconds), commands = await asyncio.gather(
                hostile(server.port, HOSTILE[name]), play(server.port, agi_env()))
            return received, seconds, commands, server.stats

    received, seconds, commands, stats = run(scenario())
    # The hostile peer is cut off long before the 10 s environment deadline...
    assert seconds < 3.0, seconds
    # ...and told nothing: no command, no variable set on its behalf.
    assert received == b""
    # The honest call beside it went through, case opened, OK set last.
    assert commands[-1] == f'SET VARIABLE {V.OK} "1"' and f"SET VARIABLE {V.CASE_ID} \"C-0001\"" in commands
    assert stats.served == 1 and stats.dropped == 1
    call_desk, sink = desk
    assert list(call_desk.calls) == [LINKEDID]  # only the honest call exists


@pytest.mark.parametrize("style", ["silent", "no blank line", "trickle"])
def test_a_peer_that_never_finishes_its_environment_times_out_and_is_closed(style, desk, tmp_path):
    payload = {"silent": b"", "no blank line": agi_env()[:-1], "trickle": agi_env()}[style]

    async def scenario():
        async with server_for(desk, tmp_path, env_timeout_s=1.0) as server:
            (received, seconds), commands = await asyncio.gather(
                hostile(server.port, payload, trickle_s=0.4 if style == "trickle" else 0.0),
                play(server.port, agi_env()))
            return received, seconds, commands, server.stats

    received, seconds, commands, stats = run(scenario())
    # One deadline for the whole environment: a trickle of lines does not extend it.
    assert 0.9 <= seconds < 3.0, seconds
    assert received == b""
    assert commands[-1] == f'SET VARIABLE {V.OK} "1"'
    assert stats.dropped == 1 and stats.served == 1


def test_many_garbage_connections_at_once_leave_room_for_asterisk(desk, tmp_path):
    """Connections past max_connections are closed unread; once the garbage goes, calls flow again."""
    async def scenario():
        async with server_for(desk, tmp_path, env_timeout_s=1.5, max_connections=20) as server:
            junk = [asyncio.create_task(hostile(server.port, b"agi_network: yes\n", hold_s=0.0))
                    for _ in range(40)]
            results = await asyncio.gather(*junk)
            commands = await play(server.port, agi_env())
            return results, commands, server.stats, server.active_connections

    results, commands, stats, active = run(scenario())
    assert all(received == b"" for received, _ in results)
    assert all(seconds < 3.0 for _, seconds in results)
    assert stats.refused_busy + stats.dropped == 40 and stats.refused_busy >= 20
    assert commands[-1] == f'SET VARIABLE {V.OK} "1"'
    assert active == 0


@pytest.mark.parametrize("script,args", [
    ("call_start?linkedid=1;DROP TABLE cases", {}),
    ("call_start?linkedid=../../etc/passwd", {}),
    ("call_start?linkedid=" + "1" * 5000, {}),
    ("call_start?linkedid=1796000000.7%0AEXEC%20System", {}),
    ("call_start?linkedid=1796000000.7&linkedid=1.1", {}),  # the last one wins: still a valid id
    (f"route?linkedid={LINKEDID}", {"agi_arg_1": "facial' OR 1=1--", "agi_arg_2": "1"}),
    (f"route?linkedid={LINKEDID}", {"agi_arg_1": "facial", "agi_arg_2": "1&PJSIP/surgeons/0014165551212"}),
    (f"menu?linkedid={LINKEDID}", {"agi_arg_1": "9" * 200}),
    (f"call_end?linkedid={LINKEDID}",
     {"agi_arg_1": "PJSIP/caller-1", **{f"agi_arg_{i}": "" for i in range(2, 9)}, "agi_arg_9": "/etc/passwd"}),
    (f"call_end?linkedid={LINKEDID}",
     {**{f"agi_arg_{i}": "" for i in range(1, 9)}, "agi_arg_9": "/tmp/../etc/x-voicemail.wav"}),
    ("../../call_start", {}),
    ("CALL_START", {}),
    ("call_start?" + "&".join(f"k{i}=v" for i in range(40)), {}),  # more than 32 query fields
])
def test_request_parameters_are_validated(script, args, desk, tmp_path):
    """A request whose route, linkedid or arguments break the dialplan's contract changes nothing."""
    async def scenario():
        async with server_for(desk, tmp_path) as server:
            return await play(server.port, agi_env(script, **args)), server.stats

    commands, stats = run(scenario())
    call_desk, sink = desk
    if script.endswith("&linkedid=1.1"):
        # parse_qsl keeps the last value; 1.1 is a well-formed id, so this one is served.
        assert commands[-1] == f'SET VARIABLE {V.OK} "1"' and list(call_desk.calls) == ["1.1"]
        return
    assert f'SET VARIABLE {V.OK} "1"' not in commands, commands
    # Refused with the reason left on the channel, or (a line too long to be
    # Asterisk's) dropped before a word was said.
    assert commands[-1:] == [] or commands[-1].startswith(f"SET VARIABLE {ERROR_VARIABLE} "), commands
    assert (stats.dropped == 1) == (commands == [])
    assert call_desk.calls == {} and sink.cases == []
    assert stats.served == 0


# -- the allow-list, from configuration to the socket ------------------------------
def test_agi_allowed_hosts_default_to_loopback_and_layer_like_every_setting(tmp_path):
    assert load_config(env={}).agi_allowed_hosts == ("127.0.0.1", "::1")
    file = tmp_path / "hotline.toml"
    file.write_text('agi_allowed_hosts = ["10.0.0.5"]\n', encoding="utf-8")
    assert load_config(file, env={}).agi_allowed_hosts == ("10.0.0.5",)
    env = {"HOTLINE_AGI_ALLOWED_HOSTS": "10.0.0.6, ::ffff:10.0.0.7"}
    assert load_config(file, env=env).agi_allowed_hosts == ("10.0.0.6", "::ffff:a00:7")


@pytest.mark.parametrize("value", ["asterisk.example.org", "10.0.0.0/8", "", "127.0.0.1;rm -rf /"])
def test_agi_allowed_hosts_must_be_addresses(value, tmp_path):
    with pytest.raises(ValueError) as caught:
        if value == "":
            load_config(env={}, agi_allowed_hosts=())
        else:
            load_config(env={"HOTLINE_AGI_ALLOWED_HOSTS": value})
    assert "agi_allowed_hosts" in str(caught.value)


def test_a_peer_outside_the_allow_list_is_closed_before_a_byte_is_read(desk, tmp_path):
    allowed = load_config(env={"HOTLINE_AGI_ALLOWED_HOSTS": "127.0.0.2"}).agi_allowed_hosts

    async def scenario():
        async with server_for(desk, tmp_path, allowed_peers=allowed, env_timeout_s=10) as server:
            # From 127.0.0.1 (not listed): even a perfect request is not read.
            stranger = await play(server.port, agi_env())
            # From 127.0.0.2, the configured Asterisk: served.
            asterisk = await play(server.port, agi_env(), source="127.0.0.2")
            return stranger, asterisk, server.stats

    stranger, asterisk, stats = run(scenario())
    assert stranger == []
    assert asterisk[-1] == f'SET VARIABLE {V.OK} "1"'
    assert stats.refused_peers == 1 and stats.served == 1
