"""FastAGI codec tables, and the server against a fake Asterisk over real loopback sockets.

The fake replays what Asterisk 22.10.1 sent in a recorded session
(fixtures/agi_env.txt, fixtures/agi_session.txt).
"""
from __future__ import annotations

import asyncio
import contextlib
import doctest
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ivr import fastagi
from ivr.fastagi import (
    ERROR_VARIABLE,
    AgiChannel,
    AgiCommandError,
    AgiHangup,
    AgiProtocolError,
    AgiRequest,
    AgiResult,
    AgiTimeout,
    FastAgiServer,
    Routes,
    parse_agi_result,
    parse_env_line,
    quote_arg,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _suppress():
    """A peer that closed on us may reset the connection: that is the expected outcome here."""
    return contextlib.suppress(ConnectionError)


def run(coro, timeout: float = 20.0):
    """Run one async scenario to completion in a fresh event loop, with a safety deadline."""
    async def bounded():
        async with asyncio.timeout(timeout):
            return await coro
    return asyncio.run(bounded())


@pytest.fixture(autouse=True)
def no_asyncio_errors(caplog):
    """asyncio logs (rather than raises) unhandled task errors: treat any as a failure."""
    yield
    noise = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert noise == []


# --- the recorded session -------------------------------------------------------------------

def recorded_env(script: str | None = "call_start?lang=zh", **overrides: str) -> bytes:
    """The environment Asterisk 22 sent, some values replaced; script=None drops that line."""
    env: dict[str, str] = {}
    for line in (FIXTURES / "agi_env.txt").read_text().splitlines():
        if line:
            key, _, value = line.partition(": ")
            env[key] = value
    if script is None:
        del env["agi_network_script"]
    else:
        env["agi_network_script"] = script
    env.update(overrides)
    return "".join(f"{k}: {v}\n" for k, v in env.items()).encode() + b"\n"


def recorded_session() -> list[tuple[str, str]]:
    """(kind, text) items of agi_session.txt: '>' command, '<' reply, '!' unprompted line."""
    items: list[tuple[str, str]] = []
    for line in (FIXTURES / "agi_session.txt").read_text().splitlines():
        if line.startswith("#") or not line:
            continue
        kind, text = line[0], line[2:]
        if kind == "<" and items and items[-1][0] == "<":
            items[-1] = ("<", items[-1][1] + "\n" + text)
        else:
            items.append((kind, text))
    return items


def recorded_replies() -> dict[str, str]:
    replies = {}
    items = recorded_session()
    for (kind, text), (next_kind, reply) in zip(items, items[1:], strict=False):
        if kind == ">" and next_kind == "<":
            replies.setdefault(text, reply + "\n")
    return replies


class FakeAsterisk:
    """Plays Asterisk's side of one FastAGI call over a real loopback socket.

    Sends the environment, answers each command with ``respond(command)`` (None:
    no answer at all) and records the commands until the server closes.
    """

    def __init__(self, port: int, env: bytes | None = None,
                 respond: Callable[[str], str | None] | None = None) -> None:
        self.port = port
        self.env = recorded_env() if env is None else env
        table = recorded_replies()
        self.respond = respond or (lambda cmd: table.get(cmd, "510 Invalid or unknown command\n"))
        self.commands: list[str] = []
        self.closed_by_server = False

    async def run(self) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(self.env)
            await writer.drain()
            while True:
                line = await reader.readline()
                if not line:
                    self.closed_by_server = True
                    break
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                reply = self.respond(command)
                if reply:
                    writer.write(reply.encode())
                    await writer.drain()
        except ConnectionError:
            self.closed_by_server = True
        finally:
            writer.close()
            with _suppress():
                await writer.wait_closed()
        return self.commands


class ReplayAsterisk(FakeAsterisk):
    """Replays agi_session.txt in order: checks and answers each command, sends '!' lines."""

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.items = recorded_session()
        self.mismatches: list[tuple[str, str]] = []

    async def run(self) -> list[str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        items = list(self.items)
        try:
            writer.write(self.env)
            while items:
                kind, text = items.pop(0)
                if kind == "!":
                    writer.write((text + "\n").encode())
                    continue
                assert kind == ">"
                line = await reader.readline()
                if not line:
                    self.closed_by_server = True
                    return self.commands
                command = line.decode().rstrip("\n")
                self.commands.append(command)
                if command != text:
                    self.mismatches.append((text, command))
                    return self.commands
                _, reply = items.pop(0)
                writer.write((reply + "\n").encode())
            self.closed_by_server = await reader.read() == b""
        finally:
            writer.close()
            with _suppress():
                await writer.wait_closed()
        return self.commands


# --- codec tables ---------------------------------------------------------------------------

def test_docstring_examples():
    assert doctest.testmod(fastagi).failed == 0


@pytest.mark.parametrize("line, expected", [
    (b"agi_network: yes\n", ("agi_network", "yes")),
    (b"agi_network_script: call_start?lang=zh\n", ("agi_network_script", "call_start?lang=zh")),
    (b"agi_channel: Local/s@hotline-test-00000000;2\n",
     ("agi_channel", "Local/s@hotline-test-00000000;2")),
    (b"agi_calleridname: Dr. Li: ortho\n", ("agi_calleridname", "Dr. Li: ortho")),
    (b"agi_accountcode: \n", ("agi_accountcode", "")),
    (b"agi_accountcode:\n", ("agi_accountcode", "")),
    (b"agi_arg_2: second arg\r\n", ("agi_arg_2", "second arg")),
    (b"agi_arg_1:  two leading\n", ("agi_arg_1", " two leading")),
    ("agi_calleridname: 李医生\n".encode(), ("agi_calleridname", "李医生")),
    (b"agi_calleridname: \xff\xfe\n", ("agi_calleridname", "\ufffd\ufffd")),
])
def test_parse_env_line(line, expected):
    assert parse_env_line(line) == expected


@pytest.mark.parametrize("line", [
    b"\n", b"HANGUP\n", b"200 result=1\n", b"agi_channel PJSIP/x\n", b"AGI_CHANNEL: x\n",
    b"agi_: x\n", b"agi_channel: a\rb\n", b"agi_channel: a\x00b\n", b"agi-channel: x\n",
])
def test_parse_env_line_rejects(line):
    with pytest.raises(AgiProtocolError):
        parse_env_line(line)


@pytest.mark.parametrize("text, expected", [
    ("200 result=1 (timeout)", AgiResult(200, "1", "timeout")),
    ("200 result=0", AgiResult(200, "0", None)),
    ("200 result=-1", AgiResult(200, "-1", None)),
    ("200 result= (timeout)", AgiResult(200, "", "timeout")),
    ('200 result=1 (case "7")', AgiResult(200, "1", 'case "7"')),
    ("200 result=1 (Dr. Li: ortho)", AgiResult(200, "1", "Dr. Li: ortho")),
    ("200 result=1 ()", AgiResult(200, "1", "")),
    ("200 result=1 (a) b)", AgiResult(200, "1", "a) b")),
    ("200 result=49 (dtmf) endpos=1760", AgiResult(200, "49", "dtmf")),
    ("200 result=0 endpos=1760", AgiResult(200, "0", None)),
    ("200 result=1\n", AgiResult(200, "1", None)),
    ("510 Invalid or unknown command", AgiResult(510, None, "Invalid or unknown command")),
    ("511 Command Not Permitted on a dead channel or intercept routine",
     AgiResult(511, None, "Command Not Permitted on a dead channel or intercept routine")),
    ("520 Invalid command syntax.  Proper usage not available.",
     AgiResult(520, None, "Invalid command syntax.  Proper usage not available.")),
    ("520-Invalid command syntax.  Proper usage follows:\n"
     "Sets a variable to the current channel.\n520 End of proper usage.\n",
     AgiResult(520, None, "Sets a variable to the current channel.")),
    ("520-Invalid command syntax.  Proper usage follows:\nline 1\nline 2\n520 End of proper usage.",
     AgiResult(520, None, "line 1\nline 2")),
])
def test_parse_agi_result(text, expected):
    assert parse_agi_result(text) == expected


@pytest.mark.parametrize("text", [
    "", "HANGUP", "result=1", "200", "20 result=1", "200 foo=1", "200 result=1 (unclosed",
    "520-Invalid command syntax.  Proper usage follows:\nno end",
    "200 result=1\n200 result=1",
])
def test_parse_agi_result_rejects(text):
    with pytest.raises(AgiProtocolError):
        parse_agi_result(text)


def test_parse_agi_result_reads_every_recorded_reply():
    for reply in recorded_replies().values():
        assert parse_agi_result(reply).code in (200, 510, 511, 520)


@pytest.mark.parametrize("value, expected", [
    ("1", '"1"'),
    ("", '""'),
    ("two words", '"two words"'),
    ('case "7"', '"case \\"7\\""'),
    ("back\\slash", '"back\\\\slash"'),
    ('hello "world" \\ back', '"hello \\"world\\" \\\\ back"'),
    ("tab\there", '"tab\there"'),
    ("李医生", '"李医生"'),
])
def test_quote_arg(value, expected):
    assert quote_arg(value) == expected


@pytest.mark.parametrize("value", [
    "1\nEXEC System rm", "1\r\nEXEC Dial PJSIP/trunk/0014165551212", "\r", "x\x00y", "\n",
])
def test_quote_arg_rejects_line_breaks_and_nul(value):
    with pytest.raises(ValueError) as caught:
        quote_arg(value)
    assert "EXEC" not in str(caught.value)  # the value is not echoed into logs


def test_quote_arg_rejects_non_strings():
    with pytest.raises(TypeError):
        quote_arg(7)  # type: ignore[arg-type]


def asterisk_parse_args(line: str) -> list[str]:
    """Python port of res_agi.c parse_args(), to check quoting against Asterisk's own reading."""
    argv: list[str] = []
    quoted = escaped = False
    whitespace = True
    for ch in line:
        if ch == '"' and not escaped:
            quoted = not quoted
            if quoted and whitespace:
                argv.append("")
                whitespace = False
            continue
        if ch in " \t" and not quoted and not escaped:
            whitespace = True
            continue
        if ch == "\\" and not escaped:
            escaped = True
            continue
        if whitespace:
            argv.append("")
            whitespace = False
        argv[-1] += ch
        escaped = False
    return argv


@settings(max_examples=400, database=None, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\r\n\x00", codec="utf-8")))
def test_quoted_argument_reads_back_as_exactly_one_argument(value):
    assert asterisk_parse_args(f"SET VARIABLE HOTLINE_X {quote_arg(value)}") == [
        "SET", "VARIABLE", "HOTLINE_X", value]


def test_recorded_verbose_command_is_what_quote_arg_writes():
    commands = [text for kind, text in recorded_session() if kind == ">"]
    message = 'hello "world" \\ back'
    assert "VERBOSE " + quote_arg(message) + " 1" in commands


# --- the request ----------------------------------------------------------------------------

def env_dict(raw: bytes) -> dict[str, str]:
    return dict(parse_env_line(line) for line in raw.splitlines(keepends=True) if line.strip())


def test_request_from_recorded_env():
    request = AgiRequest.from_env(env_dict(recorded_env()), peer="127.0.0.1")
    assert request.script == "call_start"
    assert dict(request.query) == {"lang": "zh"}
    assert request.args == ["1795633529.0", "second arg"]
    assert request.channel == "Local/s@hotline-test-00000000;2"
    assert request.uniqueid == "1795633529.1"
    # Stock res_agi sends no agi_linkedid: the dialplan passes ${CHANNEL(linkedid)} as an argument.
    assert request.linkedid is None
    assert request.env["agi_calleridname"] == "Dr. Li: ortho"
    with pytest.raises(TypeError):
        request.env["agi_channel"] = "x"  # type: ignore[index]


def test_request_args_stop_at_the_first_gap():
    env = {"agi_network_script": "call_end", "agi_arg_1": "a", "agi_arg_3": "c"}
    assert AgiRequest.from_env(env).args == ["a"]


@pytest.mark.parametrize("script", [
    "CallStart", "call-start", "call_start/extra", "../call_start", "", "a" * 33, "call start",
    "call_start%00", "/call_start",
])
def test_request_rejects_invalid_route_names(script):
    with pytest.raises(AgiProtocolError):
        AgiRequest.from_env({"agi_network_script": script})


def test_request_without_script_is_rejected():
    with pytest.raises(AgiProtocolError):
        AgiRequest.from_env({"agi_channel": "PJSIP/x"})


# --- the route table ------------------------------------------------------------------------

async def _noop(request, channel):
    return None


def test_routes_refuse_a_second_handler():
    routes = Routes()
    routes.add("call_start", _noop)
    with pytest.raises(ValueError, match="already registered"):
        routes.add("call_start", _noop)
    assert list(routes) == ["call_start"]


@pytest.mark.parametrize("name", ["CallStart", "call-start", "", "x" * 33, "call_start?x=1"])
def test_server_refuses_invalid_route_names(name):
    with pytest.raises(ValueError):
        FastAgiServer({name: _noop}, port=0)


def test_server_refuses_plain_function_handlers():
    def plain(request, channel):
        return None

    with pytest.raises(TypeError):
        FastAgiServer({"call_start": plain}, port=0)


def test_server_refuses_allowed_peers_that_are_not_addresses():
    with pytest.raises(ValueError):
        FastAgiServer({"call_start": _noop}, port=0, allowed_peers={"localhost"})


# --- the server against a fake Asterisk -----------------------------------------------------

def test_recorded_conversation_through_the_channel_api():
    seen: dict[str, object] = {}

    async def call_start(request: AgiRequest, channel: AgiChannel) -> None:
        seen["args"] = request.args
        seen["case"] = await channel.get_variable("HOTLINE_CASE")
        seen["unset"] = await channel.get_variable("NOT_SET_VAR")
        await channel.set_variable("HOTLINE_OK", "1")
        await channel.verbose('hello "world" \\ back')
        with pytest.raises(AgiCommandError) as unknown:
            await channel.command("FOO BAR")
        seen["510"] = unknown.value.result
        with pytest.raises(AgiCommandError) as usage:
            await channel.command("SET VARIABLE ONLYONE")
        seen["520"] = usage.value.result
        seen["linkedid"] = (await channel.command("GET VARIABLE CHANNEL(linkedid)")).data
        seen["name"] = (await channel.command('GET VARIABLE "CALLERID(name)"')).data
        try:
            await channel.command("ANSWER")  # Asterisk said HANGUP before answering this
        except AgiHangup:
            seen["hangup"] = True
            raise

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0) as server:
            fake = ReplayAsterisk(server.port)
            await fake.run()
        return fake, server

    fake, server = run(scenario())
    assert fake.mismatches == []
    assert seen == {
        "args": ["1795633529.0", "second arg"],
        "case": 'case "7"',
        "unset": None,
        "510": AgiResult(510, None, "Invalid or unknown command"),
        "520": AgiResult(520, None, "Sets a variable to the current channel."),
        "linkedid": "1795633529.0",
        "name": "Dr. Li: ortho",
        "hangup": True,
    }
    assert fake.commands[-1] == "ANSWER"
    assert fake.closed_by_server
    assert server.stats.hangups == 1 and server.stats.served == 0


@pytest.mark.parametrize("reply", [
    "511 Command Not Permitted on a dead channel or intercept routine\n",
    "200 result=-1\n",
    "HANGUP\n200 result=1\n",
    None,  # Asterisk closes the socket instead of answering
])
def test_hangups_raise_and_nothing_more_is_written(reply):
    outcome = []

    async def call_start(request, channel):
        try:
            await channel.command("ANSWER")
        except AgiHangup:
            outcome.append("hangup")
        assert channel.hung_up
        with pytest.raises(AgiHangup):
            await channel.set_variable("HOTLINE_OK", "1")

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0) as server:
            if reply is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(recorded_env())
                assert await reader.readline() == b"ANSWER\n"
                writer.close()
                await writer.wait_closed()
                while server.active_connections:
                    await asyncio.sleep(0.01)
                return ["ANSWER"]
            fake = FakeAsterisk(server.port, respond=lambda cmd: reply)
            return await fake.run()

    assert run(scenario()) == ["ANSWER"]
    assert outcome == ["hangup"]


def test_concurrent_commands_on_one_channel_are_serialised():
    async def call_start(request, channel):
        case, unset, _ = await asyncio.gather(
            channel.get_variable("HOTLINE_CASE"), channel.get_variable("NOT_SET_VAR"),
            channel.set_variable("HOTLINE_OK", "1"))
        assert (case, unset) == ('case "7"', None)
        await channel.verbose("done")

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0) as server:
            fake = FakeAsterisk(server.port, respond=lambda cmd: recorded_replies().get(
                cmd, "200 result=1\n"))
            return await fake.run(), server

    commands, server = run(scenario())
    assert commands == ["GET VARIABLE HOTLINE_CASE", "GET VARIABLE NOT_SET_VAR",
                        'SET VARIABLE HOTLINE_OK "1"', 'VERBOSE "done" 1']
    assert server.stats.served == 1


