"""FastAGI, protocol only: the AGI environment, commands and their results, and a small server.

Handlers live elsewhere (one per route); this module reads the request, hands the
handler an `AgiRequest` and an `AgiChannel`, and keeps a misbehaving peer or
handler from hurting any other call. Facts from Asterisk's res_agi.c that shape it:

- Asterisk connects (2 s connect timeout), sends ``agi_network: yes``, then
  ``agi_network_script: <everything after the first "/" of the URL>``, then the
  rest of the environment as ``key: value`` lines and a blank line. There is no
  ``agi_linkedid``: pass ``${CHANNEL(linkedid)}`` as an AGI argument.
- After that Asterisk waits for commands with **no timeout**, so every deadline
  is ours to keep.
- Commands are read with ``fgets`` into a 2048-byte buffer: a longer line is cut
  and its tail runs as a *second command*. Arguments split on blanks; ``"``
  toggles quoting and ``\\`` escapes the next character, so a quoted argument may
  hold anything except CR, LF (which ends the command) and NUL (which ends the C
  string).
- When the channel hangs up, Asterisk writes ``HANGUP`` unprompted between
  commands, answers commands that need a live channel with ``511`` and a command
  that failed on the hangup with ``200 result=-1``.
- A server that just closes the socket leaves ``AGISTATUS=SUCCESS``: the dialplan
  must test a variable the handler sets on success, never AGISTATUS alone.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import parse_qsl

logger = logging.getLogger(__name__)

#: Route names: the path of ``agi://host:port/<route>?...`` in the dialplan.
ROUTE_NAME_RE = re.compile(r"[a-z_]{1,32}")
#: Channel variables we set or read. No parentheses: ``SET VARIABLE FILE(...)``
#: or ``GET VARIABLE SHELL(...)`` would call a dialplan function instead.
VARIABLE_NAME_RE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_ENV_KEY_RE = re.compile(r"agi_[a-z0-9_]{1,60}")
_RESULT_LINE_RE = re.compile(r"(\d{3})([ -])(.*)")

#: Set on the channel when the server refuses a request (unknown_route,
#: bad_request) or its handler fails (handler_failed, timeout); for diagnosis
#: only, the dialplan still branches on the handler's own success variable.
ERROR_VARIABLE = "HOTLINE_AGI_ERROR"

#: res_agi reads a command with fgets() into char buf[AGI_BUF_LEN=2048]: 2047
#: bytes including the newline, or the rest of the line becomes another command.
MAX_COMMAND_BYTES = 2046
#: A usage (520) reply longer than this is not Asterisk talking.
_MAX_USAGE_LINES = 200
_READ_CHUNK = 4096
_FORBIDDEN_IN_ARGS = ("\r", "\n", "\0")


class AgiError(Exception):
    """Base of every FastAGI failure."""


class AgiHangup(AgiError):
    """The channel hung up (HANGUP, EOF, 511 or result=-1): nothing more can be asked of it."""


class AgiProtocolError(AgiError):
    """The peer said something that is not AGI, or the conversation lost its place."""


class AgiCommandError(AgiProtocolError):
    """Asterisk refused a command (510 unknown, 520 usage): a bug on our side, never a caller's."""

    def __init__(self, message: str, result: AgiResult) -> None:
        super().__init__(message)
        self.result = result


class AgiTimeout(AgiError):
    """Asterisk did not answer (or the environment did not arrive) in time."""


@dataclass(frozen=True)
class AgiResult:
    """One reply to an AGI command.

    ``result`` is the text after ``result=`` (``None`` for non-200 codes);
    ``data`` is the text in parentheses, or the message of a non-200 reply, or
    the usage text of a multi-line 520.
    """

    code: int
    result: str | None
    data: str | None


def parse_env_line(line: bytes) -> tuple[str, str]:
    """Split one line of the AGI environment into ``(key, value)``.

    The value is kept verbatim (it can carry a caller's name, colons included);
    bytes that are not UTF-8 are replaced, not rejected, because a caller picks them.

    >>> parse_env_line(b"agi_channel: PJSIP/alice-00000001\\n")
    ('agi_channel', 'PJSIP/alice-00000001')
    >>> parse_env_line(b"agi_accountcode: \\n")
    ('agi_accountcode', '')
    >>> parse_env_line(b"agi_calleridname: Dr. Li: ortho\\r\\n")
    ('agi_calleridname', 'Dr. Li: ortho')
    >>> parse_env_line(b"HANGUP\\n")
    Traceback (most recent call last):
    ...
    ivr.fastagi.AgiProtocolError: not an AGI environment line: 'HANGUP'
    """
    if line.endswith(b"\n"):
        line = line[:-1]
    if line.endswith(b"\r"):
        line = line[:-1]
    text = line.decode("utf-8", errors="replace")
    if any(ch in text for ch in _FORBIDDEN_IN_ARGS):
        raise AgiProtocolError(f"control character in AGI environment line: {text[:40]!r}")
    key, sep, value = text.partition(":")
    if not sep or not _ENV_KEY_RE.fullmatch(key):
        raise AgiProtocolError(f"not an AGI environment line: {text[:40]!r}")
    if value.startswith(" "):
        value = value[1:]
    return key, value


