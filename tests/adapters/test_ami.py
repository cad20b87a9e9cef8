"""AMI codec tables, and the client against a fake Asterisk replaying recorded transcripts.

fixtures/ami_session.txt and ami_login_failed.txt were recorded from Asterisk 22.10.1.
"""
from __future__ import annotations

import asyncio
import contextlib
import doctest
import logging
import random
from pathlib import Path

import pytest

from ivr import ami
from ivr.ami import (
    AmiAuthError,
    AmiClient,
    AmiConnectError,
    AmiDisconnected,
    AmiParser,
    AmiProtocolError,
    AmiTimeout,
    Message,
    encode_action,
)

FIXTURES = Path(__file__).parent / "fixtures"
SECRET = "s3cret-pw"


def run(coro, timeout: float = 20.0):
    """Run one async scenario to completion in a fresh event loop, with a safety deadline."""
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog):
    """asyncio logs (rather than raises) unhandled task errors: treat any as a failure."""
    caplog.set_level(logging.DEBUG)
    yield
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert SECRET not in caplog.text


# --- transcripts ----------------------------------------------------------------------------

def load_transcript(name: str) -> dict[str, list[str]]:
    """Sections of a transcript: name -> messages (LF-joined header lines, no trailing blank)."""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    lines: list[str] = []

    def flush():
        if current is not None and lines:
            current.append("\n".join(lines))
        lines.clear()

    for line in (FIXTURES / name).read_text().split("\n"):
        if line.startswith("#"):
            continue
        if line.startswith("=== "):
            flush()
            current = sections.setdefault(line[4:], [])
        elif line == "":
            flush()
        else:
            lines.append(line)
    flush()
    return sections


def wire(message: str) -> bytes:
    return message.replace("\n", "\r\n").encode() + b"\r\n\r\n"


