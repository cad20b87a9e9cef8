"""FastAGI handlers: validate what Asterisk sent, ask the call desk, set the answer.

One handler per request of the dialplan (extensions.conf.j2). Arguments are
checked against strict patterns before use: they come from our own dialplan,
but a caller-controlled value (caller ID) rides along in the environment.
Each handler sets HOTLINE_OK=1 last: the dialplan trusts nothing else.
Calls are keyed by Asterisk's linkedid, which every request carries in its URL
(`agi://host:port/route?linkedid=...`): res_agi sends no agi_linkedid, and the
channel's own uniqueid differs from it on the surgeon's leg and on Local or
originated channels.

Every request also carries a proof that this instance's dialplan sent it
(`request_proof`, checked by `ProofCheck` in the server before any handler
runs): any local process can connect to the FastAGI port, only Asterisk and
the service can read the key.
"""
from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Awaitable, Callable

from cases.lifecycle import Case
from ivr import channel_vars as V
from ivr.calls import CallDesk, CallEnd, Disagreement, Instruction
from ivr.fastagi import AgiChannel, AgiError, AgiRequest, Routes

logger = logging.getLogger(__name__)

_ID = V.ASTERISK_ID  # uniqueid / linkedid, node-prefixed in a cluster
_NUM = re.compile(r"[0-9]{1,6}", re.ASCII)
_WORD = re.compile(r"[a-z_]{1,32}", re.ASCII)
_MENU_EVENT = re.compile(r"[a-z_]{1,32}|[0-9]", re.ASCII)
_KEY = re.compile(r"[0-9]|partner|retries", re.ASCII)
_DIALSTATUS = re.compile(r"[A-Z]{0,16}", re.ASCII)
_CHANNEL = re.compile(r"[A-Za-z0-9/_.@:;-]{0,128}", re.ASCII)
_ACCEPTED = re.compile(r"[012]?", re.ASCII)
_PHONE = re.compile(r"[0-9]{3,20}", re.ASCII)
_QUEUESTATUS = re.compile(r"[A-Z]{0,16}", re.ASCII)


class BadRequest(ValueError):
    """An AGI request whose arguments do not fit the dialplan's contract."""


class RequestRefused(AgiError):
    """The desk disagreed with a request (ivr.calls.Disagreement): nothing changed.

    An AgiError, so the server logs it as one line (no traceback), counts it as
    a handler failure and leaves no HOTLINE_OK: the dialplan goes on without.
    """


#: The query parameter of the AGI URL that carries the request's proof.
PROOF_PARAM = "proof"


def request_proof(key: str, linkedid: str, route: str) -> str:
    """The proof the dialplan sends with a request: SHA1 hex of "key:linkedid:route".

    The dialplan computes the same with ${SHA1()} (extensions.conf.j2,
    [hotline-agi]); Asterisk has no HMAC. A digest proves one request name for
    one call only, so one seen in a CDR's lastdata cannot forge any other;
    what a replay of the same one may do, the desk's state checks bound.
    """
    return hashlib.sha1(f"{key}:{linkedid}:{route}".encode("utf-8")).hexdigest()


class ProofCheck:
    """`FastAgiServer(authenticate=...)`: does a request carry this instance's proof?

    Compared in constant time. The key is held here only; it is never logged.
    """

    def __init__(self, key: str) -> None:
        if not key or not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", key, re.ASCII):
            # The dialplan keeps only these characters of the key file (FILTER).
            raise ValueError("the FastAGI key must be 16..128 of [A-Za-z0-9_-]")
        self._key = key

    def __call__(self, request: AgiRequest) -> bool:
        expected = request_proof(self._key, request.query.get("linkedid", ""), request.script)
        given = request.query.get(PROOF_PARAM, "")
        return hmac.compare_digest(expected.encode("ascii"), given.encode("utf-8", "replace"))

    def __repr__(self) -> str:
        return "ProofCheck(<key>)"


# A call lasts at most TIMEOUT(absolute)=7200 s (extensions.conf.j2): a linkedid
# whose time is further back, or ahead, is not believed.
_MAX_CALL = timedelta(seconds=7200 + 60)
_LINKEDID_EPOCH = re.compile(r"(?:.*-)?([0-9]{1,20})\.[0-9]{1,10}", re.ASCII)


def linkedid_started_at(linkedid: str, now: datetime) -> datetime:
    """When the call began, as Asterisk wrote it into the linkedid ("<node>-<epoch>.<n>").

    Asterisk makes a uniqueid from the time its channel was created, and the
    linkedid is the first channel's: to the second, with no round trip to AMI.
    `now` if the linkedid holds no plausible time.
    """
    match = _LINKEDID_EPOCH.fullmatch(linkedid)
    if match is not None:
        try:
            at = datetime.fromtimestamp(int(match.group(1)), timezone.utc)
        except (OverflowError, OSError, ValueError):
            return now
        if now - _MAX_CALL <= at <= now + timedelta(seconds=5):
            return at
    return now


