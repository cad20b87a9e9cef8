"""Calls in progress, as Asterisk shows them: the AMI side of the console's live board.

`calls_from_channels(events)` is pure: the `CoreShowChannel` events of one
poll become one `LiveCall` per call (channels grouped by Linkedid). What the
board shows was read off a real Asterisk 22 call through the hotline's
dialplan (tests/integration/test_console_live_calls.py):

- the caller's channel is the one whose Uniqueid is the Linkedid; its
  Application says where the call is (Read / Playback: the menu or a hold
  prompt; Dial: ringing a surgeon; Record: a voicemail);
- the surgeon's leg (`PJSIP/surgeons-...`) shows CallerIDNum `s` and the
  *caller* as its connected line, so whom we ring is read from the caller's
  Dial() data instead (`PJSIP/<digits>@surgeons,...`, digits only: the
  dialplan FILTERs them);
- the leg is `Ringing`, then `Up` in Read (the whisper: press 1), then `Up`
  with the caller's BridgeId once both talk.

CoreShowChannels lists no channel variables; the team and the case come from
the `cases` row with the same linkedid (`cases_by_linkedid`).

Caller ID is hostile text. Values are cut and escaped (`safe_text`) here, and
escaped again by the page (Jinja, `textContent`). A caller ID holding CR/LF
would show up as extra header lines inside the event: Asterisk writes the
caller-controlled headers (CallerIDNum ... ConnectedLineName) before
Uniqueid, Linkedid, Application, Duration and BridgeId, so those are taken
from their *last* occurrence, and any repeated key marks the call `forged`.

`AmiLiveSource` polls `CoreShowChannels` every `interval_s` from its own
thread (an asyncio loop with one `AmiClient`, logged in as the console's own
AMI account, events off) and keeps the newest snapshot; a web request only
reads it. `StaticLiveSource` serves a fixed snapshot (tests, or no AMI
configured).
"""
from __future__ import annotations

import asyncio
import enum
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Protocol

from sqlalchemy import Engine, select

from db.models import CaseRow
from ivr.ami import AmiAuthError, AmiClient, AmiError, Message
from routing.callers import safe_text

logger = logging.getLogger(__name__)

UTC = timezone.utc
#: The console's AMI account (dialplans/templates/manager.conf.j2: `[console]`).
CONSOLE_AMI_USER = "console"
POLL_INTERVAL_S = 2.0
MAX_CALLS = 500  # a board, not a report: more than this many calls at once is shown cut
_CALLER_MAX = 64  # characters of a shown caller number or name, escapes included
# Keys Asterisk writes after the caller-controlled ones: the last occurrence is genuine.
_LATE_KEYS = ("Context", "Exten", "Priority", "Uniqueid", "Linkedid", "Application",
              "ApplicationData", "Duration", "BridgeId")
_DIAL_TARGET = re.compile(r"PJSIP/(\d{1,32})@[A-Za-z0-9_-]+(?:,|$)")
_DURATION = re.compile(r"(\d{1,6}):([0-5]\d):([0-5]\d)")
_UNKNOWN = "<unknown>"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class CallState(str, enum.Enum):
    """Where a call in progress stands, as the board words it."""

    IVR = "ivr"  # the menu, a prompt, or waiting between attempts
    RINGING = "ringing"  # Dial(): a surgeon's phone rings
    ANSWERING = "answering"  # the surgeon picked up and hears the whisper (press 1)
    BRIDGED = "bridged"  # caller and surgeon talk
    VOICEMAIL = "voicemail"  # the caller leaves a message


@dataclass(frozen=True)
class LiveCall:
    """One call in progress. Text fields are already escaped and cut (`safe_text`)."""

    linkedid: str
    caller: str  # CallerIDNum of the caller's channel, as Asterisk shows it ("" if unknown)
    caller_name: str
    state: CallState
    duration_s: int | None  # of the caller's channel
    target: str | None  # the digits being rung / bridged (from the caller's Dial)
    channels: int  # channels of this call now
    forged: bool = False  # an event carried repeated header lines (CR/LF in a caller ID)


class Status(str, enum.Enum):
    OK = "ok"
    STARTING = "starting"  # no poll has answered yet
    UNREACHABLE = "unreachable"  # no connection, no answer, or the answers are stale
    REFUSED = "refused"  # Asterisk refused the login or the action (secret, permissions)
    NOT_CONFIGURED = "not_configured"  # the app has no instance config: no AMI to ask


@dataclass(frozen=True)
class LiveSnapshot:
    status: Status
    calls: tuple[LiveCall, ...] = ()
    polled_at: datetime | None = None  # when the last successful poll answered

    @property
    def ok(self) -> bool:
        return self.status is Status.OK