def test_set_variable_with_line_break_raises_before_anything_is_written():
    errors = []

    async def call_start(request, channel):
        for value in ("x\r\nEXEC System evil", "x\nEXEC Dial PJSIP/trunk/0014165551212", "a\x00b"):
            with pytest.raises(ValueError) as caught:
                await channel.set_variable("HOTLINE_NOTE", value)
            errors.append(str(caught.value))
        for name in ("FILE(/etc/asterisk/extensions.conf)", "hotline_ok", "_INHERITED", "A B"):
            with pytest.raises(ValueError):
                await channel.set_variable(name, "1")
        with pytest.raises(ValueError):
            await channel.command("VERBOSE " + quote_arg("x" * 3000) + " 1")
        await channel.set_variable("HOTLINE_OK", "1")

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0) as server:
            return await FakeAsterisk(server.port).run()

    assert run(scenario()) == ['SET VARIABLE HOTLINE_OK "1"']
    assert len(errors) == 3 and not any("EXEC" in e for e in errors)


def test_unknown_route_sets_the_error_variable_and_closes():
    async def scenario():
        async with FastAgiServer({"call_start": _noop}, port=0) as server:
            fake = FakeAsterisk(server.port, env=recorded_env("route_choice"),
                                respond=lambda cmd: "200 result=1\n")
            commands = await fake.run()
        return commands, fake, server

    commands, fake, server = run(scenario())
    assert commands == [f'SET VARIABLE {ERROR_VARIABLE} "unknown_route"']
    assert fake.closed_by_server
    assert server.stats.unknown_routes == 1