def parse_agi_result(line: str) -> AgiResult:
    """Parse one reply: a ``200 result=...`` line, an error line, or a whole multi-line 520.

    In ``200`` replies the data runs to the *last* ``)`` because a variable's
    value may itself hold parentheses; ``endpos=`` and similar trailers are dropped.

    >>> parse_agi_result("200 result=1 (timeout)")
    AgiResult(code=200, result='1', data='timeout')
    >>> parse_agi_result("200 result=0")
    AgiResult(code=200, result='0', data=None)
    >>> parse_agi_result("200 result=1 (a (b) c)")
    AgiResult(code=200, result='1', data='a (b) c')
    >>> parse_agi_result("200 result=0 (timeout) endpos=8000")
    AgiResult(code=200, result='0', data='timeout')
    >>> parse_agi_result("510 Invalid or unknown command")
    AgiResult(code=510, result=None, data='Invalid or unknown command')
    >>> parse_agi_result("520-Invalid command syntax.  Proper usage follows:\\n"
    ...                  " Usage: SET VARIABLE <name> <value>\\n"
    ...                  "520 End of proper usage.")
    AgiResult(code=520, result=None, data=' Usage: SET VARIABLE <name> <value>')
    """
    lines = [part.rstrip("\r") for part in line.rstrip("\r\n").split("\n")]
    match = _RESULT_LINE_RE.fullmatch(lines[0])
    if match is None:
        raise AgiProtocolError(f"not an AGI reply: {lines[0][:60]!r}")
    code, separator, rest = int(match.group(1)), match.group(2), match.group(3)
    if separator == "-":
        # "520-Invalid command syntax.  Proper usage follows:" / usage / "520 End of proper usage."
        if len(lines) < 2 or not lines[-1].startswith(f"{code} "):
            raise AgiProtocolError(f"unterminated multi-line {code} reply")
        return AgiResult(code, None, "\n".join(lines[1:-1]))
    if len(lines) != 1:
        raise AgiProtocolError("several lines in a single-line AGI reply")
    if code != 200:
        return AgiResult(code, None, rest)
    if not rest.startswith("result="):
        raise AgiProtocolError(f"200 reply without result=: {rest[:60]!r}")
    value, _, tail = rest[len("result="):].partition(" ")
    data = None
    tail = tail.lstrip(" ")
    if tail.startswith("("):
        end = tail.rfind(")")
        if end < 0:
            raise AgiProtocolError("unbalanced parenthesis in AGI reply")
        data = tail[1:end]
    return AgiResult(code, value, data)


def quote_arg(value: str) -> str:
    """Quote one AGI command argument so Asterisk reads it back as exactly ``value``.

    CR, LF and NUL are refused, not escaped: Asterisk ends the command at the
    newline whatever the quoting, so the rest would run as a command of the
    caller's choosing.

    >>> quote_arg('Dr. "Zhang" \\\\ ward 3')
    '"Dr. \\\\"Zhang\\\\" \\\\\\\\ ward 3"'
    >>> quote_arg("")
    '""'
    >>> quote_arg("1\\nEXEC System rm")
    Traceback (most recent call last):
    ...
    ValueError: AGI argument contains CR, LF or NUL
    """
    if not isinstance(value, str):
        raise TypeError(f"AGI argument must be str, not {type(value).__name__}")
    if any(ch in value for ch in _FORBIDDEN_IN_ARGS):
        # The value is not echoed: it may be caller data and end up in a log line.
        raise ValueError("AGI argument contains CR, LF or NUL")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_variable_name(name: str) -> str:
    """Return ``name`` if it is a plain upper-case channel variable name, else raise ValueError."""
    if not isinstance(name, str) or not VARIABLE_NAME_RE.fullmatch(name):
        raise ValueError(f"not a plain channel variable name: {name!r}")
    return name


