"""Placing callbacks through Asterisk: the service's side of a callback task.

The console (a separate process) only marks a task `placing` in the database;
it never holds the AMI account that may originate. `CallbackPlacer` runs in the
service: every `poll_s` it takes the waiting requests (`CallbackStore.take`,
placing → placed, exactly once even with two services) and sends ONE AMI
Originate per request:

    Originate  Channel=PJSIP/<surgeon phone>@surgeons  Context=hotline-callback
               Variable=HOTLINE_CALLBACK=<task id>  Async=true

The surgeon answers, hears what this is and presses 1; the dialplan asks the
service over FastAGI (`callback_start`) for the number -- validated here,
FILTERed again there -- records (MixMonitor) and dials the caller over the
surgeons' trunk. The callback is a case of its own, keyed by its linkedid,
whose `linked_case_id` names the case called back.

Never resent (field-notes: an Originate resent after an AMI reconnect rings a
surgeon twice): when AMI drops with the Originate unanswered, or the service
restarts mid-placement, the task goes back to open with "outcome unknown"
and a person decides. Database writes run on worker threads; the AGI handlers
answer from memory and never wait on the database.
"""
from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Mapping, Protocol

from cases import lifecycle
from cases.lifecycle import Case
from db.callbacks import Placement
from ivr import channel_vars as V
from ivr.ami import AmiDisconnected, AmiError, AmiTimeout, Message
from ivr.calls import CaseSink, new_case_id
from ivr.fastagi import AgiChannel, AgiRequest
from ivr.handlers import BadRequest
from network import callbacks as cb
from network.callbacks import CallbackTask, PlacementOutcome
from routing.callers import classify
from routing.escalation import CHAIN, AttemptOutcome, ChainStep

logger = logging.getLogger(__name__)

CONTEXT = "hotline-callback"
SURGEON_RING_S = 30  # the surgeon's phone, before the Originate gives up
CALLER_RING_S = 40  # the caller's phone, once the surgeon pressed 1
#: Without any word from the dialplan this long after the Originate, the
#: placement's outcome is unknown (AMI dropped, the dialplan could not ask).
NO_WORD_S = SURGEON_RING_S + 30.0
#: A callback call lasting longer than this is taken as lost (its end never came).
LONGEST_CALL_S = 4 * 3600.0
ROLE = "callback"

_TASK_ID = re.compile(r"[0-9]{1,10}", re.ASCII)
_LINKEDID = V.ASTERISK_ID  # node-prefixed in a cluster
_STAGE = re.compile(r"[a-z-]{0,16}", re.ASCII)
_DIALSTATUS = re.compile(r"[A-Z]{0,16}", re.ASCII)
_SECONDS = re.compile(r"[0-9]{0,6}", re.ASCII)
_NUMBER = re.compile(r"[0-9]{3,20}", re.ASCII)
_CHANNEL = re.compile(r"[A-Za-z0-9/_.@:;-]{0,128}", re.ASCII)


class Ami(Protocol):
    async def send(self, action: str, /, *, response_timeout_s: float | None = None,
                   **fields: Any) -> Message: ...

    def add_listener(self, listener: Callable[[Message], object]) -> None: ...


class Store(Protocol):
    def requests(self) -> list[CallbackTask]: ...

    def take(self, task_id: int) -> Placement | None: ...

    def record_result(self, task_id: int, outcome: PlacementOutcome,
                      callback_case_id: str | None = None) -> CallbackTask | None: ...

    def set_callback_case(self, task_id: int, case_id: str) -> bool: ...

    def settle_interrupted(self, keep: set[int] | frozenset[int] = ...) -> list[int]: ...

    def expire_requests(self) -> list[int]: ...


class UnknownPlacement(LookupError):
    """The dialplan names a callback this service is not placing (forged, or from before a restart)."""


@dataclass
class InFlight:
    """One placement under way, from the Originate to its result."""

    placement: Placement
    sent_at: float  # loop time of the Originate
    action_id: str | None = None
    ami_lost: bool = False  # the Originate's answer never came: it may or may not ring
    linkedid: str | None = None
    case: Case | None = None
    stage: str = ""

    @property
    def task(self) -> CallbackTask:
        return self.placement.task