@pytest.mark.parametrize("script", ["Evil Route", None])
def test_invalid_route_name_is_a_bad_request(script, caplog):
    async def scenario():
        async with FastAgiServer({"call_start": _noop}, port=0) as server:
            fake = FakeAsterisk(server.port, env=recorded_env(script),
                                respond=lambda cmd: "200 result=1\n")
            return await fake.run(), server

    commands, server = run(scenario())
    assert commands == [f'SET VARIABLE {ERROR_VARIABLE} "bad_request"']
    assert server.stats.bad_requests == 1
    if script:
        assert "'Evil Route'" in caplog.text


def test_silent_client_is_dropped_after_the_env_timeout_while_another_is_served():
    served = []

    async def call_start(request, channel):
        served.append(request.uniqueid)
        await channel.set_variable("HOTLINE_OK", "1")

    async def scenario():
        loop = asyncio.get_running_loop()
        async with FastAgiServer({"call_start": call_start}, port=0, env_timeout_s=1.0) as server:
            started = loop.time()
            silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", server.port)
            commands = await FakeAsterisk(server.port).run()
            assert commands == ['SET VARIABLE HOTLINE_OK "1"']
            assert not silent_reader.at_eof()  # still waiting while the other call was served
            assert await silent_reader.read() == b""
            dropped_after = loop.time() - started
            silent_writer.close()
            await silent_writer.wait_closed()
        return dropped_after, server

    dropped_after, server = run(scenario())
    assert served == ["1795633529.1"]
    assert 0.9 <= dropped_after < 3.0
    assert server.stats.dropped == 1 and server.stats.served == 1