class AgiRequest:
    """What Asterisk told us when it connected: the route, the environment and the arguments.

    ``script`` is the path of ``agi://host:port/<script>?<query>``; ``args`` are
    ``agi_arg_1..N`` in order (a gap ends them). Everything here may contain
    caller-chosen text: log it with ``%r``.
    """

    __slots__ = ("env", "script", "args", "query", "peer")

    def __init__(self, env: Mapping[str, str], script: str, args: list[str],
                 query: Mapping[str, str], peer: str | None = None) -> None:
        self.env = env
        self.script = script
        self.args = args
        self.query = query
        self.peer = peer

    @classmethod
    def from_env(cls, env: Mapping[str, str], peer: str | None = None) -> AgiRequest:
        """Build a request from the raw environment; AgiProtocolError for a bad route name."""
        raw = env.get("agi_network_script")
        if raw is None:
            raise AgiProtocolError("no agi_network_script: the AGI URL names no route")
        path, _, query_string = raw.partition("?")
        if not ROUTE_NAME_RE.fullmatch(path):
            raise AgiProtocolError(f"invalid route name {path[:40]!r}")
        try:
            query = dict(parse_qsl(query_string, keep_blank_values=True, max_num_fields=32))
        except ValueError as exc:
            raise AgiProtocolError(f"unreadable query in the AGI URL: {exc}") from None
        args: list[str] = []
        while (arg := env.get(f"agi_arg_{len(args) + 1}")) is not None:
            args.append(arg)
        return cls(MappingProxyType(dict(env)), path, args, MappingProxyType(query), peer)

    @property
    def channel(self) -> str | None:
        return self.env.get("agi_channel")

    @property
    def uniqueid(self) -> str | None:
        return self.env.get("agi_uniqueid")

    @property
    def linkedid(self) -> str | None:
        """``agi_linkedid`` if something sends it; stock res_agi does not (see the module doc)."""
        return self.env.get("agi_linkedid")

    def __repr__(self) -> str:
        return f"AgiRequest(script={self.script!r}, uniqueid={self.uniqueid!r}, args={self.args!r})"