class LiveSource(Protocol):
    """What the live page reads; `start`/`stop` are called once each by the app."""

    def snapshot(self) -> LiveSnapshot: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class StaticLiveSource:
    """A fixed (settable) snapshot: tests, and an app without an instance config."""

    def __init__(self, snapshot: LiveSnapshot | None = None) -> None:
        self.current = snapshot or LiveSnapshot(Status.NOT_CONFIGURED)
        self.started = 0
        self.stopped = 0

    def snapshot(self) -> LiveSnapshot:
        return self.current

    def start(self) -> None:
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


# --------------------------------------------------------------------------- pure parsing


@dataclass
class _Channel:
    name: str
    state: str
    caller: str
    caller_name: str
    uniqueid: str
    linkedid: str
    application: str
    data: str
    duration_s: int | None
    bridge: str
    forged: bool


def _value(event: Message, key: str) -> str:
    values = event.get_all(key)
    if not values:
        return ""
    return values[-1] if key in _LATE_KEYS else values[0]


def _shown(value: str) -> str:
    return "" if value == _UNKNOWN else safe_text(value, _CALLER_MAX)


def parse_duration(text: str) -> int | None:
    """`HH:MM:SS` as CoreShowChannel writes it, in seconds.

    >>> parse_duration("01:02:03"), parse_duration("00:00:00"), parse_duration("x")
    (3723, 0, None)
    """
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        return None
    hours, minutes, seconds = (int(g) for g in found.groups())
    return hours * 3600 + minutes * 60 + seconds


def dial_target(data: str) -> str | None:
    """The digits a Dial() rings, from its application data; None if not our pattern.

    >>> dial_target("PJSIP/13700000101@surgeons,6,mU(hotline-whisper^PJSIP/caller-1^x)")
    '13700000101'
    >>> dial_target("PJSIP/caller-00000001") is None
    True
    """
    found = _DIAL_TARGET.match(data)
    return found.group(1) if found else None


def _channel(event: Message) -> _Channel | None:
    lowered = [k.lower() for k, _ in event.headers]
    name = _value(event, "Channel")
    uniqueid, linkedid = _value(event, "Uniqueid"), _value(event, "Linkedid")
    if not (name or uniqueid):
        return None
    # Repeated keys or a line without a colon: CR/LF in a value. No ids at all:
    # a forged blank line cut the event short (its rest went elsewhere).
    forged = (len(set(lowered)) != len(lowered) or "" in lowered
              or not uniqueid or not linkedid)
    return _Channel(
        name=name, state=_value(event, "ChannelStateDesc"),
        caller=_shown(_value(event, "CallerIDNum")),
        caller_name=_shown(_value(event, "CallerIDName")),
        uniqueid=uniqueid, linkedid=linkedid or uniqueid or name,
        application=_value(event, "Application"), data=_value(event, "ApplicationData"),
        duration_s=parse_duration(_value(event, "Duration")),
        bridge=_value(event, "BridgeId").strip(), forged=forged)


def _state(root: _Channel, legs: Sequence[_Channel]) -> CallState:
    if root.bridge and (any(leg.bridge == root.bridge for leg in legs) or not legs):
        return CallState.BRIDGED
    if any(leg.state.lower() == "up" for leg in legs):
        return CallState.ANSWERING
    if legs or root.application.lower() == "dial":
        return CallState.RINGING
    if root.application.lower() == "record":
        return CallState.VOICEMAIL
    return CallState.IVR


def calls_from_channels(events: Iterable[Message]) -> list[LiveCall]:
    """The calls in progress, longest first, from one CoreShowChannels answer's events."""
    groups: dict[str, list[_Channel]] = {}
    for event in events:
        if event.get("Event", "").lower() != "coreshowchannel":
            continue
        channel = _channel(event)
        if channel is not None:
            groups.setdefault(channel.linkedid, []).append(channel)
    calls = []
    for linkedid, channels in groups.items():
        roots = [c for c in channels if c.uniqueid == linkedid]
        # No channel owns the linkedid (it hung up first, or an event was cut
        # by a forged blank line): the longest-lived one stands for the call.
        root = roots[0] if roots else max(channels, key=lambda c: c.duration_s or 0)
        legs = [c for c in channels if c is not root]
        target = dial_target(root.data) if root.application.lower() == "dial" else None
        calls.append(LiveCall(
            linkedid=safe_text(linkedid, 64), caller=root.caller, caller_name=root.caller_name,
            state=_state(root, legs), duration_s=root.duration_s, target=target,
            channels=len(channels), forged=any(c.forged for c in channels)))
    calls.sort(key=lambda c: (-(c.duration_s or 0), c.linkedid))
    return calls[:MAX_CALLS]


# --------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class CaseInfo:
    case_id: str
    team: str | None
    partner_hospital_id: int | None
    caller_class: str


def cases_by_linkedid(engine: Engine, linkedids: Sequence[str]) -> dict[str, CaseInfo]:
    """The case rows of these calls (a call's case appears at its first AGI request)."""
    wanted = sorted({lid for lid in linkedids if lid})[:MAX_CALLS]
    if not wanted:
        return {}
    query = select(CaseRow.linkedid, CaseRow.case_id, CaseRow.team, CaseRow.partner_hospital_id,
                   CaseRow.caller_class).where(CaseRow.linkedid.in_(wanted))
    with engine.connect() as conn:
        return {row.linkedid: CaseInfo(row.case_id, row.team, row.partner_hospital_id,
                                       row.caller_class) for row in conn.execute(query)}