@pytest.mark.parametrize("payload", [
    b"agi_network: yes\n" + b"".join(b"agi_arg_%d: x\n" % i for i in range(1, 70)),
    b"agi_network: yes\nagi_calleridname: " + b"x" * 2000,  # no newline: still refused at once
    b"agi_network: yes\nagi_calleridname: " + b"x" * 2000 + b"\n\n",
    b"agi_network: yes\nagi_network: yes\n\n",  # a repeated key
    b"GET / HTTP/1.1\r\nHost: hotline\r\n\r\n",
])
def test_oversized_or_malformed_environment_is_refused_at_once(payload):
    called = []

    async def call_start(request, channel):
        called.append(request)

    async def scenario():
        loop = asyncio.get_running_loop()
        async with FastAgiServer({"call_start": call_start}, port=0, env_timeout_s=10.0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            started = loop.time()
            writer.write(payload)
            with _suppress():
                assert await reader.read() == b""
            elapsed = loop.time() - started
            writer.close()
            with _suppress():
                await writer.wait_closed()
        return elapsed, server

    elapsed, server = run(scenario())
    assert elapsed < 2.0
    assert called == []
    assert server.stats.dropped == 1


def test_peer_not_allowed_is_closed_without_reading(caplog):
    called = []

    async def call_start(request, channel):
        called.append(request)

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0,
                                 allowed_peers={"127.0.0.2"}, env_timeout_s=10.0) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            # Nothing sent at all: the server must not wait for the environment.
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            with _suppress():
                await writer.wait_closed()
        return server

    server = run(scenario())
    assert called == []
    assert server.stats.refused_peers == 1
    assert "'127.0.0.1'" in caplog.text and "not an allowed peer" in caplog.text


