"""AMI, the Asterisk Manager Interface: a pure codec and an asyncio client that never resends.

Facts from Asterisk's main/manager.c that shape this module:

- On connect Asterisk sends one line, ``Asterisk Call Manager/<version>``, without
  the blank line that ends every other message.
- Asterisk ends an input line at CRLF *or a bare LF*, and a header at NUL: a
  key or value holding CR, LF or NUL is a header (or whole-action) injection.
  A line over 1024 bytes (CRLF included) or more than 128 header lines fail the
  whole action.
- A refused Login answers ``Response: Error`` / ``Message: Authentication failed``
  after a one-second pause, then Asterisk closes the connection.
- Events carry no sequence numbers and are never replayed; a session that does
  not read within ``writetimeout`` (100 ms by default) is dropped. So the
  reader only parses and queues, and after a reconnect the service resyncs.
- List actions (CoreShowChannels, DBGetTree, ...) answer ``EventList: start``,
  then events carrying the action's ActionID, then one with
  ``EventList: Complete``; these come whatever the session's event mask.
- ``OriginateResponse`` (after an async Originate) is an *event* that carries a
  ``Response:`` header and the ActionID: a message's kind is its first header.
- ``Command`` answers ``Message: Command output follows`` and one ``Output:``
  header per line of CLI output.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

BANNER_PREFIX = "Asterisk Call Manager/"
#: manager.c reads requests into char inbuf[1025]: 1024 bytes per line, CRLF included.
MAX_LINE_BYTES = 1024
#: manager.c keeps AST_MAX_MANHEADERS (128) header lines of one request.
MAX_HEADERS = 128
_ACTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_()-]{0,63}")
_FORBIDDEN = ("\r", "\n", "\0")
#: Headers of our own that must never be logged.
_SECRET_KEYS = frozenset({"secret"})

FieldValue = str | int | Sequence[str]


class AmiError(Exception):
    """Base of every AMI failure."""


class AmiConnectError(AmiError):
    """No AMI session could be opened: refused, timed out, or the peer is not AMI."""


class AmiAuthError(AmiError):
    """Asterisk refused the Login (wrong user/secret, or the user may not log in from here)."""


class AmiDisconnected(AmiError):
    """Not connected, or the connection dropped while the action was pending.

    The action may or may not have run in Asterisk: it is never sent again
    automatically (an Originate must not ring a surgeon twice).
    """


class AmiTimeout(AmiError):
    """No response to an action in time. It may still run in Asterisk."""


class AmiProtocolError(AmiError):
    """The peer sent something that is not AMI."""


def _check_text(what: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"AMI {what} must be str, not {type(value).__name__}")
    if any(ch in value for ch in _FORBIDDEN):
        # Not echoed: the value may be caller data and end up in a log line.
        raise ValueError(f"AMI {what} contains CR, LF or NUL")
    return value


def encode_action(action: str, fields: Mapping[str, FieldValue], action_id: str) -> bytes:
    """Encode one action: CRLF header lines, ``Action`` and ``ActionID`` first, then a blank line.

    A sequence value repeats its header (``Variable`` for Originate); ints are
    written in decimal. ValueError for CR/LF/NUL anywhere, a malformed name, a
    line or a header count Asterisk would reject.

    >>> encode_action("Ping", {}, "h-1")
    b'Action: Ping\\r\\nActionID: h-1\\r\\n\\r\\n'
    >>> encode_action("Originate", {"Variable": ["A=1", "B=2"]}, "h-2")
    b'Action: Originate\\r\\nActionID: h-2\\r\\nVariable: A=1\\r\\nVariable: B=2\\r\\n\\r\\n'
    >>> encode_action("DBPut", {"Val": "x\\r\\nAction: Originate"}, "h-3")
    Traceback (most recent call last):
    ...
    ValueError: AMI value of Val contains CR, LF or NUL
    """
    if not isinstance(action, str) or not _ACTION_RE.fullmatch(action):
        raise ValueError(f"invalid AMI action name {action!r}")
    headers = [("Action", action), ("ActionID", _check_text("ActionID", action_id))]
    for key, value in fields.items():
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key):
            raise ValueError(f"invalid AMI header name {key!r}")
        if key.lower() in ("action", "actionid"):
            raise ValueError(f"AMI header {key!r} is set by encode_action itself")
        if isinstance(value, (bool, bytes, bytearray)):
            raise TypeError(f"AMI value of {key} must be str, not {type(value).__name__}")
        values = [value] if isinstance(value, (str, int)) else list(value)
        for item in values:
            text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            headers.append((key, _check_text(f"value of {key}", text)))
    if len(headers) > MAX_HEADERS:
        raise ValueError(f"AMI action with more than {MAX_HEADERS} header lines")
    lines = []
    for key, value in headers:
        line = f"{key}: {value}\r\n".encode()
        if len(line) > MAX_LINE_BYTES:
            raise ValueError(f"AMI header {key} longer than {MAX_LINE_BYTES} bytes")
        lines.append(line)
    lines.append(b"\r\n")
    return b"".join(lines)


class Message(Mapping[str, str]):
    """One AMI message: ordered headers, keys looked up case-insensitively.

    ``msg[key]`` is the first value; ``get_all(key)`` every value of a repeated
    key (``ChanVariable``, ``Output``). ``kind`` is ``"event"``,
    ``"response"`` or ``"unknown"``, taken from the first header.
    """

    __slots__ = ("headers", "kind", "_first")

    def __init__(self, headers: Sequence[tuple[str, str]]) -> None:
        self.headers: tuple[tuple[str, str], ...] = tuple(headers)
        first_key = self.headers[0][0].lower() if self.headers else ""
        self.kind = first_key if first_key in ("event", "response") else "unknown"
        self._first: dict[str, tuple[str, str]] = {}
        for key, value in self.headers:
            self._first.setdefault(key.lower(), (key, value))

    def __getitem__(self, key: str) -> str:
        return self._first[key.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (key for key, _ in self._first.values())

    def __len__(self) -> int:
        return len(self._first)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.lower() in self._first

    def get_all(self, key: str) -> list[str]:
        wanted = key.lower()
        return [value for k, value in self.headers if k.lower() == wanted]

    @property
    def name(self) -> str | None:
        """The event name, or the response status (Success, Error, ...)."""
        return self.get("Event") if self.kind == "event" else self.get("Response")

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    @property
    def success(self) -> bool:
        return self.kind == "response" and self.get("Response", "").lower() == "success"

    @property
    def output(self) -> list[str]:
        """The CLI output lines of a ``Command`` response."""
        return self.get_all("Output")

    def variables(self, key: str = "ChanVariable") -> dict[str, str]:
        """``NAME=value`` headers (``ChanVariable``, ``DestChanVariable``...) as a dict."""
        result = {}
        for item in self.get_all(key):
            name, _, value = item.partition("=")
            result[name] = value
        return result

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{k}: {'<redacted>' if k.lower() in _SECRET_KEYS else v!r}" for k, v in self.headers)
        return f"Message({self.kind}; {shown})"


class AmiParser:
    """Incremental AMI reader: feed it bytes as they arrive, get whole messages back.

    Handles the banner line (kept in ``banner``), CRLF or LF line ends, chunks
    split anywhere (even inside a UTF-8 character), repeated keys and lines
    without a colon (kept under the empty key, as old ``Response: Follows``
    command output had).
    """

    def __init__(self, *, max_line_bytes: int = 65536, max_headers: int = 10000) -> None:
        self.banner: str | None = None
        self._buffer = bytearray()
        self._headers: list[tuple[str, str]] = []
        self._started = False
        self._max_line_bytes = max_line_bytes
        self._max_headers = max_headers

    def feed(self, data: bytes) -> list[Message]:
        self._buffer += data
        messages: list[Message] = []
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > self._max_line_bytes:
                    raise AmiProtocolError(f"AMI line longer than {self._max_line_bytes} bytes")
                return messages
            if end > self._max_line_bytes:
                raise AmiProtocolError(f"AMI line longer than {self._max_line_bytes} bytes")
            raw = bytes(self._buffer[:end])
            del self._buffer[:end + 1]
            line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
            if not self._started:
                if not line:
                    continue
                self._started = True
                if line.startswith(BANNER_PREFIX):
                    self.banner = line
                    continue
            if not line:
                if self._headers:
                    messages.append(Message(self._headers))
                    self._headers = []
                continue
            if len(self._headers) >= self._max_headers:
                raise AmiProtocolError(f"AMI message with more than {self._max_headers} lines")
            key, sep, value = line.partition(":")
            if not sep:
                key, value = "", line
            elif value.startswith(" "):
                value = value[1:]
            self._headers.append((key, value))


Listener = Callable[[Message], object]
ReconnectCallback = Callable[[], object]


@dataclass
class _Pending:
    action: str
    future: asyncio.Future
    collect: bool
    response: Message | None = None
    events: list[Message] = field(default_factory=list)


@dataclass
class _Session:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    parser: AmiParser
    pending: dict[str, _Pending] = field(default_factory=dict)
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    reader_task: asyncio.Task | None = None
    keepalive_task: asyncio.Task | None = None
    closed: bool = False


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        async with asyncio.timeout(1.0):
            await writer.wait_closed()


async def _finish(task: asyncio.Task | None) -> None:
    """Cancel a task and wait for it, without letting its cancellation look like ours."""
    if task is None or task is asyncio.current_task():
        return
    task.cancel()
    (outcome,) = await asyncio.gather(task, return_exceptions=True)
    if isinstance(outcome, Exception):
        logger.error("AMI task %s had failed: %r", task.get_name(), outcome)


class AmiClient:
    """An AMI session that reconnects by itself and never resends an action.

    ``send``/``send_list`` correlate responses by ActionID. The reader task only
    parses and puts events on a bounded queue (dropped and counted when full);
    a dispatcher task calls the listeners. When the link drops, pending actions
    fail with AmiDisconnected, the client reconnects with backoff and then calls
    the ``on_reconnect`` callbacks (resync with CoreShowChannels there).
    """

    def __init__(self, host: str, port: int, username: str, secret: str, events: bool = True,
                 reconnect_backoff: Sequence[float] = (0.5, 1, 2, 5, 10), *,
                 action_timeout_s: float = 5.0, connect_timeout_s: float = 5.0,
                 ping_interval_s: float | None = 20.0, event_queue_size: int = 10000) -> None:
        if not reconnect_backoff:
            raise ValueError("reconnect_backoff needs at least one delay")
        self._host = host
        self._port = port
        self._username = _check_text("username", username)
        self._secret = _check_text("secret", secret)
        self._events = events
        self._backoff = tuple(reconnect_backoff)
        self._action_timeout_s = action_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._ping_interval_s = ping_interval_s
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=event_queue_size)
        self._listeners: list[Listener] = []
        self._reconnect_callbacks: list[ReconnectCallback] = []
        self._session: _Session | None = None
        self._supervisor: asyncio.Task | None = None
        self._dispatcher: asyncio.Task | None = None
        self._callbacks_task: asyncio.Task | None = None
        self._closed = False
        # A fresh prefix per client: a late reply to an earlier client's action never matches.
        self._id_prefix = "hotline-" + secrets.token_hex(4)
        self._ids = itertools.count(1)
        self.banner: str | None = None
        self.events_dropped = 0
        self.reconnects = 0

    def __repr__(self) -> str:
        return f"AmiClient({self._host}:{self._port}, username={self._username!r})"

    @property
    def connected(self) -> bool:
        return self._session is not None and not self._session.closed

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(message)`` for every event (from the dispatcher task; may be async)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def on_reconnect(self, callback: ReconnectCallback) -> None:
        """Call ``callback()`` (may be async) after every successful *re*connect."""
        self._reconnect_callbacks.append(callback)

    async def connect(self) -> None:
        """Open and log in the first session; later drops are handled by reconnecting.

        Raises AmiConnectError or AmiAuthError if this first attempt fails.
        """
        if self._closed:
            raise AmiError("AMI client is closed")
        if self._supervisor is not None:
            raise RuntimeError("AMI client already connected")
        self._dispatcher = asyncio.create_task(self._dispatch_events(), name="ami-dispatch")
        try:
            await self._open_session()
        except BaseException:
            await _finish(self._dispatcher)
            self._dispatcher = None
            raise
        self._supervisor = asyncio.create_task(self._supervise(), name="ami-supervisor")

    async def close(self) -> None:
        """Stop reconnecting, drop the connection (pending actions fail) and stop the tasks."""
        self._closed = True
        await _finish(self._supervisor)
        await _finish(self._callbacks_task)
        if self._session is not None:
            await self._drop_session(self._session)
        await _finish(self._dispatcher)
        self._supervisor = self._callbacks_task = self._dispatcher = None

    async def __aenter__(self) -> AmiClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def send(self, action: str, /, *, response_timeout_s: float | None = None,
                   **fields: FieldValue) -> Message:
        """Send one action and return its response (``Response: Error`` included, not raised).

        Keyword arguments are the action's headers (``Timeout=30000`` is
        Originate's ring time; ``response_timeout_s`` is how long we wait).
        """
        response, _ = await self._send(action, fields, collect=False,
                                       timeout=response_timeout_s)
        return response

    async def send_list(self, action: str, /, *, response_timeout_s: float | None = None,
                        **fields: FieldValue) -> tuple[Message, list[Message]]:
        """Send a list action and return its response and the events up to ``EventList: Complete``.

        An error response (no list follows) comes back with no events.
        """
        return await self._send(action, fields, collect=True, timeout=response_timeout_s)

    def _next_action_id(self) -> str:
        return f"{self._id_prefix}-{next(self._ids)}"

    async def _send(self, action: str, fields: Mapping[str, FieldValue], *, collect: bool,
                    timeout: float | None) -> tuple[Message, list[Message]]:
        session = self._session
        if session is None or session.closed:
            raise AmiDisconnected(f"AMI not connected; {action} not sent")
        return await self._send_on(session, action, fields, collect=collect,
                                   timeout=self._action_timeout_s if timeout is None else timeout)

    async def _send_on(self, session: _Session, action: str, fields: Mapping[str, FieldValue], *,
                       collect: bool, timeout: float) -> tuple[Message, list[Message]]:
        action_id = self._next_action_id()
        data = encode_action(action, fields, action_id)  # ValueError before anything is sent
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        # Registered before writing: the response can arrive before drain() returns.
        session.pending[action_id] = _Pending(action, future, collect)
        try:
            async with asyncio.timeout(timeout):
                async with session.write_lock:
                    if session.closed:
                        raise AmiDisconnected(f"AMI connection lost; {action} not sent")
                    session.writer.write(data)
                    await session.writer.drain()
                return await future
        except TimeoutError:
            raise AmiTimeout(f"no AMI response to {action} within {timeout:.1f} s") from None
        except ConnectionError:
            raise AmiDisconnected(f"AMI connection lost while sending {action}") from None
        finally:
            session.pending.pop(action_id, None)
            if not future.done():
                future.cancel()
            elif not future.cancelled():
                future.exception()  # retrieved: no "exception never retrieved" noise

    async def _open_session(self) -> None:
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(self._host, self._port)
        except OSError as exc:  # TimeoutError included
            raise AmiConnectError(f"cannot connect to AMI at {self._host}:{self._port}: {exc!r}") \
                from None
        session: _Session | None = None
        try:
            try:
                async with asyncio.timeout(self._connect_timeout_s):
                    line = await reader.readuntil(b"\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                raise AmiConnectError(f"no AMI greeting from {self._host}:{self._port}: {exc!r}") \
                    from None
            banner = line.rstrip(b"\r\n").decode("utf-8", errors="replace")
            if not banner.startswith(BANNER_PREFIX):
                raise AmiConnectError(f"{self._host}:{self._port} is not AMI: {banner[:60]!r}")
            parser = AmiParser()
            parser.feed(line)
            session = _Session(reader, writer, parser)
            session.reader_task = asyncio.create_task(self._read_loop(session), name="ami-reader")
            # Asterisk pauses a second before refusing a Login: allow for it.
            login_timeout = max(self._action_timeout_s, 3.0)
            try:
                response, _ = await self._send_on(
                    session, "Login",
                    {"Username": self._username, "Secret": self._secret,
                     "Events": "on" if self._events else "off"},
                    collect=False, timeout=login_timeout)
            except AmiDisconnected:
                raise AmiConnectError("AMI closed the connection during Login") from None
            except AmiTimeout:
                raise AmiConnectError("no answer to the AMI Login") from None
            if not response.success:
                raise AmiAuthError(
                    f"AMI login as {self._username!r} refused: {response.get('Message')!r}")
        except BaseException:
            if session is not None:
                await self._drop_session(session)
            else:
                await _close_writer(writer)
            raise
        self.banner = banner
        self._session = session
        if self._ping_interval_s:
            session.keepalive_task = asyncio.create_task(self._keepalive(session),
                                                         name="ami-keepalive")
        logger.info("AMI logged in to %s:%d as %r (%s)", self._host, self._port, self._username,
                    banner)

    async def _drop_session(self, session: _Session) -> None:
        session.closed = True
        await _finish(session.keepalive_task)
        await _finish(session.reader_task)
        self._fail_pending(session)
        await _close_writer(session.writer)
        if self._session is session:
            self._session = None

    def _fail_pending(self, session: _Session) -> None:
        for pending in list(session.pending.values()):
            if not pending.future.done():
                pending.future.set_exception(AmiDisconnected(
                    f"AMI connection lost with {pending.action} pending; it may or may not have "
                    "run and is not resent"))
        session.pending.clear()

    async def _read_loop(self, session: _Session) -> None:
        try:
            while True:
                data = await session.reader.read(65536)
                if not data:
                    logger.warning("AMI connection to %s:%d closed by Asterisk",
                                   self._host, self._port)
                    break
                for message in session.parser.feed(data):
                    self._route(session, message)
        except (ConnectionError, OSError) as exc:
            logger.warning("AMI connection to %s:%d lost: %r", self._host, self._port, exc)
        except AmiProtocolError as exc:
            logger.error("AMI connection to %s:%d: %s", self._host, self._port, exc)
        except Exception:
            logger.exception("AMI reader for %s:%d failed", self._host, self._port)
        finally:
            # Pending actions fail now, not at the next reconnect.
            session.closed = True
            self._fail_pending(session)
            session.writer.close()

    def _route(self, session: _Session, message: Message) -> None:
        action_id = message.action_id
        pending = session.pending.get(action_id) if action_id else None
        if message.kind == "response":
            if pending is None:
                logger.debug("AMI response for no pending action (ActionID %r) ignored", action_id)
                return
            if (pending.collect and message.success
                    and message.get("EventList", "").lower() == "start"):
                pending.response = message
                return
            session.pending.pop(action_id, None)
            if not pending.future.done():
                pending.future.set_result((message, []))
            return
        if pending is not None and pending.collect and pending.response is not None:
            if message.get("EventList", "").lower() == "complete":
                session.pending.pop(action_id, None)
                if not pending.future.done():
                    pending.future.set_result((pending.response, pending.events))
            else:
                pending.events.append(message)
            return
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.events_dropped += 1
            if self.events_dropped == 1 or self.events_dropped % 1000 == 0:
                logger.warning("AMI event queue full: %d events dropped so far",
                               self.events_dropped)

    async def _dispatch_events(self) -> None:
        while True:
            message = await self._queue.get()
            for listener in list(self._listeners):
                try:
                    result = listener(message)
                    if inspect.isawaitable(result):
                        await result
                except Exception:
                    logger.exception("AMI event listener %r failed on event %r",
                                     listener, message.name)

    async def _keepalive(self, session: _Session) -> None:
        # A hung Asterisk keeps the TCP connection up; only an unanswered Ping shows it.
        assert self._ping_interval_s
        while not session.closed:
            await asyncio.sleep(self._ping_interval_s)
            try:
                await self._send_on(session, "Ping", {}, collect=False,
                                    timeout=self._action_timeout_s)
            except AmiTimeout:
                logger.warning("AMI at %s:%d did not answer Ping; dropping the connection",
                               self._host, self._port)
                session.writer.transport.abort()
                return
            except AmiDisconnected:
                return

    async def _supervise(self) -> None:
        while not self._closed:
            session = self._session
            if session is not None and session.reader_task is not None:
                await asyncio.wait({session.reader_task})
                await self._drop_session(session)
            if self._closed:
                return
            await self._reconnect()
            if self._closed:
                return
            self.reconnects += 1
            if self._reconnect_callbacks:
                # In its own task: a slow resync must not stop us noticing the next drop.
                self._callbacks_task = asyncio.create_task(self._run_reconnect_callbacks(),
                                                           name="ami-on-reconnect")

    async def _reconnect(self) -> None:
        for attempt in itertools.count():
            delay = self._backoff[min(attempt, len(self._backoff) - 1)]
            await asyncio.sleep(delay)
            if self._closed:
                return
            try:
                await self._open_session()
            except AmiAuthError as exc:
                logger.error("AMI reconnect attempt %d: %s", attempt + 1, exc)
            except AmiError as exc:
                logger.warning("AMI reconnect attempt %d failed: %s", attempt + 1, exc)
            except Exception:
                # Whatever it was, giving up would leave the service blind: keep trying.
                logger.exception("AMI reconnect attempt %d failed", attempt + 1)
            else:
                logger.info("AMI reconnected after %d attempt(s)", attempt + 1)
                return

    async def _run_reconnect_callbacks(self) -> None:
        for callback in list(self._reconnect_callbacks):
            try:
                result = callback()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("AMI on_reconnect callback %r failed", callback)


__all__ = [
    "AmiAuthError", "AmiClient", "AmiConnectError", "AmiDisconnected", "AmiError", "AmiParser",
    "AmiProtocolError", "AmiTimeout", "Message", "encode_action", "BANNER_PREFIX",
    "MAX_HEADERS", "MAX_LINE_BYTES",
]