# --------------------------------------------------------------------------- the poller


ClientFactory = Callable[..., AmiClient]


class AmiLiveSource:
    """Polls CoreShowChannels every `interval_s` on a thread of its own; `snapshot()` reads.

    The first login is retried every `interval_s` (a refused one every
    `refused_retry_s`); after that the `AmiClient` reconnects by itself and a
    failed poll just marks the board unreachable until the next one answers.
    A snapshot older than `stale_after_s` (the thread stuck or dead) reads as
    unreachable, never as "no calls".
    """

    def __init__(self, host: str, port: int, username: str, secret: str, *,
                 interval_s: float = POLL_INTERVAL_S, action_timeout_s: float = 3.0,
                 refused_retry_s: float = 15.0, stale_after_s: float | None = None,
                 clock: Callable[[], datetime] = _utcnow,
                 client_factory: ClientFactory = AmiClient) -> None:
        self._host, self._port = host, port
        self._username, self._secret = username, secret
        self.interval_s = interval_s
        self._action_timeout_s = action_timeout_s
        self._refused_retry_s = refused_retry_s
        self._stale_after_s = stale_after_s if stale_after_s is not None else max(3 * interval_s, 6.0)
        self._clock = clock
        self._client_factory = client_factory
        self._lock = threading.Lock()
        self._current = LiveSnapshot(Status.STARTING)
        self._current_at = time.monotonic()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping = False
        self.polls = 0

    def __repr__(self) -> str:
        return f"AmiLiveSource({self._host}:{self._port}, username={self._username!r})"

    # -- what the web side calls ---------------------------------------------

    def snapshot(self) -> LiveSnapshot:
        with self._lock:
            current, at = self._current, self._current_at
        if current.ok and time.monotonic() - at > self._stale_after_s:
            return LiveSnapshot(Status.UNREACHABLE, (), current.polled_at)
        return current

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="console-live-ami", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        thread = self._thread
        self._stopping = True
        if thread is None:
            return
        if self._ready.wait(timeout_s) and self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop has already finished
                pass
        thread.join(timeout_s)
        if thread.is_alive():
            logger.warning("live calls poller did not stop within %.0f s", timeout_s)

    # -- the thread -------------------------------------------------------------

    def _set(self, snapshot: LiveSnapshot) -> None:
        with self._lock:
            previous = self._current.status
            self._current, self._current_at = snapshot, time.monotonic()
        if snapshot.status is not previous:
            log = logger.info if snapshot.ok else logger.warning
            log("live calls from AMI %s:%d: %s", self._host, self._port, snapshot.status.value)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # never an unhandled thread exception: the board says so instead
            logger.exception("live calls poller failed")
            self._set(LiveSnapshot(Status.UNREACHABLE))

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._ready.set()
        client = self._client_factory(
            self._host, self._port, self._username, self._secret, events=False,
            reconnect_backoff=(0.5, 1, 2, 5), action_timeout_s=self._action_timeout_s,
            connect_timeout_s=self._action_timeout_s)
        connected = False
        try:
            while not self._stopping:
                delay = self.interval_s
                if not connected:
                    try:
                        await client.connect()
                        connected = True
                    except AmiAuthError:
                        self._set(LiveSnapshot(Status.REFUSED))
                        delay = self._refused_retry_s
                    except (AmiError, OSError):
                        self._set(LiveSnapshot(Status.UNREACHABLE))
                if connected:
                    await self._poll(client)
                await self._sleep(delay)
        finally:
            await client.close()

    async def _poll(self, client: AmiClient) -> None:
        try:
            response, events = await client.send_list("CoreShowChannels")
        except (AmiError, OSError):
            self._set(LiveSnapshot(Status.UNREACHABLE))
            return
        if not response.success:
            # Not allowed (the account lacks "reporting"), or another refusal.
            self._set(LiveSnapshot(Status.REFUSED))
            return
        self.polls += 1
        self._set(LiveSnapshot(Status.OK, tuple(calls_from_channels(events)), self._clock()))

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass


def ami_source(config) -> LiveSource:
    """The live source of an instance (`HotlineConfig`): its AMI, the console's account."""
    if config is None:
        return StaticLiveSource(LiveSnapshot(Status.NOT_CONFIGURED))
    return AmiLiveSource("127.0.0.1", config.ports.ami, CONSOLE_AMI_USER,
                         config.console_ami_secret())


__all__ = ["AmiLiveSource", "CallState", "CaseInfo", "LiveCall", "LiveSnapshot", "LiveSource",
           "StaticLiveSource", "Status", "calls_from_channels", "cases_by_linkedid",
           "ami_source", "CONSOLE_AMI_USER", "dial_target", "parse_duration"]