class FakeAmi:
    """Plays Asterisk's AMI over real loopback sockets from a recorded transcript.

    Answers each action with its transcript section (``=== Action`` or the more
    specific ``=== Action Header=value``). ``drop_on``: record the action, then
    drop the connection unanswered. ``close_after``: answer, then close (as a
    refused Login does). ``hold``: answer only after the next other action (out of
    order). ``silent``: never answer.
    """

    def __init__(self, transcript: str = "ami_session.txt", *, drop_on=(), close_after=(),
                 hold=(), silent=()) -> None:
        self.sections = load_transcript(transcript)
        self.drop_on, self.close_after = set(drop_on), set(close_after)
        self.hold, self.silent = set(hold), set(silent)
        self.received: list[dict[str, list[str]]] = []
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def count(self, action: str) -> int:
        return sum(1 for a in self.received if a["Action"][0] == action)

    async def __aenter__(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def push_events(self, section: str) -> int:
        """Send the events of a section, unprompted, to every open connection."""
        events = [m for m in self.sections[section] if m.startswith("Event:")]
        for writer in list(self._writers):
            for message in events:
                writer.write(wire(message.replace("{ActionID}", "unrelated-1")))
            await writer.drain()
        return len(events)

    def _reply(self, action: dict[str, list[str]], last_ids: dict[str, str]) -> bytes:
        name = action["Action"][0]
        section = None
        for key, values in action.items():
            section = section or self.sections.get(f"{name} {key}={values[0]}")
        section = section or self.sections.get(name)
        if section is None:
            section = ["Response: Error\nActionID: {ActionID}\nMessage: Invalid/unknown command: "
                       + name + ". Use Action: ListCommands to show available commands."]
        out = b""
        for message in section:
            for other, other_id in last_ids.items():
                message = message.replace(f"{{ActionID:{other}}}", other_id)
            out += wire(message.replace("{ActionID}", action["ActionID"][0]))
        return out

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        self.connections += 1
        last_ids: dict[str, str] = {}
        held: list[bytes] = []
        try:
            writer.write(self.sections["banner"][0].encode() + b"\r\n")
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                action: dict[str, list[str]] = {}
                for line in raw.decode().split("\r\n"):
                    if line:
                        key, _, value = line.partition(": ")
                        action.setdefault(key, []).append(value)
                self.received.append(action)
                name = action["Action"][0]
                last_ids[name] = action["ActionID"][0]
                if name in self.drop_on:
                    return
                if name in self.silent:
                    continue
                reply = self._reply(action, last_ids)
                if name in self.hold:
                    held.append(reply)
                    continue
                writer.write(reply + b"".join(held))
                held.clear()
                await writer.drain()
                if name in self.close_after:
                    return
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._tasks.discard(task)


def recorded_bytes(transcript: str = "ami_session.txt") -> bytes:
    """The whole transcript as Asterisk sent it, with ActionIDs filled in."""
    sections = load_transcript(transcript)
    out = sections["banner"][0].encode() + b"\r\n"
    for name, messages in sections.items():
        if name == "banner":
            continue
        for message in messages:
            message = message.replace("{ActionID:Originate}", "id-Originate")
            out += wire(message.replace("{ActionID}", f"id-{name.split()[0]}"))
    return out


def client_for(fake: FakeAmi, **options) -> AmiClient:
    options.setdefault("reconnect_backoff", (0.05, 0.1))
    options.setdefault("action_timeout_s", 3.0)
    return AmiClient("127.0.0.1", fake.port, "hotline", SECRET, **options)


async def wait_until(predicate, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# --- codec ----------------------------------------------------------------------------------

def test_docstring_examples():
    assert doctest.testmod(ami).failed == 0


@pytest.mark.parametrize("action, fields, expected", [
    ("Ping", {}, b"Action: Ping\r\nActionID: a-1\r\n\r\n"),
    ("Login", {"Username": "hotline", "Secret": "pw", "Events": "off"},
     b"Action: Login\r\nActionID: a-1\r\nUsername: hotline\r\nSecret: pw\r\nEvents: off\r\n\r\n"),
    ("DBPut", {"Family": "hotline", "Key": "trauma/chain", "Val": "1001,1002"},
     b"Action: DBPut\r\nActionID: a-1\r\nFamily: hotline\r\nKey: trauma/chain\r\n"
     b"Val: 1001,1002\r\n\r\n"),
    ("Originate", {"Channel": "Local/s@hotline-test", "Timeout": 30000,
                   "Variable": ["HOTLINE_A=1", "HOTLINE_B=two"]},
     b"Action: Originate\r\nActionID: a-1\r\nChannel: Local/s@hotline-test\r\nTimeout: 30000\r\n"
     b"Variable: HOTLINE_A=1\r\nVariable: HOTLINE_B=two\r\n\r\n"),
    ("Command", {"Command": "core show channels"},
     b"Action: Command\r\nActionID: a-1\r\nCommand: core show channels\r\n\r\n"),
    ("Setvar", {"Value": ""}, b"Action: Setvar\r\nActionID: a-1\r\nValue: \r\n\r\n"),
    ("DBPut", {"Val": "李医生: ward 3"},
     "Action: DBPut\r\nActionID: a-1\r\nVal: 李医生: ward 3\r\n\r\n".encode()),
])
def test_encode_action(action, fields, expected):
    assert encode_action(action, fields, "a-1") == expected


@pytest.mark.parametrize("action, fields, action_id", [
    ("DBPut", {"Val": "1\r\nAction: Originate"}, "a-1"),
    ("DBPut", {"Val": "1\nAction: Originate"}, "a-1"),  # Asterisk ends a line at a bare LF too
    ("DBPut", {"Val": "1\rx"}, "a-1"),
    ("DBPut", {"Val": "1\x00x"}, "a-1"),  # Asterisk ends the header at NUL
    ("DBPut", {"Key\r\nAction: Originate\r\nX": "1"}, "a-1"),
    ("DBPut", {"Key: x": "1"}, "a-1"),
    ("DBPut", {"": "1"}, "a-1"),
    ("DBPut", {"Action": "Originate"}, "a-1"),
    ("DBPut", {"actionid": "other"}, "a-1"),
    ("DBPut", {"Variable": ["A=1", "B=2\r\nAction: Originate"]}, "a-1"),
    ("Ping\r\nAction: Originate", {}, "a-1"),
    ("", {}, "a-1"),
    ("Ping", {}, "a-1\r\nAction: Originate"),
    ("DBPut", {"Val": "x" * 1100}, "a-1"),
    ("Originate", {"Variable": [f"V{i}=1" for i in range(130)]}, "a-1"),
])
def test_encode_action_rejects_injection_and_oversize(action, fields, action_id):
    with pytest.raises(ValueError) as caught:
        encode_action(action, fields, action_id)
    assert "Originate\r" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [b"bytes", True, 1.5, None])
def test_encode_action_rejects_non_text_values(value):
    with pytest.raises(TypeError):
        encode_action("DBPut", {"Val": value}, "a-1")


def test_parser_reads_the_recorded_session_in_any_chunking():
    data = recorded_bytes()
    whole = AmiParser()
    messages = whole.feed(data)
    assert whole.banner == "Asterisk Call Manager/11.0.0"
    rng = random.Random(96608)
    for _ in range(20):
        parser, chunked, pos = AmiParser(), [], 0
        while pos < len(data):
            step = rng.randint(1, 40)
            chunked += parser.feed(data[pos:pos + step])
            pos += step
        assert [m.headers for m in chunked] == [m.headers for m in messages]
        assert parser.banner == whole.banner

    by_id = {}
    for message in messages:
        by_id.setdefault(message.action_id, []).append(message)
    login = by_id["id-Login"]
    assert login[0].kind == "response" and login[0]["Message"] == "Authentication accepted"
    command = by_id["id-Command"][0]
    assert command.output[1:] == ["0 active channels", "0 active calls", "0 calls processed"]
    assert command.output[0].startswith("Channel ") and command.output[0].endswith("  ")
    listing = by_id["id-CoreShowChannels"]
    assert [m.name for m in listing] == [
        "Success", "CoreShowChannel", "CoreShowChannel", "CoreShowChannelsComplete"]
    assert listing[0]["EventList"] == "start" and listing[-1]["EventList"] == "Complete"
    # OriginateResponse is an event although it carries a Response header.
    originate_response = [m for m in by_id["id-Originate"] if m.kind == "event"]
    assert [m.name for m in originate_response] == ["OriginateResponse"]
    assert originate_response[0]["Response"] == "Failure"
    # A repeated key keeps every value; lookups are case-insensitive and give the first.
    test_event = next(m for m in messages if m.name == "TestEvent")
    assert test_event.get_all("State") == ["CallIDChange", "CallIDChange"]
    assert test_event["state"] == "CallIDChange" and "STATE" in test_event
    var_set = next(m for m in messages if m.get("Variable") == "HOTLINE_CASE")
    assert var_set["Value"] == 'case \\"7\\"'  # AMI escapes quotes in VarSet values
    assert [m.name for m in by_id["id-DBGet"]][:3] == ["Success", "DBGetResponse", "DBGetComplete"]


@pytest.mark.parametrize("data, expected", [
    (b"Event: Newchannel\r\nChannel: PJSIP/caller-00000001\r\nChanVariable: HOTLINE_CASE=42\r\n"
     b"ChanVariable: HOTLINE_TEAM=trauma\r\nChanVariable: EMPTY=\r\n\r\n",
     [("event", [("Event", "Newchannel"), ("Channel", "PJSIP/caller-00000001"),
                 ("ChanVariable", "HOTLINE_CASE=42"), ("ChanVariable", "HOTLINE_TEAM=trauma"),
                 ("ChanVariable", "EMPTY=")])]),
    (b"Response: Success\nActionID: x\nPing: Pong\n\n",  # bare LF line ends
     [("response", [("Response", "Success"), ("ActionID", "x"), ("Ping", "Pong")])]),
    (b"\r\n\r\nEvent: A\r\nKey:\r\nKey2: a: b\r\n\r\n",
     [("event", [("Event", "A"), ("Key", ""), ("Key2", "a: b")])]),
    (b"Response: Follows\r\nActionID: c\r\nold style output line\r\n--END COMMAND--\r\n\r\n",
     [("response", [("Response", "Follows"), ("ActionID", "c"), ("", "old style output line"),
                    ("", "--END COMMAND--")])]),
    ("Event: NewCallerid\r\nCallerIDName: 李医生\r\n\r\n".encode(),
     [("event", [("Event", "NewCallerid"), ("CallerIDName", "李医生")])]),
    (b"Event: Partial\r\nKey: v\r\n", []),  # not finished yet
])
def test_parser_table(data, expected):
    parser = AmiParser()
    parser.feed(b"Asterisk Call Manager/11.0.0\r\n")
    got = []
    for i in range(len(data)):  # byte by byte: a UTF-8 character split in two is fine
        got += parser.feed(data[i:i + 1])
    assert [(m.kind, list(m.headers)) for m in got] == expected


def test_parser_without_banner_and_with_a_runaway_line():
    parser = AmiParser(max_line_bytes=100)
    assert parser.feed(b"Event: A\r\n\r\n")[0].name == "A"
    assert parser.banner is None
    with pytest.raises(AmiProtocolError):
        parser.feed(b"x" * 200)


def test_message_helpers():
    message = Message([("Event", "Newchannel"), ("ChanVariable", "HOTLINE_CASE=42"),
                       ("ChanVariable", "HOTLINE_NOTE=a=b"), ("Secret", SECRET)])
    assert message.variables() == {"HOTLINE_CASE": "42", "HOTLINE_NOTE": "a=b"}
    assert list(message) == ["Event", "ChanVariable", "Secret"] and len(message) == 3
    assert SECRET not in repr(message)
    assert not message.success and message.action_id is None
    assert Message([]).kind == "unknown"


# --- the client against a fake Asterisk -----------------------------------------------------

def test_login_failure_raises_auth_error_and_leaves_nothing_running():
    async def scenario():
        async with FakeAmi("ami_login_failed.txt", close_after={"Login"}) as fake:
            client = client_for(fake)
            with pytest.raises(AmiAuthError) as caught:
                await client.connect()
            assert SECRET not in str(caught.value)
            assert not client.connected
            await client.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()
                      and t.get_name().startswith("ami-")]
            return fake, others

    fake, others = run(scenario())
    assert others == []
    assert fake.count("Login") == 1
    assert fake.received[0]["Secret"] == [SECRET]  # it went on the wire, never into a log