class CallbackPlacer:
    """Takes placement requests from the database and places each one exactly once."""

    def __init__(self, store: Store, ami: Ami | None, sink: CaseSink,
                 clock: Callable[[], datetime], *,
                 hotline_number: str, partner_numbers: Callable[[], Mapping[str, int]] = dict,
                 poll_s: float = 1.0, new_id: Callable[[datetime], str] = new_case_id,
                 no_word_s: float = NO_WORD_S,
                 retry_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)) -> None:
        if not _NUMBER.fullmatch(hotline_number):
            raise ValueError("the hotline number is digits")
        self.store = store
        self.ami: Ami | None = None
        self.sink = sink
        self.clock = clock
        self.hotline_number = hotline_number
        self.partner_numbers = partner_numbers
        self.poll_s = poll_s
        self.new_id = new_id
        self.no_word_s = no_word_s
        self.retry_s = retry_s
        self.in_flight: dict[int, InFlight] = {}
        # OriginateResponse events whose Originate's answer we have not seen yet.
        self._early: OrderedDict[str, Message] = OrderedDict()
        self._task: asyncio.Task | None = None
        self._writes: set[asyncio.Task] = set()
        self.originates = 0
        if ami is not None:
            self.use_ami(ami)

    def use_ami(self, ami: Ami) -> None:
        """The AMI client to originate with (the composition root builds it later)."""
        self.ami = ami
        ami.add_listener(self.on_event)

    # -- lifecycle -----------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="callback-placer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writes:
            # A write still retrying against an absent database is given up:
            # the next start reopens its task as "outcome unknown".
            _, pending = await asyncio.wait(list(self._writes), timeout=5.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def run(self) -> None:
        # Placements a previous process left half-done are never resumed.
        try:
            settled = await asyncio.to_thread(self.store.settle_interrupted, frozenset())
            if settled:
                logger.warning("callbacks %s were being placed when the service stopped; "
                               "reopened as outcome unknown (not resent)", settled)
        except Exception as exc:
            logger.error("settling interrupted callbacks failed (%s)", type(exc).__name__)
        while True:
            try:
                await self.poll_once()
            except Exception as exc:  # the database is away: try again next time
                logger.warning("callback poll failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.poll_s)

    async def poll_once(self) -> int:
        """Expire stale requests, time out silent placements, place what is waiting.
        Returns how many Originates were sent."""
        self._time_out_silent()
        await asyncio.to_thread(self.store.expire_requests)
        sent = 0
        if self.ami is None or not getattr(self.ami, "connected", True):
            # Not logged in to AMI: leave the requests waiting rather than
            # taking one we cannot originate (they expire if AMI stays away).
            return sent
        for task in await asyncio.to_thread(self.store.requests):
            if task.id in self.in_flight:
                continue
            placement = await asyncio.to_thread(self.store.take, task.id)
            if placement is None:
                continue
            await self.originate(placement)
            sent += 1
        return sent

    # -- AMI -----------------------------------------------------------------
    async def originate(self, placement: Placement) -> None:
        """Send the one Originate of this placement; never again, whatever happens."""
        task = placement.task
        flight = InFlight(placement, sent_at=asyncio.get_running_loop().time())
        self.in_flight[task.id] = flight
        self.originates += 1
        logger.info("callback %d: ringing surgeon %d first", task.id, placement.surgeon_id)
        try:
            if self.ami is None:
                raise AmiDisconnected("no AMI client")
            response = await self.ami.send(
                "Originate", response_timeout_s=5.0,
                Channel=f"PJSIP/{placement.surgeon_phone}@surgeons",
                Context=CONTEXT, Exten="s", Priority="1",
                Timeout=str(SURGEON_RING_S * 1000),
                CallerID=f'"{self.hotline_number} callback" <{self.hotline_number}>',
                Variable=[f"HOTLINE_CALLBACK={task.id}"],
                Async="true")
        except (AmiDisconnected, AmiTimeout) as exc:
            # It may be ringing now. Wait for word from the dialplan; without it
            # the outcome is unknown. Never resend.
            flight.ami_lost = True
            logger.warning("callback %d: AMI lost with the Originate unanswered (%s); not resent",
                           task.id, type(exc).__name__)
            return
        except (AmiError, ValueError) as exc:
            logger.error("callback %d: Originate not sent (%s)", task.id, type(exc).__name__)
            self._settle(task.id, PlacementOutcome.FAILED)
            return
        if not response.success:
            logger.warning("callback %d: Originate refused: %s", task.id,
                           (response.get("Message") or "")[:80])
            self._settle(task.id, PlacementOutcome.FAILED)
            return
        flight.action_id = response.action_id
        early = self._early.pop(flight.action_id or "", None)
        if early is not None:
            self.on_event(early)

    def on_event(self, event: Message) -> None:
        """OriginateResponse: a Failure means the surgeon's phone never answered."""
        if event.name != "OriginateResponse":
            return
        action_id = event.action_id
        if not action_id:
            return
        flight = next((f for f in self.in_flight.values() if f.action_id == action_id), None)
        if flight is None:
            self._early[action_id] = event
            while len(self._early) > 100:
                self._early.popitem(last=False)
            return
        if event.get("Response", "").lower() == "failure" and flight.linkedid is None:
            outcome = cb.originate_failure(event.get("Reason", ""))
            logger.info("callback %d: surgeon's leg failed (reason %s)", flight.task.id,
                        event.get("Reason", "")[:4])
            self._settle(flight.task.id, outcome)

    def _time_out_silent(self) -> None:
        now = asyncio.get_running_loop().time()
        for task_id, flight in list(self.in_flight.items()):
            if flight.linkedid is None and now - flight.sent_at > self.no_word_s:
                logger.warning("callback %d: no word from the dialplan; outcome unknown", task_id)
                self._settle(task_id, PlacementOutcome.UNKNOWN)
            elif now - flight.sent_at > LONGEST_CALL_S:
                self._settle(task_id, PlacementOutcome.UNKNOWN)

    # -- requests from the callback dialplan (on the loop; no I/O) -----------
    def _flight(self, task_id: int, linkedid: str | None = None) -> InFlight:
        flight = self.in_flight.get(task_id)
        if flight is None or (linkedid is not None and flight.linkedid not in (None, linkedid)):
            raise UnknownPlacement(task_id)
        return flight

    def answered(self, task_id: int, linkedid: str, at: datetime) -> InFlight:
        """The surgeon picked up: open the callback's own case (once per placement)."""
        flight = self._flight(task_id, linkedid)
        if flight.case is not None:
            return flight
        task, p = flight.task, flight.placement
        assert task.number is not None  # take() only hands out placeable tasks
        caller = classify(task.number, self.partner_numbers())
        case = lifecycle.open_case(self.new_id(at), linkedid, caller, at,
                                   linked_case_id=task.case_id)
        if task.team is not None:
            lifecycle.set_team(case, at, task.team)
        lifecycle.start_attempt(case, at, 1, CHAIN, ChainStep(
            surgeon_id=p.surgeon_id, name=p.surgeon_name, phone=p.surgeon_phone, role=ROLE,
            ring_s=SURGEON_RING_S))
        flight.linkedid, flight.case, flight.stage = linkedid, case, "answered"
        self.sink.submit(case)
        self._write(self.store.set_callback_case, task_id, case.case_id)
        logger.info("callback %d: surgeon answered; case %s", task_id, case.case_id)
        return flight

    def accepted(self, task_id: int, linkedid: str, at: datetime) -> None:
        """The surgeon pressed 1: the caller's phone is dialled next."""
        flight = self._flight(task_id, linkedid)
        if flight.case is None:
            raise UnknownPlacement(task_id)
        lifecycle.end_attempt(flight.case, at, 1, AttemptOutcome.ACCEPTED, answered=True)
        flight.stage = "dialing"
        self.sink.submit(flight.case)

    def ended(self, task_id: int, linkedid: str, stage: str, dial_status: str,
              answered_s: int | None, hangup_source: str, channel: str, at: datetime) -> None:
        """The callback call is over: close its case and record the task's outcome."""
        flight = self._flight(task_id, linkedid)
        outcome = cb.callback_end(stage, dial_status)
        case = flight.case
        if case is not None:
            attempt = case.attempt(1)
            if attempt is not None and attempt.ended_at is None:
                lifecycle.end_attempt(case, at, 1, AttemptOutcome.NO_ANSWER, answered=True)
            if outcome is PlacementOutcome.CONNECTED and attempt is not None \
                    and attempt.outcome is AttemptOutcome.ACCEPTED:
                connected = max(case.started_at, at - timedelta(seconds=answered_s or 0))
                lifecycle.mark_connected(case, connected, 1)
            by = "surgeon" if hangup_source and hangup_source == channel else (
                "caller" if hangup_source else None)
            lifecycle.mark_ended(case, at, by)  # type: ignore[arg-type]
            self.sink.submit(case, final=True)
        self._settle(task_id, outcome, case.case_id if case is not None else None)

    # -- results ---------------------------------------------------------------
    def _settle(self, task_id: int, outcome: PlacementOutcome,
                case_id: str | None = None) -> None:
        if self.in_flight.pop(task_id, None) is None:
            return
        logger.info("callback %d: %s", task_id, outcome.value)
        self._write(self.store.record_result, task_id, outcome, case_id)

    def _write(self, fn: Callable[..., object], *args: object) -> None:
        """Run a store write on a worker thread, retried while the database is away."""
        async def write() -> None:
            name = getattr(fn, "__name__", "write")
            for attempt, delay in enumerate((*self.retry_s, None)):
                try:
                    await asyncio.to_thread(fn, *args)
                    return
                except Exception as exc:  # the type only: a message may carry the URL
                    if delay is None:
                        logger.error("callback store %s failed %d times (%s); given up",
                                     name, attempt + 1, type(exc).__name__)
                        return
                    logger.warning("callback store %s failed (%s); retrying in %.0f s",
                                   name, type(exc).__name__, delay)
                    await asyncio.sleep(delay)
        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)


# --------------------------------------------------------------------------- FastAGI routes


def _arg(request: AgiRequest, index: int, pattern: re.Pattern[str], name: str) -> str:
    value = request.args[index] if index < len(request.args) else ""
    if not pattern.fullmatch(value):
        raise BadRequest(f"{name} {value[:40]!r} does not match")
    return value


def _ids(request: AgiRequest) -> tuple[int, str]:
    linkedid = request.query.get("linkedid", "")
    if not _LINKEDID.fullmatch(linkedid):
        raise BadRequest(f"linkedid {linkedid[:40]!r} does not match")
    return int(_arg(request, 0, _TASK_ID, "callback id")), linkedid


Handler = Callable[[AgiRequest, AgiChannel], Awaitable[None]]


def callback_routes(placer: CallbackPlacer, clock: Callable[[], datetime]) -> list[tuple[str, Handler]]:
    """The callback dialplan's requests: callback_start, callback_accepted, callback_end."""

    async def callback_start(request: AgiRequest, channel: AgiChannel) -> None:
        task_id, linkedid = _ids(request)
        flight = placer.answered(task_id, linkedid, clock())
        number = flight.task.number or ""
        if not _NUMBER.fullmatch(number):  # stored normalised; checked again all the same
            raise BadRequest(f"callback {task_id}: no dialable number")
        assert flight.case is not None
        await channel.set_variable(V.TARGET, number)
        await channel.set_variable(V.CASE_ID, flight.case.case_id)
        await channel.set_variable(V.RING_S, str(CALLER_RING_S))
        await channel.set_variable(V.OK, "1")

    async def callback_accepted(request: AgiRequest, channel: AgiChannel) -> None:
        task_id, linkedid = _ids(request)
        placer.accepted(task_id, linkedid, clock())
        await channel.set_variable(V.OK, "1")

    async def callback_end(request: AgiRequest, channel: AgiChannel) -> None:
        task_id, linkedid = _ids(request)
        answered = _arg(request, 3, _SECONDS, "answered time")
        placer.ended(task_id, linkedid,
                     stage=_arg(request, 1, _STAGE, "stage"),
                     dial_status=_arg(request, 2, _DIALSTATUS, "dial status"),
                     answered_s=int(answered) if answered else None,
                     hangup_source=_arg(request, 4, _CHANNEL, "hangup source"),
                     channel=request.channel or "", at=clock())
        if channel.usable:
            await channel.set_variable(V.OK, "1")

    return [("callback_start", callback_start), ("callback_accepted", callback_accepted),
            ("callback_end", callback_end)]
