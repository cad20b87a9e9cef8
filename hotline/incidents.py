"""Major-incident mode in the running service: the state it routes by, and the queues' members.

`NetworkCache` keeps the incidents in force and the block list, reloaded on a
thread whenever their cheap version probes move (every `poll_s`, about a
second: a switch takes effect for the next call within that) and fully every
`refresh_s`. Calls read only the snapshot, so a slow database never delays a
caller; while the database is away the last snapshot keeps serving.

`QueueKeeper` makes each team's app_queue queue hold exactly the surgeons on
call for that team now while the team is in major-incident mode, and nobody
otherwise: every `interval_s` (and at once when the cache reloads) it compares
what Asterisk has (AMI QueueStatus) with what should be (routing.queue) and
sends QueueAdd / QueueRemove for the difference. Recomputing from the time
covers switch-on, switch-off, roster changes and handoffs alike; reading
Asterisk's own list each time means nothing is resent blindly after a
reconnect or a restart of either side.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Mapping, Sequence

from hotline.snapshot import PolledSnapshot
from network.incidents import Incident, teams_in_incident
from oncall.model import Roster
from routing.queue import Member, member_phone, queue_members, queue_name

logger = logging.getLogger(__name__)


class NetworkCache(PolledSnapshot[tuple[tuple[Incident, ...], frozenset[str]]]):
    """Incidents in force and blocked numbers, as last loaded (ivr.calls.NetworkSource)."""

    name = "network-cache"

    def __init__(self, load_incidents: Callable[[], Sequence[Incident]],
                 incident_version: Callable[[], object],
                 load_blocked: Callable[[], frozenset[str]], blocked_version: Callable[[], object],
                 clock: Callable[[], datetime], poll_s: float = 1.0, refresh_s: float = 30.0,
                 on_refresh: Callable[[], None] | None = None):
        super().__init__(((), frozenset()), clock, refresh_s=refresh_s, poll_s=poll_s,
                         version=lambda: (incident_version(), blocked_version()),
                         on_refresh=on_refresh)
        self._load_incidents = load_incidents
        self._load_blocked = load_blocked

    def incidents(self) -> Sequence[Incident]:
        return self._snapshot[0]

    def blocked_numbers(self) -> frozenset[str]:
        return self._snapshot[1]

    def _load(self, now: datetime) -> tuple[tuple[Incident, ...], frozenset[str]]:
        return tuple(self._load_incidents()), frozenset(self._load_blocked())

    def _loaded(self, old, new, version: object, version_moved: bool) -> None:
        if new != old:
            logger.info("network state: %d incident(s) in force, %d number(s) blocked",
                        len(new[0]), len(new[1]))


Send = Callable[..., Awaitable[Mapping[str, str]]]
SendList = Callable[..., Awaitable[tuple[Mapping[str, str], list[Mapping[str, str]]]]]


def wanted_members(roster: Roster, incidents: Iterable[Incident], teams: Iterable[str],
                   at: datetime) -> dict[str, dict[str, Member]]:
    """Queue name -> the members it should hold at `at`: the team's on-call
    surgeons while it is in major-incident mode, nobody otherwise."""
    teams = tuple(teams)
    hot = teams_in_incident(incidents, teams, at)
    return {queue_name(t): (queue_members(roster, t, at) if t in hot else {}) for t in teams}


def member_changes(wanted: Mapping[str, Mapping[str, Member]],
                   present: Mapping[str, set[str]]) -> tuple[list[tuple[str, Member]],
                                                             list[tuple[str, str]]]:
    """(to add, to remove) per queue; only our own member interfaces are ever removed."""
    add = [(q, m) for q, members in wanted.items() for i, m in sorted(members.items())
           if i not in present.get(q, set())]
    remove = [(q, i) for q in wanted for i in sorted(present.get(q, set()))
              if i not in wanted[q] and member_phone(i) is not None]
    return add, remove


class QueueKeeper:
    def __init__(self, send: Send, send_list: SendList, roster: Callable[[], Roster],
                 network: NetworkCache, teams: Iterable[str], clock: Callable[[], datetime],
                 interval_s: float = 2.0):
        self._send = send
        self._send_list = send_list
        self._roster = roster
        self._network = network
        self.teams = tuple(teams)
        self._clock = clock
        self.interval_s = interval_s
        self._task: asyncio.Task | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._members_known = True  # until the first sync, assume Asterisk may hold some

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.create_task(self._run(), name="queue-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def poke(self) -> None:
        """Sync now (thread-safe: the network cache calls it from its thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def forget(self) -> None:
        """After an AMI reconnect: Asterisk may have restarted; read its list again."""
        self._members_known = True
        self.poke()

    async def _run(self) -> None:
        while True:
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # AMI away, a timeout: the next round retries
                logger.warning("queue member sync failed (%s: %s)", type(exc).__name__, exc)
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def present(self) -> dict[str, set[str]]:
        """Queue name -> member interfaces Asterisk holds now (our queues only)."""
        _, events = await self._send_list("QueueStatus")
        ours = {queue_name(t) for t in self.teams}
        present: dict[str, set[str]] = {q: set() for q in ours}
        for event in events:
            if event.get("Event") == "QueueMember" and event.get("Queue") in ours:
                interface = event.get("Interface") or event.get("Location") or ""
                present[event["Queue"]].add(interface)
        return present

    async def sync(self) -> tuple[int, int]:
        """One round: add and remove members; (added, removed)."""
        now = self._clock()
        wanted = wanted_members(self._roster(), self._network.incidents(), self.teams, now)
        if not self._members_known and not any(wanted.values()):
            return 0, 0  # no incident, and we emptied the queues already: no AMI traffic
        add, remove = member_changes(wanted, await self.present())
        for queue, member in add:
            response = await self._send("QueueAdd", Queue=queue, Interface=member.interface,
                                        MemberName=f"surgeon-{member.surgeon_id}", Paused="false")
            logger.info("queue %s: added surgeon %d (%s) -> %s", queue, member.surgeon_id,
                        member.role, response.get("Response"))
        for queue, interface in remove:
            response = await self._send("QueueRemove", Queue=queue, Interface=interface)
            logger.info("queue %s: removed %s -> %s", queue, interface, response.get("Response"))
        self._members_known = any(wanted.values())
        return len(add), len(remove)