def test_handler_crash_closes_only_that_connection(caplog):
    async def scenario():
        crashed = asyncio.Event()

        async def boom(request, channel):
            crashed.set()
            raise RuntimeError("kaputt")

        async def call_start(request, channel):
            await crashed.wait()  # still running while the other connection crashes
            await asyncio.sleep(0.05)
            await channel.set_variable("HOTLINE_OK", "1")

        async with FastAgiServer({"boom": boom, "call_start": call_start}, port=0) as server:
            good = FakeAsterisk(server.port)
            bad = FakeAsterisk(server.port, env=recorded_env("boom", agi_uniqueid="evil\tid"),
                               respond=lambda cmd: "200 result=1\n")
            good_commands, bad_commands = await asyncio.gather(good.run(), bad.run())
        return good_commands, bad_commands, server

    good_commands, bad_commands, server = run(scenario())
    assert good_commands == ['SET VARIABLE HOTLINE_OK "1"']
    assert bad_commands == [f'SET VARIABLE {ERROR_VARIABLE} "handler_failed"']
    assert server.stats.handler_failures == 1 and server.stats.served == 1
    failure = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failure) == 1
    assert "'boom'" in failure[0].getMessage() and "'evil\\tid'" in failure[0].getMessage()
    assert failure[0].exc_info is not None