@pytest.mark.parametrize("events, expected", [(True, "on"), (False, "off")])
def test_login_then_command_output_and_ping(events, expected):
    async def scenario():
        async with FakeAmi() as fake:
            async with client_for(fake, events=events) as client:
                assert client.connected and client.banner == "Asterisk Call Manager/11.0.0"
                ping = await client.send("Ping")
                command = await client.send("Command", Command="core show channels")
                missing = await client.send("NoSuchAction")
            return fake, ping, command, missing, repr(client)

    fake, ping, command, missing, shown = run(scenario())
    assert fake.received[0]["Events"] == [expected]
    assert ping.success and ping["Ping"] == "Pong"
    assert command.output[1:] == ["0 active channels", "0 active calls", "0 calls processed"]
    assert not missing.success and missing["Message"].startswith("Invalid/unknown command")
    assert SECRET not in shown


def test_responses_correlate_by_action_id_out_of_order_with_events_interleaved():
    events: list[Message] = []

    async def scenario():
        async with FakeAmi(hold={"Ping"}) as fake:
            async with client_for(fake) as client:
                client.add_listener(events.append)
                ping, originate = await asyncio.gather(
                    client.send("Ping"),
                    client.send("Originate", Channel="Local/s@hotline-test", Context="hotline-test",
                                Exten="park", Priority=1, Async="true",
                                Variable=["HOTLINE_A=1", "HOTLINE_B=two"]))
                hangup = await client.send("Hangup", Channel="Local/s@hotline-test-00000000;2")
                await wait_until(lambda: any(e.name == "OriginateResponse" for e in events))
            return fake, ping, originate, hangup

    fake, ping, originate, hangup = run(scenario())
    order = [a["Action"][0] for a in fake.received]
    assert order == ["Login", "Ping", "Originate", "Hangup"]
    assert ping["Ping"] == "Pong" and ping.action_id == fake.received[1]["ActionID"][0]
    assert originate["Message"] == "Originate successfully queued"
    assert originate.action_id == fake.received[2]["ActionID"][0]
    assert hangup["Message"] == "Channel Hungup"
    assert fake.received[2]["Variable"] == ["HOTLINE_A=1", "HOTLINE_B=two"]
    names = [e.name for e in events]
    assert names[0] == "FullyBooted" and "Newchannel" in names and "Hangup" in names
    assert all(e.kind == "event" for e in events)
    # The async Originate's outcome arrives later as an event with its ActionID.
    late = next(e for e in events if e.name == "OriginateResponse")
    assert late.action_id == originate.action_id and late["Response"] == "Failure"