class AgiChannel:
    """AGI commands to one channel over a FastAGI connection, one command at a time.

    Every read has a deadline (AgiTimeout). After HANGUP, EOF, 511 or
    ``result=-1`` the channel refuses further commands with AgiHangup without
    writing. After a command was interrupted half-way (timeout, cancellation,
    garbage) its reply can no longer be told from the next one's, so the
    channel refuses with AgiProtocolError.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *,
                 timeout: float = 2.0, max_response_bytes: int = 8192) -> None:
        self._reader = reader
        self._writer = writer
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        # Our own buffer instead of StreamReader.readline so each read has its own length limit.
        self._buffer = bytearray()
        self._lock = asyncio.Lock()
        self._hung_up = False
        self._broken: str | None = None

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    @property
    def usable(self) -> bool:
        """True while a command could still be sent and its reply matched to it."""
        return not self._hung_up and self._broken is None and not self._writer.is_closing()

    async def read_environment(self, *, max_lines: int = 64, max_line_bytes: int = 1024,
                               timeout: float | None = None) -> dict[str, str]:
        """Read the environment Asterisk sends first, up to its blank line, within one deadline.

        One deadline for the whole environment, not one per line, so a peer
        trickling a line every second cannot hold a connection open for long.
        """
        env: dict[str, str] = {}
        try:
            async with asyncio.timeout(self._timeout if timeout is None else timeout):
                while True:
                    raw = await self._read_line(max_line_bytes)
                    if raw in (b"", b"\r"):
                        return env
                    if len(env) >= max_lines:
                        raise AgiProtocolError(f"AGI environment longer than {max_lines} lines")
                    key, value = parse_env_line(raw)
                    if key in env:
                        # Asterisk never repeats a key; a repeat is someone trying to override one.
                        raise AgiProtocolError(f"repeated AGI environment key {key!r}")
                    env[key] = value
        except TimeoutError:
            self._broken = "environment timed out"
            raise AgiTimeout("no complete AGI environment in time") from None
        except AgiProtocolError as exc:
            self._broken = str(exc)
            raise

    async def command(self, text: str, *, timeout: float | None = None) -> AgiResult:
        """Send one raw AGI command and return its reply.

        Raises ValueError before writing anything if ``text`` holds CR/LF/NUL or
        is too long for Asterisk's buffer; AgiHangup on hangup (``result=-1``
        included, whatever the command); AgiCommandError on 510/520.
        """
        if not isinstance(text, str):
            raise TypeError("AGI command must be str")
        if any(ch in text for ch in _FORBIDDEN_IN_ARGS):
            raise ValueError("AGI command contains CR, LF or NUL")
        data = text.encode("utf-8")
        if len(data) > MAX_COMMAND_BYTES:
            raise ValueError(f"AGI command longer than {MAX_COMMAND_BYTES} bytes")
        async with self._lock:
            self._ensure_usable()
            deadline = self._timeout if timeout is None else timeout
            lines = await self._exchange(data + b"\n", deadline)
            try:
                result = parse_agi_result("\n".join(lines))
            except AgiProtocolError as exc:
                self._broken = str(exc)
                raise
        if result.code == 511 or (result.code == 200 and result.result == "-1"):
            self._hung_up = True
            raise AgiHangup(f"channel hung up ({result.code} result={result.result})")
        if result.code != 200:
            raise AgiCommandError(f"Asterisk refused the command: {result.code}", result)
        return result

    async def set_variable(self, name: str, value: str) -> None:
        """``SET VARIABLE``; the name must be a plain variable, the value is quoted."""
        check_variable_name(name)
        await self.command(f"SET VARIABLE {name} {quote_arg(value)}")

    async def get_variable(self, name: str) -> str | None:
        """``GET VARIABLE``: the value, or None when the variable is not set.

        A value containing a newline would split Asterisk's reply in two and
        desynchronise the conversation: read only variables we wrote.
        """
        check_variable_name(name)
        result = await self.command(f"GET VARIABLE {name}")
        if result.result != "1":
            return None
        return result.data if result.data is not None else ""

    async def verbose(self, message: str, level: int = 1) -> None:
        """``VERBOSE``: a line in Asterisk's console/log at the given verbosity."""
        if not isinstance(level, int) or not 0 <= level <= 4:
            raise ValueError("verbose level must be 0..4")
        await self.command(f"VERBOSE {quote_arg(message)} {level}")

    def _ensure_usable(self) -> None:
        if self._hung_up:
            raise AgiHangup("channel already hung up")
        if self._broken is not None:
            raise AgiProtocolError(f"AGI conversation out of step: {self._broken}")
        if self._writer.is_closing():
            raise AgiHangup("connection closed")

    async def _exchange(self, data: bytes, timeout: float) -> list[str]:
        done = False
        try:
            async with asyncio.timeout(timeout):
                self._writer.write(data)
                await self._writer.drain()
                first = await self._read_text_line()
                if first == "HANGUP":
                    # Sent between commands, so our command's reply still follows it: we
                    # stop here and refuse further commands rather than track it.
                    self._hung_up = True
                    raise AgiHangup("Asterisk sent HANGUP")
                lines = [first]
                if len(first) > 3 and first[3] == "-":
                    terminator = first[:3] + " "
                    while not lines[-1].startswith(terminator):
                        if len(lines) > _MAX_USAGE_LINES:
                            raise AgiProtocolError("endless multi-line AGI reply")
                        lines.append(await self._read_text_line())
            done = True
            return lines
        except TimeoutError:
            self._broken = "a command timed out"
            raise AgiTimeout(f"no AGI reply within {timeout:.1f} s") from None
        except ConnectionError:
            self._hung_up = True
            raise AgiHangup("connection lost") from None
        finally:
            if not done and not self._hung_up and self._broken is None:
                self._broken = "a command was interrupted"

    async def _read_text_line(self) -> str:
        raw = await self._read_line(self._max_response_bytes)
        return raw.rstrip(b"\r").decode("utf-8", errors="replace")

    async def _read_line(self, max_bytes: int) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                if end > max_bytes:
                    raise AgiProtocolError(f"AGI line longer than {max_bytes} bytes")
                line = bytes(self._buffer[:end])
                del self._buffer[:end + 1]
                return line
            if len(self._buffer) > max_bytes:
                raise AgiProtocolError(f"AGI line longer than {max_bytes} bytes")
            chunk = await self._reader.read(_READ_CHUNK)
            if not chunk:
                self._hung_up = True
                raise AgiHangup("connection closed by Asterisk")
            self._buffer += chunk


Handler = Callable[[AgiRequest, AgiChannel], Awaitable[None]]