def test_slow_handler_is_cancelled_after_the_request_timeout():
    cancelled = []

    async def call_start(request, channel):
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def scenario():
        loop = asyncio.get_running_loop()
        async with FastAgiServer({"call_start": call_start}, port=0,
                                 request_timeout_s=0.3) as server:
            started = loop.time()
            commands = await FakeAsterisk(server.port, respond=lambda c: "200 result=1\n").run()
            return commands, loop.time() - started, server

    commands, elapsed, server = run(scenario())
    assert cancelled == [True]
    assert commands == [f'SET VARIABLE {ERROR_VARIABLE} "timeout"']
    assert elapsed < 2.0
    assert server.stats.handler_timeouts == 1


def test_unanswered_command_times_out_and_the_channel_refuses_more():
    outcome = []

    async def call_start(request, channel):
        with pytest.raises(AgiTimeout):
            await channel.get_variable("HOTLINE_CASE")
        assert not channel.usable
        with pytest.raises(AgiProtocolError):
            # A late reply to the first command would be read as this one's answer.
            await channel.set_variable("HOTLINE_OK", "1")
        outcome.append("ok")

    async def scenario():
        async with FastAgiServer({"call_start": call_start}, port=0,
                                 command_timeout_s=0.2) as server:
            return await FakeAsterisk(server.port, respond=lambda cmd: None).run()

    assert run(scenario()) == ["GET VARIABLE HOTLINE_CASE"]
    assert outcome == ["ok"]