def test_send_list_collects_events_until_complete():
    events: list[Message] = []

    async def scenario():
        async with FakeAmi() as fake:
            async with client_for(fake) as client:
                client.add_listener(events.append)
                channels = await client.send_list("CoreShowChannels")
                found = await client.send_list("DBGet", Family="hotline", Key="trauma/chain")
                missing = await client.send_list("DBGet", Family="hotline", Key="nope")
                tree = await client.send_list("DBGetTree", Family="hotline")
                await client.send("Ping")  # everything before it has been dispatched
                await asyncio.sleep(0.05)
            return channels, found, missing, tree

    channels, found, missing, tree = run(scenario())
    response, items = channels
    assert response["EventList"] == "start"
    assert [i["Channel"] for i in items] == [
        "Local/s@hotline-test-00000000;1", "Local/s@hotline-test-00000000;2"]
    assert items[1]["Linkedid"] == "1795633529.0"
    # In Asterisk 22 DBGet is a list action: the value is in a DBGetResponse event.
    assert [e["Val"] for e in found[1]] == ["1001,1002"]
    assert not missing[0].success and missing[1] == []
    assert [(e["Key"], e["Val"]) for e in tree[1]] == [("/hotline/trauma/chain", "1001,1002")]
    assert [e.name for e in events] == ["FullyBooted"]  # list items are not broadcast


