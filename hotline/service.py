"""The hotline service process: FastAGI server, AMI event folder, roster cache, case writer.

`HotlineService` is the composition root: it builds every client from the
configuration and wires them; nothing else constructs adapters.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from db.callbacks import CallbackStore
from db.blocklist import BlockList
from db.incidents import IncidentStore
from db.notices import NoticeRepository
from db.notification_sources import NotificationSources
from db.repo import CaseRepository, RosterRepository
from db.session import make_engine
from hotline.callbacks import CallbackPlacer, callback_routes
from hotline.casewriter import CaseWriter
from hotline.config import HotlineConfig
from hotline.incidents import NetworkCache, QueueKeeper
from hotline.jobs import RECONCILE_WINDOW, add_reconcile_job, add_seal_job, log_job_runs
from hotline.leader import SchedulerElection, rebase_jobs
from hotline.journal import Journal
from hotline.networkjobs import add_network_jobs
from hotline.notifiers.channels import build_notifier
from hotline.reconcile import build_reconciler
from hotline.rostercache import RosterCache
from hotline.rosterjobs import HandoffPusher, add_roster_jobs, handoff_pusher
from hotline.supervisor import touch
from ivr.ami import AmiClient, AmiError, Message
from ivr.channel_vars import heartbeat_var
from ivr.calls import CallDesk
from ivr.fastagi import FastAgiServer
from ivr.handlers import ProofCheck, build_routes
from ivr.menu import load_menu
from ivr.mirror import ChainMirror, ami_set_global
from oncall.model import Roster
from oncall.notices import GAP_DAYS
from photos.sending import add_photo_link_job
from privacy.jobs import add_retention_job
from privacy.retention import policy_from_config

logger = logging.getLogger(__name__)

AMI_USER = "hotline"
# How long after the caller's channel is gone AMI waits for the hangup
# handler's own request before it closes the case itself.
HANGUP_GRACE_S = 5.0
# In a cluster: how long a node's AMI link may stay down before its live calls
# are taken for lost with it (their cases end at the moment the link dropped;
# reconciliation corrects them from the node's CDR/CEL once it is back).
NODE_LOST_S = 30.0


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def close_vanished_calls(desk: CallDesk, channels: list[Message], at: datetime,
                         owns: Callable[[str], bool] = lambda linkedid: True) -> list[str]:
    """End the live cases whose call has no channel left in Asterisk; their linkedids.

    `owns(linkedid)`: whether the call is on the Asterisk node that listed
    `channels` (in a cluster, another node's calls are not judged by this list).
    """
    alive = {c.get("Linkedid") for c in channels} | {c.get("Uniqueid") for c in channels}
    gone = [linkedid for linkedid in list(desk.calls) if owns(linkedid) and linkedid not in alive]
    for linkedid in gone:
        logger.warning("call %s ended while AMI was away; closing its case", linkedid)
        desk.hung_up(linkedid, at)
    return gone


class NodeLink:
    """The service's AMI link to one Asterisk node and what it keeps there:
    this instance's heartbeat and the chain mirror, the major-incident queues."""

    def __init__(self, name: str, ami: AmiClient, mirror: ChainMirror, queues: QueueKeeper,
                 prefix: str | None) -> None:
        self.name = name
        self.ami = ami
        self.mirror = mirror
        self.queues = queues
        # The linkedid prefix of this node's calls (its systemname and "-");
        # None with a single node, whose linkedids carry no prefix.
        self.prefix = prefix
        self.down_since: datetime | None = None
        self.lost_reported = False
        self.connect_task: asyncio.Task | None = None

    def owns(self, linkedid: str) -> bool:
        return self.prefix is None or linkedid.startswith(self.prefix)


class HotlineService:
    def __init__(self, config: HotlineConfig, clock: Callable[[], datetime] = utcnow):
        self.config = config
        self.clock = clock
        self.menu = load_menu(config.menu_file)
        self.engine = make_engine(config.db_url)
        self.cases = CaseRepository(self.engine)
        self.rosters = rosters = RosterRepository(self.engine)
        self._handoffs: HandoffPusher | None = None
        self.roster_cache = RosterCache(rosters.load, rosters.partner_numbers, clock,
                                        version=rosters.version, on_refresh=self._roster_changed)
        config.recordings_dir.mkdir(parents=True, exist_ok=True)
        # Snapshots are journalled before the database has them: a crash or a
        # database outage loses nothing, and the next start writes the rest.
        # Recordings and voicemails are sealed at rest once the call is over (vault/).
        self.vault = config.vault()
        self.writer = CaseWriter(self.cases, config.recordings_dir,
                                 journal=Journal(config.instance_dir / "journal"),
                                 vault=self.vault)
        # Major incidents in force and the block list, polled about every second.
        incidents, blocks = IncidentStore(self.engine, clock), BlockList(self.engine, clock)
        self.network = NetworkCache(incidents.active, incidents.version, blocks.active,
                                    blocks.version, clock, on_refresh=self._network_changed)
        self.desk = CallDesk(self.menu, self.roster_cache, self.writer, network=self.network)
        # Callback tasks the console asked to place: one Originate each (hotline/callbacks.py).
        self.callbacks = CallbackPlacer(CallbackStore(self.engine, clock), None, self.writer, clock,
                                        hotline_number=self.menu.number,
                                        partner_numbers=self.roster_cache.partner_numbers)
        # A request about a call another instance started adopts its stored case.
        routes = build_routes(self.desk, clock, config.recordings_dir,
                              lookup=self.cases.get_by_linkedid)
        for name, handler in callback_routes(self.callbacks, clock):
            routes.add(name, handler)
        self.agi = FastAgiServer(
            routes,
            host=config.agi_host, port=config.ports.agi,
            # FastAGI has no authentication: only the configured Asterisk hosts.
            allowed_peers=config.agi_allowed_hosts,
            # ...and an address cannot tell Asterisk from any local process: every
            # request must prove it comes from this instance's dialplan.
            authenticate=ProofCheck(config.agi_secret()),
            # Asterisk caps caller-ID fields well below this; a longer line is
            # refused, and the dialplan's fallback still serves the caller.
            max_line_bytes=4096,
        )
        # One AMI link per Asterisk node this instance serves (one, unless in a
        # cluster: docs/deployment.md). On each: this instance's heartbeat and
        # every team's chain, as globals the dialplan reads when no service
        # answers (ivr/mirror.py), and the major-incident queues' members.
        nodes = config.nodes()
        heartbeat = heartbeat_var(config.service_slot)
        self.nodes: list[NodeLink] = []
        for node in nodes:
            ami = AmiClient(node.host, node.ami_port, AMI_USER, node.ami_secret())
            self.nodes.append(NodeLink(
                node.name, ami,
                ChainMirror(ami_set_global(ami.send), self.roster_cache.roster,
                            (*self.menu.teams, "nurse"), clock, heartbeat=heartbeat),
                QueueKeeper(ami.send, ami.send_list, self.roster_cache.roster,
                            self.network, self.menu.teams, clock),
                prefix=f"{node.name}-" if len(nodes) > 1 else None))
        # The first node's link places callbacks (one Originate each).
        self.ami, self.mirror, self.queues = self.nodes[0].ami, self.nodes[0].mirror, self.nodes[0].queues
        self.callbacks.use_ami(self.ami)
        self._pending_hangups: dict[str, asyncio.TimerHandle] = {}
        # One scheduler per service, but only one runs its jobs: it starts
        # paused, and the instance the cluster's election picks resumes it
        # (hotline/leader.py; on SQLite the one instance). Reconciliation fills
        # in from CDR/CEL what the service missed (it was down, or AMI was away).
        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        log_job_runs(self.scheduler, config.instance)
        every = timedelta(seconds=config.reconcile_every_s)
        add_reconcile_job(self.scheduler, build_reconciler(config, self.engine, clock=clock),
                          every=every, window=max(RECONCILE_WINDOW, every * 3),
                          first_delay=min(timedelta(seconds=30), every), clock=clock)
        add_seal_job(self.scheduler, config.recordings_dir, self.vault, self.engine)
        # Wound photos (docs/photos.md): an upload link by SMS to a caller on a
        # mobile once the case opens, and the case's phone view to the surgeon
        # who accepts; both off without a public console URL and an SMS sender.
        add_photo_link_job(self.scheduler, config, self.engine, self.vault, self.menu.teams, clock)
        # Roster notices (shift reminders, the department heads' digest, gap
        # alerts) and a chain push at the exact instant of every handoff.
        self._loop: asyncio.AbstractEventLoop | None = None
        # Notices go out by SMS and WeChat Work groups as configured (else to the
        # log); missed calls and due callbacks join the roster's in the outbox.
        outbox = NoticeRepository(self.engine, clock)
        self.notifier = build_notifier(config, self.menu.teams, outbox, clock=clock)
        add_network_jobs(self.scheduler, source=NotificationSources(self.engine),
                         roster=self._roster_ahead, outbox=outbox, clock=clock)
        # The retention purge, daily at 03:30 Asia/Shanghai (docs/privacy.md); a
        # bad period in the configuration stops the start here, loudly.
        add_retention_job(self.scheduler, self.engine, policy_from_config(config),
                          config.recordings_dir, clock=clock)
        self._handoffs = handoff_pusher(add_roster_jobs(
            self.scheduler, roster=self._roster_ahead, outbox=outbox,
            notifier=self.notifier, push_chains=self._push_chains_now,
            teams=self.mirror.teams, clock=clock))
        # The elected instance also places callbacks: a second placer would
        # settle the first one's placements in flight as interrupted.
        self.election = SchedulerElection(self.engine, config.election_name, config.instance,
                                          on_elected=self._elected, on_deposed=self._deposed)

    def _roster_ahead(self) -> Roster:
        """The roster the roster jobs read: a day back to the alert horizon ahead.

        Read from the database on each run (the routing cache holds two days
        only); if the database is away the job fails and its next run retries.
        """
        now = self.clock()
        return self.rosters.load(now - timedelta(days=1), now + timedelta(days=GAP_DAYS + 1))

    def _push_chains_now(self) -> int:
        """Push changed chain entries to every node from a scheduler thread, on the service's loop."""
        if self._loop is None:
            raise RuntimeError("the service loop is not running yet")

        async def push_all() -> int:
            pushed = 0
            for link in self.nodes:
                try:
                    pushed += await link.mirror.push_chains()
                except (AmiError, OSError) as exc:  # that node is away: its mirror catches up on login
                    logger.warning("chain push to node %s failed (%s)", link.name, type(exc).__name__)
            return pushed

        return asyncio.run_coroutine_threadsafe(push_all(), self._loop).result(10)

    def _network_changed(self) -> None:
        # An incident switched on or off (or a roster change landed): fix the
        # major-incident queues' members now, not at the next round.
        for link in getattr(self, "nodes", ()):
            link.queues.poke()

    # -- the elected instance's duties (called from the election's thread) ----------
    def _elected(self) -> None:
        moved = rebase_jobs(self.scheduler, utcnow())
        if moved:
            logger.info("%d scheduled job(s) were due under the previous holder; next runs rebased", moved)
        self.scheduler.resume()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.callbacks.start)

    def _deposed(self) -> None:
        self.scheduler.pause()
        if self._loop is not None:
            asyncio.run_coroutine_threadsafe(self.callbacks.stop(), self._loop)

    def _roster_changed(self) -> None:
        self._network_changed()
        # A new override or swap may bring the next handoff closer.
        if self._handoffs is not None and self.scheduler.running:
            self._handoffs.reschedule()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.roster_cache.start()
        self.network.start()
        self.writer.start()
        self.scheduler.start(paused=True)  # the election resumes it where this instance leads
        await self.agi.start()
        for link in self.nodes:
            link.ami.add_listener(self._on_event)
            # A reconnect may mean a restarted Asterisk, which has lost every
            # global: the mirror sends all of it again at once.
            link.ami.on_reconnect(link.mirror.forget)
            link.ami.on_reconnect(link.queues.forget)
            link.ami.on_reconnect(lambda link=link: self.resync(link))
            link.connect_task = asyncio.create_task(self._connect_ami(link), name=f"ami-connect-{link.name}")
        self._nodes_task = asyncio.create_task(self._watch_nodes(), name="node-watch") \
            if len(self.nodes) > 1 else None
        self.election.start()
        # Everything built so far (modules, SQLAlchemy's metadata, the menu,
        # the caches) lives as long as the process: move it out of the garbage
        # collector's sight, so a full collection under load walks only what
        # calls allocate, not the whole heap while every FastAGI request waits.
        gc.collect()
        gc.freeze()
        logger.info("hotline service ready: FastAGI %s:%d", self.config.agi_host, self.agi.port)
        # `hotline up` waits for this file rather than probing the AGI port.
        self.ready_file.write_text(f"{os.getpid()}\n")
        self._watchdog_task = asyncio.create_task(self._feed_watchdog(), name="watchdog")

    @property
    def heartbeat_file(self) -> Path:
        return self.config.instance_dir / "service.heartbeat"

    async def _feed_watchdog(self) -> None:
        """Touch the supervisor's heartbeat file from the event loop: if the loop
        stalls (or the process is stopped), the supervisor kills and restarts us."""
        while True:
            touch(self.heartbeat_file)
            await asyncio.sleep(0.5)

    @property
    def ready_file(self) -> Path:
        return self.config.instance_dir / "service.ready"

    async def _connect_ami(self, link: NodeLink, retry_s: float = 2.0) -> None:
        """Log in to a node's AMI, retrying until it works; the client reconnects by itself after that."""
        while True:
            try:
                await link.ami.connect()
                link.mirror.start()
                link.queues.start()
                return
            except (AmiError, OSError) as exc:
                # Meanwhile there is no heartbeat, so the dialplan routes from the
                # mirror; requests that do reach the service are still answered.
                logger.warning("AMI of node %s not reachable (%s); retrying in %.0fs",
                               link.name, type(exc).__name__, retry_s)
                await asyncio.sleep(retry_s)

    async def _watch_nodes(self, every_s: float = 1.0) -> None:
        """In a cluster: a node whose AMI link stays down NODE_LOST_S is taken for lost,
        and so are its live calls (reported, their cases ended when the link dropped)."""
        while True:
            now = self.clock()
            for link in self.nodes:
                if link.ami.connected:
                    link.down_since, link.lost_reported = None, False
                elif link.down_since is None:
                    link.down_since = now
                elif not link.lost_reported and (now - link.down_since).total_seconds() >= NODE_LOST_S:
                    link.lost_reported = True
                    lost = [linkedid for linkedid in list(self.desk.calls) if link.owns(linkedid)]
                    cases = [self.desk.calls[linkedid].case.case_id for linkedid in lost]
                    for linkedid in lost:
                        self.desk.hung_up(linkedid, link.down_since)
                    logger.error("node %s lost (AMI down since %s): %d live call(s) ended with it: %s",
                                 link.name, link.down_since.isoformat(timespec="seconds"),
                                 len(lost), ", ".join(cases) or "none")
            await asyncio.sleep(every_s)

    async def stop(self) -> None:
        """Stop taking new requests, finish those in flight, write what is pending."""
        self.ready_file.unlink(missing_ok=True)
        self._watchdog_task.cancel()
        if self._nodes_task is not None:
            self._nodes_task.cancel()
        for handle in self._pending_hangups.values():
            handle.cancel()
        for link in self.nodes:
            await link.mirror.stop()
            await link.queues.stop()
        await self.callbacks.stop()
        for link in self.nodes:
            try:
                # Tell the dialplan at once not to ask this instance any more
                # (rather than after its heartbeat goes stale).
                await asyncio.wait_for(link.mirror.stopped(), 2)
            except (AmiError, OSError, asyncio.TimeoutError):
                pass
        tasks = [link.connect_task for link in self.nodes if link.connect_task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.agi.stop()
        for link in self.nodes:
            await link.ami.close()
        # The lock goes back with the election's connection: another instance leads.
        await asyncio.to_thread(self.election.stop)
        self.scheduler.shutdown(wait=False)
        self.roster_cache.stop()
        self.network.stop()
        await asyncio.to_thread(self.writer.stop, 5.0)  # flushes, or leaves the rest journalled
        self.engine.dispose()

    async def run_forever(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def resync(self, link: NodeLink | None = None) -> int:
        """After an AMI reconnect: close the cases of that node's calls whose channels are gone.

        Events are never replayed, so a Hangup during the gap was missed; the
        channels still up (CoreShowChannels) tell which calls are alive. What
        else happened in the gap is recovered from CDR/CEL by reconciliation.
        """
        link = link or self.nodes[0]
        try:
            _, channels = await link.ami.send_list("CoreShowChannels")
        except (AmiError, OSError) as exc:
            logger.warning("resync with node %s after reconnect failed (%s)", link.name, type(exc).__name__)
            return 0
        return len(close_vanished_calls(self.desk, channels, self.clock(), link.owns))

    def _on_event(self, event: Message) -> None:
        """Fold AMI events into the live cases; runs on the loop, must not block."""
        name = event.name
        uniqueids, linkedids = event.get_all("Uniqueid"), event.get_all("Linkedid")
        if len(uniqueids) != 1 or len(linkedids) != 1:
            # A repeated key means a forged header line (a caller ID with CR/LF
            # that slipped past the dialplan): trust nothing in this event.
            if uniqueids or linkedids:
                logger.warning("AMI %s event with repeated ids ignored", name)
            return
        uniqueid, linkedid = uniqueids[0], linkedids[0]
        if uniqueid != linkedid:
            return  # only the caller's own channel (the call's first channel) matters here
        if name == "BridgeEnter":
            self.desk.bridged(linkedid, self.clock())
        elif name == "Hangup":
            loop = asyncio.get_running_loop()
            self._pending_hangups[linkedid] = loop.call_later(
                HANGUP_GRACE_S, self._hangup_grace_over, linkedid)

    def _hangup_grace_over(self, linkedid: str) -> None:
        self._pending_hangups.pop(linkedid, None)
        if linkedid in self.desk.calls:
            logger.warning("no hangup request for call %s; closing its case from AMI", linkedid)
            self.desk.hung_up(linkedid, self.clock())