def test_stop_cancels_in_flight_handlers_and_waits():
    cancelled = []

    async def scenario():
        started = asyncio.Event()

        async def call_start(request, channel):
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        server = FastAgiServer({"call_start": call_start}, port=0, request_timeout_s=60)
        await server.start()
        fake = asyncio.create_task(FakeAsterisk(server.port).run())
        await started.wait()
        assert server.active_connections == 1
        await server.stop()
        assert server.active_connections == 0
        return await fake

    assert run(scenario()) == []
    assert cancelled == [True]


def test_connections_beyond_the_limit_are_closed_at_once():
    async def scenario():
        release = asyncio.Event()
        started = asyncio.Event()

        async def call_start(request, channel):
            started.set()
            await release.wait()
            await channel.set_variable("HOTLINE_OK", "1")

        async with FastAgiServer({"call_start": call_start}, port=0,
                                 max_connections=1, env_timeout_s=10) as server:
            first = asyncio.create_task(FakeAsterisk(server.port).run())
            await started.wait()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            assert await asyncio.wait_for(reader.read(), 2.0) == b""
            writer.close()
            with _suppress():
                await writer.wait_closed()
            release.set()
            return await first, server

    commands, server = run(scenario())
    assert commands == ['SET VARIABLE HOTLINE_OK "1"']
    assert server.stats.refused_busy == 1


def test_port_before_start_is_an_error():
    server = FastAgiServer({"call_start": _noop}, port=0)
    with pytest.raises(RuntimeError):
        _ = server.port


# -- issue 18 item 2: a request must prove it comes from this instance's dialplan ---------

def test_a_request_without_proof_runs_no_handler_is_told_nothing_and_is_logged_once(caplog):
    ran: list[str] = []

    async def handler(request, channel):
        ran.append(request.script)
        await channel.set_variable("HOTLINE_OK", "1")

    def authentic(request) -> bool:
        return request.query.get("proof") == "good"

    async def scenario():
        async with FastAgiServer({"route": handler, "call_start": handler}, port=0,
                                 authenticate=authentic) as server:
            said = []
            for script in ("route?linkedid=1.1", "route?linkedid=1.1&proof=bad",
                           "no_such_route?proof=bad", "call_start?linkedid=1.1&proof=good"):
                fake = FakeAsterisk(server.port, env=recorded_env(script),
                                    respond=lambda cmd: "200 result=1\n")
                said.append(await fake.run())
            return said, server

    with caplog.at_level(logging.WARNING, logger="ivr.fastagi"):
        said, server = run(scenario())
    assert said == [[], [], [], ['SET VARIABLE HOTLINE_OK "1"']]
    assert ran == ["call_start"]
    assert server.stats.unproven == 3 and server.stats.unknown_routes == 0
    lines = [r.getMessage() for r in caplog.records if "no valid proof" in r.getMessage()]
    assert len(lines) == 1 and "'127.0.0.1'" in lines[0]
    assert "bad" not in lines[0]  # nothing of the query, where the proof travels