def _arg(request: AgiRequest, index: int, pattern: re.Pattern[str], name: str) -> str:
    value = request.args[index] if index < len(request.args) else ""
    if not pattern.fullmatch(value):
        raise BadRequest(f"{name} {value[:40]!r} does not match")
    return value


def _opt_int(request: AgiRequest, index: int, name: str) -> int | None:
    value = request.args[index] if index < len(request.args) else ""
    if value == "":
        return None
    if not _NUM.fullmatch(value):
        raise BadRequest(f"{name} {value[:40]!r} is not a number")
    return int(value)


def _linkedid(request: AgiRequest) -> str:
    value = request.query.get("linkedid", "")
    if not _ID.fullmatch(value):
        raise BadRequest(f"linkedid {value[:40]!r} does not match")
    return value


async def _answer(channel: AgiChannel, instruction: Instruction) -> None:
    await channel.set_variable(V.ACTION, instruction.action)
    if instruction.action == "dial":
        await channel.set_variable(V.TARGET, instruction.target)
        await channel.set_variable(V.RING_S, str(instruction.ring_s))
        await channel.set_variable(V.ATTEMPT, str(instruction.attempt))
        await channel.set_variable(V.WHISPER, instruction.whisper)
        await channel.set_variable(V.PARTNER, instruction.partner)
    elif instruction.action == "queue":
        await channel.set_variable(V.TARGET, instruction.target)
        await channel.set_variable(V.QUEUE_PRIO, str(instruction.priority))
    await channel.set_variable(V.OK, "1")


Handler = Callable[[AgiRequest, AgiChannel], Awaitable[None]]


# How long a request may wait for the database when it names a call this
# instance has not seen (another instance started it): the dialplan's mirror
# is the better answer after that.
ADOPT_TIMEOUT_S = 1.0