def _check_route(name: str, handler: Handler) -> None:
    if not isinstance(name, str) or not ROUTE_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid AGI route name {name!r}: must match {ROUTE_NAME_RE.pattern}")
    # iscoroutinefunction sees through functools.partial; __call__ covers handler objects.
    if not (inspect.iscoroutinefunction(handler)
            or inspect.iscoroutinefunction(getattr(handler, "__call__", None))):  # noqa: B004
        # A plain function would "work" until its first call, mid-call for a caller.
        raise TypeError(f"AGI route {name!r}: handler must be an async function")


class Routes(Mapping[str, Handler]):
    """An explicit route table that refuses a second handler for the same route."""

    def __init__(self, routes: Mapping[str, Handler] | Iterable[tuple[str, Handler]] = ()) -> None:
        self._routes: dict[str, Handler] = {}
        items = routes.items() if isinstance(routes, Mapping) else routes
        for name, handler in items:
            self.add(name, handler)

    def add(self, name: str, handler: Handler) -> None:
        _check_route(name, handler)
        if name in self._routes:
            raise ValueError(f"AGI route {name!r} is already registered")
        self._routes[name] = handler

    def __getitem__(self, name: str) -> Handler:
        return self._routes[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._routes)

    def __len__(self) -> int:
        return len(self._routes)


@dataclass
class ServerStats:
    """Counts of what the server did with connections, for tests and health checks."""

    served: int = 0
    refused_peers: int = 0
    refused_busy: int = 0
    dropped: int = 0
    bad_requests: int = 0
    unknown_routes: int = 0
    handler_failures: int = 0
    handler_timeouts: int = 0
    hangups: int = 0
    unproven: int = 0  # requests without a valid proof (see FastAgiServer's `authenticate`)


def _normalize_host(host: str) -> str:
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


#: At most one log line per this many seconds about requests without a valid
#: proof: a flood of them must not fill the disk (the rest are counted).
UNPROVEN_LOG_EVERY_S = 10.0


