"""The chain mirror: what the dialplan needs to reach a human without the service.

Asterisk keeps two things the service sets over AMI as GLOBAL variables
(Setvar without a Channel; names in ivr/channel_vars.py):
- `HOTLINE_HEARTBEAT_<n>`: epoch seconds, every second, one per service
  instance (its slot n). The dialplan asks instance n only while its heartbeat
  is fresh, because res_agi waits forever on a server that accepted the
  connection and then hangs.
- `HOTLINE_CHAIN_<team>_COUNT|_RING|_1..N`: each team's escalation chain as it
  stands now, re-pushed when the roster changes and in full after every AMI
  (re)login, so [hotline-mirror] can ring the right surgeons in order when a
  request fails.

Globals, not AstDB: DBPut (or Setvar of DB()) needs the AMI class "system",
which also opens GetConfig, ModuleLoad and Originate of System (docs/security.md).
Globals live in Asterisk's memory only: a restart of Asterisk while the service
is down leaves no mirror, and calls take the static fallback until the service
logs in again (docs/failure-modes.md).
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Mapping

from ivr.channel_vars import CHAIN_COUNT, CHAIN_RING, HEARTBEAT, MAX_CHAIN_STEPS, chain_var
from oncall.model import Roster
from routing.escalation import build_chain

logger = logging.getLogger(__name__)

MAX_MIRRORED_STEPS = MAX_CHAIN_STEPS  # the dialplan stops at 10 as well
STOPPED = "0"  # the heartbeat a stopping service leaves: stale at once

# Only names of ours and digits go out: a name ending in ")" would be a
# dialplan function (Asterisk writes DB(), FILE(), ... for those), and every
# value the dialplan reads back is a number or a phone's digits.
_GLOBAL_NAME = re.compile(r"HOTLINE_[A-Za-z0-9_]{1,64}", re.ASCII)
_GLOBAL_VALUE = re.compile(r"[0-9]{0,32}", re.ASCII)


def chain_entries(roster: Roster, teams: Iterable[str], at: datetime) -> dict[str, str]:
    """The global name -> value pairs that mirror every team's chain at `at`."""
    entries: dict[str, str] = {}
    for team in teams:
        chain = build_chain(roster, team, at)
        steps = chain.steps[:MAX_MIRRORED_STEPS]
        entries[chain_var(team, CHAIN_COUNT)] = str(len(steps))
        ring_s = steps[0].ring_s if steps else roster.teams[team].ring_s if team in roster.teams else 25
        entries[chain_var(team, CHAIN_RING)] = str(ring_s)
        for index, step in enumerate(steps, start=1):
            entries[chain_var(team, index)] = step.phone
    return entries


SetGlobal = Callable[[str, str], Awaitable[bool]]


class ChainMirror:
    """Pushes the heartbeat and the chains; only changed chain entries are sent.

    `forget()` (on every AMI reconnect) makes the next round send every entry
    again, chains before the heartbeat; a send that was under way when the
    session changed does not count as pushed.
    """

    def __init__(self, set_global: SetGlobal, roster: Callable[[], Roster], teams: Iterable[str],
                 clock: Callable[[], datetime], heartbeat_s: float = 1.0,
                 chain_check_s: float = 5.0, wall_clock: Callable[[], float] = time.time,
                 heartbeat: str = HEARTBEAT):
        self._set_global = set_global
        self.heartbeat = heartbeat  # this instance's own heartbeat global
        self._roster = roster
        self.teams = tuple(teams)
        self._clock = clock
        self._wall = wall_clock
        self.heartbeat_s = heartbeat_s
        self.chain_check_s = chain_check_s
        self._pushed: dict[str, str] = {}
        # Bumped by forget(): a push that straddles a reconnect went (partly)
        # to the Asterisk that is gone, so its results are not remembered.
        self._generation = 0
        self._chains_due = True
        self._task: asyncio.Task | None = None
        self.heartbeats = 0

    def forget(self) -> None:
        """After a reconnect: push everything again, now (a restarted Asterisk has lost every global)."""
        self._pushed.clear()
        self._generation += 1
        self._chains_due = True

    async def push_chains(self) -> int:
        """Send the chain entries that differ from what was last sent; returns how many."""
        wanted = chain_entries(self._roster(), self.teams, self._clock())
        generation = self._generation
        sent = 0
        for name, value in wanted.items():
            if self._pushed.get(name) == value:
                continue
            try:
                ok = await self._set_global(name, value)
            except ValueError:
                # Not ours to send (a phone that is not digits): the dialplan
                # skips an empty step; the other entries still go.
                logger.warning("chain entry %s not mirrored: refused value", name)
                continue
            if ok and generation == self._generation:
                self._pushed[name] = value
                sent += 1
        return sent

    async def beat(self) -> bool:
        ok = await self._set_global(self.heartbeat, str(int(self._wall())))
        self.heartbeats += ok
        return ok

    async def stopped(self) -> bool:
        """Tell the dialplan at once that the service is going, not after the heartbeat goes stale."""
        return await self._set_global(self.heartbeat, STOPPED)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="chain-mirror")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _run(self) -> None:
        next_chain_check = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                # Chains first: once the heartbeat is fresh the dialplan asks
                # the service, and from then on the mirror must be whole.
                if self._chains_due or loop.time() >= next_chain_check:
                    self._chains_due = False
                    next_chain_check = loop.time() + self.chain_check_s
                    sent = await self.push_chains()
                    if sent:
                        logger.info("mirrored %d chain entries into Asterisk globals", sent)
                await self.beat()
            except Exception as exc:  # AMI down or slow: the next beat tries again
                logger.warning("chain mirror update failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.heartbeat_s)


def ami_set_global(send: Callable[..., Awaitable[Mapping[str, str]]]) -> SetGlobal:
    """A SetGlobal over an AmiClient's `send`: Setvar without a Channel (False on an error response).

    Refuses (ValueError, nothing sent) a name that is not a plain HOTLINE_
    variable or a value that is not digits.
    """

    async def set_global(name: str, value: str) -> bool:
        if not _GLOBAL_NAME.fullmatch(name):
            raise ValueError(f"not a hotline global: {name!r}")
        if not isinstance(value, str) or not _GLOBAL_VALUE.fullmatch(value):
            raise ValueError(f"refused value for {name}")
        response = await send("Setvar", Variable=name, Value=value)
        return getattr(response, "success", False)

    return set_global


__all__ = ["ChainMirror", "MAX_MIRRORED_STEPS", "STOPPED", "SetGlobal", "ami_set_global",
           "chain_entries"]