def test_reconnect_fails_the_pending_action_once_and_resumes_events():
    events: list[Message] = []
    resyncs: list[tuple[Message, list[Message]]] = []

    async def scenario():
        async with FakeAmi(drop_on={"Originate"}) as fake:
            client = client_for(fake)
            reconnected = asyncio.Event()

            async def resync():
                resyncs.append(await client.send_list("CoreShowChannels"))
                reconnected.set()

            client.add_listener(events.append)
            client.on_reconnect(resync)
            await client.connect()
            first = await fake.push_events("Originate")
            await wait_until(lambda: len(events) >= first + 1)
            before = len(events)

            with pytest.raises(AmiDisconnected) as caught:
                await client.send("Originate", Channel="PJSIP/surgeon-1001", Context="hotline",
                                  Exten="s", Priority=1, Async="true")
            assert "not resent" in str(caught.value)
            await asyncio.wait_for(reconnected.wait(), 5)

            await fake.push_events("Originate")
            await wait_until(lambda: len(events) >= before + first + 1)
            pong = await client.send("Ping")
            await asyncio.sleep(0.3)  # time for a (wrong) resend to show up
            await client.close()
            return fake, client, before, first, pong

    fake, client, before, first, pong = run(scenario())
    assert fake.count("Originate") == 1
    assert fake.connections == 2 and client.reconnects == 1
    assert [a["Action"][0] for a in fake.received] == [
        "Login", "Originate", "Login", "CoreShowChannels", "Ping"]
    assert len(resyncs) == 1 and len(resyncs[0][1]) == 2
    assert pong["Ping"] == "Pong"
    names = [e.name for e in events]
    assert names.count("FullyBooted") == 2  # one per login
    assert names.count("Newchannel") == 4  # two per push, before and after the reconnect