def build_routes(desk: CallDesk, clock: Callable[[], datetime], recordings_dir: Path,
                 lookup: Callable[[str], Case | None] | None = None) -> Routes:
    """The explicit route table of the FastAGI server (a duplicate name is an error).

    `lookup(linkedid)` reads a stored case: a request about a call this
    instance never saw (in a cluster, another instance started it and is
    gone) adopts that case before it is answered. None: no adoption.
    """
    recordings_dir = recordings_dir.resolve()

    async def known(request: AgiRequest) -> str:
        """The request's linkedid, its call adopted if this worker does not hold it:
        from the stored case (another instance opened it), else, on the caller's
        own channel, from the request (no worker answered its call_start).

        A known call costs no round trip; an ended one is remembered as such.
        """
        linkedid = _linkedid(request)
        if linkedid in desk.calls or linkedid in desk.ended:
            return linkedid
        if lookup is not None:
            try:
                case = await asyncio.wait_for(asyncio.to_thread(lookup, linkedid), ADOPT_TIMEOUT_S)
            except Exception as exc:  # the database is away or slow: the mirror serves
                logger.warning("could not look up call %s to adopt it (%s)", linkedid, type(exc).__name__)
                return linkedid
            if case is not None:
                if case.ended_at is not None:
                    desk.note_ended(linkedid)
                else:
                    desk.adopt(case, request.channel or "", clock())
                return linkedid
        # Only the caller's own channel (uniqueid == linkedid) says who called;
        # a surgeon's leg or a queue member's Local channel does not.
        if request.uniqueid == linkedid and request.channel:
            now = clock()
            desk.adopt_unseen(linkedid, request.channel, _caller_id(request),
                              linkedid_started_at(linkedid, now), now)
        return linkedid

    async def call_start(request: AgiRequest, channel: AgiChannel) -> None:
        linkedid = _linkedid(request)
        live = desk.call_start(linkedid, request.channel or "", _caller_id(request), clock())
        await channel.set_variable(V.CASE_ID, live.case.case_id)
        partner = live.case.caller.hospital_id is not None
        route = "blocked" if live.blocked else "referral" if partner else "menu"
        await channel.set_variable(V.ROUTE, route)
        if live.incident:  # unset otherwise: the dialplan compares with "1"
            await channel.set_variable(V.INCIDENT, "1")
        await channel.set_variable(V.OK, "1")

    async def menu(request: AgiRequest, channel: AgiChannel) -> None:
        event = _arg(request, 0, _MENU_EVENT, "menu event")
        desk.menu_event(await known(request), event, clock())
        await channel.set_variable(V.OK, "1")

    async def route(request: AgiRequest, channel: AgiChannel) -> None:
        team = _arg(request, 0, _WORD, "team")
        key = _arg(request, 1, _KEY, "menu key")
        await _answer(channel, desk.route(await known(request), team, key, clock()))

    async def attempt_ended(request: AgiRequest, channel: AgiChannel) -> None:
        seq = _opt_int(request, 0, "attempt")
        if seq is None:
            raise BadRequest("attempt is missing")
        instruction = desk.attempt_ended(
            await known(request), seq,
            dial_status=_arg(request, 1, _DIALSTATUS, "dial status"),
            accepted=_arg(request, 2, _ACCEPTED, "accepted"),
            answered_s=_opt_int(request, 3, "answered time"),
            dialed_s=_opt_int(request, 4, "dialed time"),
            at=clock(),
        )
        await _answer(channel, instruction)

    async def accepted(request: AgiRequest, channel: AgiChannel) -> None:
        seq = _opt_int(request, 0, "attempt")
        if seq:  # 0 = the static fallback's ring, which the desk did not order
            desk.accepted(await known(request), seq, clock())
        await channel.set_variable(V.OK, "1")

    async def call_end(request: AgiRequest, channel: AgiChannel) -> None:
        voicemail = request.args[8] if len(request.args) > 8 else ""
        end = CallEnd(
            hangup_source=_arg(request, 0, _CHANNEL, "hangup source"),
            dial_status=_arg(request, 2, _DIALSTATUS, "dial status"),
            accepted=_arg(request, 3, _ACCEPTED, "accepted"),
            attempt=_opt_int(request, 4, "attempt"),
            answered_s=_opt_int(request, 5, "answered time"),
            dialed_s=_opt_int(request, 6, "dialed time"),
            system_hangup=(request.args[7] if len(request.args) > 7 else "") == "1",
            voicemail_path=_voicemail(voicemail, recordings_dir),
            fallback_used=(request.args[9] if len(request.args) > 9 else "") == "1",
        )
        desk.call_end(await known(request), request.channel or "", _caller_id(request), end, clock())
        # A dead channel may refuse commands; the case is recorded either way.
        if channel.usable:
            await channel.set_variable(V.OK, "1")

    async def queue_ring(request: AgiRequest, channel: AgiChannel) -> None:
        # From a major-incident queue member's Local channel, about to ring its phone.
        phone = _arg(request, 0, _PHONE, "phone")
        await _answer(channel, desk.queue_ring(await known(request), phone, clock()))

    async def queue_ring_ended(request: AgiRequest, channel: AgiChannel) -> None:
        seq = _opt_int(request, 0, "attempt")
        if seq is None:
            raise BadRequest("attempt is missing")
        desk.queue_ring_ended(
            await known(request), seq,
            dial_status=_arg(request, 1, _DIALSTATUS, "dial status"),
            accepted=_arg(request, 2, _ACCEPTED, "accepted"),
            answered_s=_opt_int(request, 3, "answered time"),
            dialed_s=_opt_int(request, 4, "dialed time"),
            at=clock())
        if channel.usable:  # a hangup handler's request: the channel may be gone
            await channel.set_variable(V.OK, "1")

    async def queue_left(request: AgiRequest, channel: AgiChannel) -> None:
        status = _arg(request, 0, _QUEUESTATUS, "queue status")
        await _answer(channel, desk.queue_left(await known(request), status, clock()))

    return Routes([(name, _agreeing(name, handler)) for name, handler in (
        ("call_start", call_start),
        ("menu", menu),
        ("route", route),
        ("attempt_ended", attempt_ended),
        ("accepted", accepted),
        ("call_end", call_end),
        ("queue_ring", queue_ring),
        ("queue_ring_ended", queue_ring_ended),
        ("queue_left", queue_left),
    )])


def _agreeing(name: str, handler: Handler) -> Handler:
    """`handler`, a request the desk disagrees with refused as RequestRefused."""

    @functools.wraps(handler)
    async def agreeing(request: AgiRequest, channel: AgiChannel) -> None:
        try:
            await handler(request, channel)
        except Disagreement as exc:
            # The reason is built from numbers only; the linkedid matched its pattern.
            raise RequestRefused(f"{name} for call {request.query.get('linkedid', '')}: {exc}") from None

    return agreeing


def _caller_id(request: AgiRequest) -> str | None:
    caller_id = request.env.get("agi_callerid")
    return None if caller_id in (None, "", "unknown") else caller_id


def _voicemail(value: str, recordings_dir: Path) -> str | None:
    """Accept a voicemail path only if it is a file name of ours inside the recordings dir."""
    if not value:
        return None
    path = Path(value)
    if (path.parent != recordings_dir
            or not re.fullmatch(r"[A-Za-z0-9.-]{1,80}-voicemail\.wav", path.name, re.ASCII)):
        raise BadRequest(f"voicemail path {value[:80]!r} is not one of ours")
    return str(path)
