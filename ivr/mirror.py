"""The AstDB mirror: what the dialplan needs to reach a human without the service.

Asterisk keeps two things the service writes over AMI (DBPut):
- `hotline/heartbeat`: epoch seconds, every second. The dialplan asks the
  service only while it is fresh, because res_agi waits forever on a server
  that accepted the connection and then hangs.
- `hotline-chain/<team>/count|ring|1..N`: each team's escalation chain as it
  stands now, re-pushed when the roster changes (and on every reconnect), so
  [hotline-mirror] can ring the right surgeons in order when a request fails.
"""
from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime
from typing import Awaitable, Callable, Iterable, Mapping

from oncall.model import Roster
from routing.escalation import build_chain

logger = logging.getLogger(__name__)

HEARTBEAT = ("hotline", "heartbeat")
CHAIN_FAMILY = "hotline-chain"
MAX_MIRRORED_STEPS = 10  # the dialplan stops at 10 as well


def chain_entries(roster: Roster, teams: Iterable[str], at: datetime) -> dict[tuple[str, str], str]:
    """The AstDB (family, key) -> value pairs that mirror every team's chain at `at`."""
    entries: dict[tuple[str, str], str] = {}
    for team in teams:
        chain = build_chain(roster, team, at)
        steps = chain.steps[:MAX_MIRRORED_STEPS]
        entries[(CHAIN_FAMILY, f"{team}/count")] = str(len(steps))
        ring_s = steps[0].ring_s if steps else roster.teams[team].ring_s if team in roster.teams else 25
        entries[(CHAIN_FAMILY, f"{team}/ring")] = str(ring_s)
        for index, step in enumerate(steps, start=1):
            entries[(CHAIN_FAMILY, f"{team}/{index}")] = step.phone
    return entries


DbPut = Callable[[str, str, str], Awaitable[bool]]


class AstdbMirror:
    """Pushes the heartbeat and the chains; only changed chain entries are sent."""

    def __init__(self, db_put: DbPut, roster: Callable[[], Roster], teams: Iterable[str],
                 clock: Callable[[], datetime], heartbeat_s: float = 1.0,
                 chain_check_s: float = 5.0, wall_clock: Callable[[], float] = time.time):
        self._db_put = db_put
        self._roster = roster
        self.teams = tuple(teams)
        self._clock = clock
        self._wall = wall_clock
        self.heartbeat_s = heartbeat_s
        self.chain_check_s = chain_check_s
        self._pushed: dict[tuple[str, str], str] = {}
        self._task: asyncio.Task | None = None
        self.heartbeats = 0

    def forget(self) -> None:
        """After a reconnect (Asterisk may have restarted): push everything again."""
        self._pushed.clear()

    async def push_chains(self) -> int:
        """Send the chain entries that differ from what was last sent; returns how many."""
        wanted = chain_entries(self._roster(), self.teams, self._clock())
        sent = 0
        for (family, key), value in wanted.items():
            if self._pushed.get((family, key)) == value:
                continue
            if await self._db_put(family, key, value):
                self._pushed[(family, key)] = value
                sent += 1
        return sent

    async def beat(self) -> bool:
        ok = await self._db_put(*HEARTBEAT, str(int(self._wall())))
        self.heartbeats += ok
        return ok

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="astdb-mirror")

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
                await self.beat()
                if loop.time() >= next_chain_check:
                    sent = await self.push_chains()
                    if sent:
                        logger.info("mirrored %d chain entries into AstDB", sent)
                    next_chain_check = loop.time() + self.chain_check_s
            except Exception as exc:  # AMI down or slow: the next beat tries again
                logger.warning("AstDB mirror update failed (%s)", type(exc).__name__)
            await asyncio.sleep(self.heartbeat_s)


def ami_db_put(send: Callable[..., Awaitable[Mapping[str, str]]]) -> DbPut:
    """A DbPut over an AmiClient's `send` (returns False on an error response)."""

    async def put(family: str, key: str, value: str) -> bool:
        response = await send("DBPut", Family=family, Key=key, Val=value)
        return getattr(response, "success", False)

    return put