def test_a_slow_listener_never_blocks_the_reader():
    async def scenario():
        release = asyncio.Event()
        seen: list[Message] = []

        async def slow_listener(message):
            seen.append(message)
            await release.wait()

        async with FakeAmi() as fake:
            async with client_for(fake, event_queue_size=3) as client:
                client.add_listener(slow_listener)
                pushed = await fake.push_events("Originate")
                pong = await client.send("Ping", response_timeout_s=2.0)
                dropped = client.events_dropped
                release.set()
        return pushed, pong, dropped

    pushed, pong, dropped = run(scenario())
    assert pong["Ping"] == "Pong"
    # The dispatcher holds one event, the queue three: the rest were dropped and counted.
    assert dropped == pushed + 1 - 4


def test_listener_errors_are_logged_and_do_not_stop_dispatch(caplog):
    seen = []

    def broken(message):
        raise RuntimeError("listener bug")

    async def scenario():
        async with FakeAmi() as fake:
            async with client_for(fake) as client:
                client.add_listener(broken)
                client.add_listener(seen.append)
                await fake.push_events("Originate")
                await wait_until(lambda: len(seen) > 3)

    run(scenario())
    assert "AMI event listener" in caplog.text


def test_unanswered_action_times_out_and_the_session_goes_on():
    async def scenario():
        async with FakeAmi(silent={"Ping"}) as fake:
            async with client_for(fake) as client:
                with pytest.raises(AmiTimeout):
                    await client.send("Ping", response_timeout_s=0.2)
                command = await client.send("Command", Command="core show version")
                return command, client.connected

    command, connected = run(scenario())
    assert command.output[0].startswith("Asterisk 22.10.1")
    assert connected


def test_header_injection_is_refused_before_anything_is_sent():
    async def scenario():
        async with FakeAmi() as fake:
            async with client_for(fake) as client:
                with pytest.raises(ValueError):
                    await client.send("DBPut", Family="hotline", Key="trauma/chain",
                                      Val="1001\r\nAction: Originate\r\nChannel: PJSIP/trunk/1")
                await client.send("Ping")
            return [a["Action"][0] for a in fake.received]

    assert run(scenario()) == ["Login", "Ping"]


def test_sending_without_a_connection_fails_at_once():
    async def scenario():
        async with FakeAmi() as fake:
            client = client_for(fake)
            with pytest.raises(AmiDisconnected):
                await client.send("Ping")
            await client.connect()
            await client.close()
            with pytest.raises(AmiDisconnected):
                await client.send("Ping")
            await client.close()  # idempotent
            return fake.count("Ping")

    assert run(scenario()) == 0


def test_connect_errors():
    async def not_ami(reader, writer):
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n")
        await writer.drain()
        writer.close()

    async def scenario():
        server = await asyncio.start_server(not_ami, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(AmiConnectError):
            await AmiClient("127.0.0.1", port, "hotline", SECRET).connect()
        server.close()
        await server.wait_closed()
        with pytest.raises(AmiConnectError):
            await AmiClient("127.0.0.1", port, "hotline", SECRET, connect_timeout_s=1).connect()

    run(scenario())


def test_client_refuses_credentials_with_line_breaks():
    with pytest.raises(ValueError):
        AmiClient("127.0.0.1", 5038, "hotline\r\nAction: Originate", SECRET)


def test_an_unanswered_keepalive_ping_drops_and_reconnects():
    async def scenario():
        async with FakeAmi(silent={"Ping"}) as fake:
            async with client_for(fake, ping_interval_s=0.1, action_timeout_s=0.2) as client:
                await wait_until(lambda: client.reconnects >= 1 and client.connected)
                command = await client.send("Command", Command="core show version",
                                            response_timeout_s=2.0)
            return fake, command

    fake, command = run(scenario())
    assert fake.connections >= 2
    assert command.success