class FastAgiServer:
    """A FastAGI server for an explicit route table, bounded in every dimension a peer controls.

    Peers not in ``allowed_peers`` are closed before a byte is read. FastAGI has
    no authentication of its own, and an address cannot tell Asterisk from any
    other local process: ``authenticate(request)`` must also hold, or the
    connection is closed without a word and no handler runs. The environment
    must arrive whole within ``env_timeout_s``; a handler runs at most
    ``request_timeout_s`` and each of its commands at most ``command_timeout_s``.
    A failure ends that connection only.
    """

    def __init__(self, routes: Mapping[str, Handler], host: str = "127.0.0.1", port: int = 4573,
                 allowed_peers: Iterable[str] = frozenset({"127.0.0.1", "::1"}), *,
                 env_timeout_s: float = 2.0, max_env_lines: int = 64, max_line_bytes: int = 1024,
                 max_connections: int = 200, request_timeout_s: float = 3.0,
                 command_timeout_s: float = 2.0,
                 authenticate: Callable[[AgiRequest], bool] | None = None) -> None:
        table = routes if isinstance(routes, Routes) else Routes(routes)
        for name, handler in table.items():
            _check_route(name, handler)
        self._routes: Mapping[str, Handler] = MappingProxyType(dict(table))
        allowed = set()
        for peer in allowed_peers:
            try:
                ipaddress.ip_address(peer)
            except ValueError:
                raise ValueError(f"allowed peer {peer!r} is not an IP address") from None
            allowed.add(_normalize_host(peer))
        self._allowed_peers = frozenset(allowed)
        self._host = host
        self._requested_port = port
        self._env_timeout_s = env_timeout_s
        self._max_env_lines = max_env_lines
        self._max_line_bytes = max_line_bytes
        self._max_connections = max_connections
        self._request_timeout_s = request_timeout_s
        self._command_timeout_s = command_timeout_s
        self._authenticate = authenticate
        self._unproven_logged_at: float | None = None
        self._unproven_unlogged = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self._stopping = False
        self.stats = ServerStats()

    @property
    def port(self) -> int:
        """The port actually listened on (useful when 0 was asked for)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("FastAGI server is not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def active_connections(self) -> int:
        return len(self._tasks)

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("FastAGI server already started")
        self._stopping = False
        self._server = await asyncio.start_server(self._accept, self._host, self._requested_port)
        logger.info("FastAGI server listening on %s:%d with routes %s",
                    self._host, self.port, ", ".join(sorted(self._routes)))

    async def stop(self) -> None:
        """Stop listening, cancel in-flight requests and wait until every connection is closed."""
        self._stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    async def __aenter__(self) -> FastAgiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = _normalize_host(str(peername[0])) if peername else "?"
        if self._stopping:
            await _close_writer(writer)
            return
        if peer not in self._allowed_peers:
            self.stats.refused_peers += 1
            logger.warning("FastAGI connection from %r refused: not an allowed peer", peer)
            await _close_writer(writer)
            return
        if len(self._tasks) >= self._max_connections:
            self.stats.refused_busy += 1
            logger.warning("FastAGI connection from %r refused: %d connections already open",
                           peer, len(self._tasks))
            await _close_writer(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._serve(reader, writer, peer)
        except asyncio.CancelledError:
            # Only stop() cancels this task, and it is the connection's top level. Ending it
            # cancelled would make Python 3.11's stream callback log a spurious error.
            pass
        except Exception:
            logger.exception("FastAGI connection from %r failed", peer)
        finally:
            self._tasks.discard(task)
            await _close_writer(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        channel = AgiChannel(reader, writer, timeout=self._command_timeout_s,
                             max_response_bytes=max(self._max_line_bytes, 8192))
        try:
            env = await channel.read_environment(max_lines=self._max_env_lines,
                                                 max_line_bytes=self._max_line_bytes,
                                                 timeout=self._env_timeout_s)
        except AgiError as exc:
            self.stats.dropped += 1
            logger.warning("FastAGI connection from %r dropped: %s", peer, exc)
            return
        try:
            request = AgiRequest.from_env(env, peer)
        except AgiProtocolError as exc:
            self.stats.bad_requests += 1
            logger.warning("FastAGI request from %r refused (uniqueid %r): %s",
                           peer, env.get("agi_uniqueid"), exc)
            await self._report(channel, "bad_request")
            return
        if self._authenticate is not None and not self._authenticate(request):
            # Not even an error variable: a forger learns nothing, and a real
            # channel it names is not touched.
            self.stats.unproven += 1
            self._log_unproven(peer, request)
            return
        handler = self._routes.get(request.script)
        if handler is None:
            self.stats.unknown_routes += 1
            logger.warning("FastAGI request for unknown route %r (uniqueid %r)",
                           request.script, request.uniqueid)
            await self._report(channel, "unknown_route")
            return
        await self._run_handler(handler, request, channel)

    def _log_unproven(self, peer: str, request: AgiRequest) -> None:
        now = time.monotonic()
        if (self._unproven_logged_at is not None
                and now - self._unproven_logged_at < UNPROVEN_LOG_EVERY_S):
            self._unproven_unlogged += 1
            return
        more, self._unproven_unlogged, self._unproven_logged_at = self._unproven_unlogged, 0, now
        # The route matched ROUTE_NAME_RE; the query (and the proof in it) is never logged.
        logger.warning("FastAGI request from %r refused: no valid proof (route %r, uniqueid %r); "
                       "%d more refused since the last such line", peer, request.script,
                       (request.uniqueid or "")[:40], more)

    async def _run_handler(self, handler: Handler, request: AgiRequest,
                           channel: AgiChannel) -> None:
        deadline = asyncio.timeout(self._request_timeout_s)
        try:
            async with deadline:
                await handler(request, channel)
            self.stats.served += 1
        except AgiHangup:
            self.stats.hangups += 1
            logger.info("AGI route %r: channel hung up (uniqueid %r)",
                        request.script, request.uniqueid)
        except TimeoutError:
            if not deadline.expired():
                raise
            self.stats.handler_timeouts += 1
            logger.error("AGI route %r cancelled after %.1f s (uniqueid %r)",
                         request.script, self._request_timeout_s, request.uniqueid)
            await self._report(channel, "timeout")
        except AgiError as exc:
            self.stats.handler_failures += 1
            logger.warning("AGI route %r failed (uniqueid %r): %r",
                           request.script, request.uniqueid, exc)
            await self._report(channel, "handler_failed")
        except Exception:
            self.stats.handler_failures += 1
            logger.exception("AGI route %r raised (uniqueid %r)", request.script, request.uniqueid)
            await self._report(channel, "handler_failed")

    async def _report(self, channel: AgiChannel, error: str) -> None:
        """Best effort: leave ERROR_VARIABLE on the channel if the conversation is still in step."""
        if not channel.usable:
            return
        try:
            # Short: the caller is waiting, and this is only diagnosis.
            await channel.command(f"SET VARIABLE {ERROR_VARIABLE} {quote_arg(error)}",
                                  timeout=min(self._command_timeout_s, 0.5))
        except AgiError as exc:
            logger.debug("could not set %s=%s: %r", ERROR_VARIABLE, error, exc)
