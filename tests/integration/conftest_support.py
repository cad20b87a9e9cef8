"""Support for the integration tests (imported by conftest.py and the tests).

The real thing: sandboxed Asterisk 22, the hotline service as its own process,
baresip phones placing SIP calls with RFC 4733 DTMF, and a database.

One Asterisk + service for the whole session, on ports of its own (the demo's
stay free). Each test uses its own caller number so cases never mix, and after
each test no channel may be left in Asterisk.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

import pytest

from cases.lifecycle import Case
from db.repo import CaseRepository
from db.session import make_engine
from hotline import instance
from hotline.config import HotlineConfig, load_config
from oncall.model import Rank, Role, Shift, Surgeon, Team
from testphones.scenario import CallResult, place_call

HERE = Path(__file__).resolve().parent
# Ports of the test instance: HOTLINE_TEST_PORT_BASE moves them all, so two
# test sessions (or the demo, on the default ports) never meet.
_BASE = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000"))
PORTS = {"sip": _BASE + 60, "ami": _BASE + 38, "agi": _BASE + 73, "surgeon_phones": _BASE + 70,
         "rtp_start": _BASE + 1000, "rtp_end": _BASE + 1999}

RING_S = 6
TEAMS = (
    Team("facial", "颌面部创伤", "Facial trauma", ring_s=RING_S, repeats=0),
    Team("replant", "断肢(指)再植", "Replantation", ring_s=RING_S, repeats=0),
    Team("burns", "烧伤", "Burns", ring_s=RING_S, repeats=0),  # nobody on call
    Team("referral", "转诊转运", "Referral", ring_s=RING_S, repeats=0),
)
SURGEONS = (
    Surgeon(1, "甲 primary facial", "13700000101", Rank.ATTENDING),
    Surgeon(2, "乙 backup facial", "13700000102", Rank.RESIDENT),
    Surgeon(3, "丙 primary replant", "13700000201", Rank.ATTENDING),
    Surgeon(4, "丁 backup replant", "13700000202", Rank.CHIEF),
    Surgeon(5, "戊 referral", "13700000401", Rank.ATTENDING),
)
NURSE = "13900000000"  # from menu-test.toml
PARTNER_NUMBER = "043188888888"


def _shifts(now: datetime) -> list[Shift]:
    start, end = now - timedelta(days=1), now + timedelta(days=1)
    return [
        Shift("facial", 1, Role.PRIMARY, start, end),
        Shift("facial", 2, Role.BACKUP, start, end),
        Shift("replant", 3, Role.PRIMARY, start, end),
        Shift("replant", 4, Role.BACKUP, start, end),
        Shift("referral", 5, Role.PRIMARY, start, end),
    ]


def asterisk_globals(config: HotlineConfig) -> dict[str, str]:
    """Asterisk's global variables now (`dialplan show globals`: one `   NAME=value` line each)."""
    found: dict[str, str] = {}
    for line in instance.asterisk_cli(config, "dialplan show globals"):
        name, sep, value = line.strip().partition("=")
        if sep and name and " " not in name:
            found[name] = value
    return found


def mirrored_chains(config: HotlineConfig) -> dict[str, str]:
    """The chain mirror as Asterisk holds it: HOTLINE_CHAIN_<team>_<part> -> value."""
    from ivr.channel_vars import CHAIN_PREFIX

    return {k: v for k, v in asterisk_globals(config).items() if k.startswith(CHAIN_PREFIX)}


def seed_test_network(db_url: str) -> None:
    """Migrate `db_url` and load the test roster and the partner hospital."""
    from db.seed import PartnerHospital, seed_partners, seed_roster
    from db.session import migrate

    migrate(db_url)
    engine = make_engine(db_url)
    try:
        seed_roster(engine, TEAMS, SURGEONS, _shifts(datetime.now(timezone.utc)))
        seed_partners(engine, [PartnerHospital(1, "吉林市中心医院", "三级甲等", "吉林", (PARTNER_NUMBER,))])
    finally:
        engine.dispose()


@dataclass
class Hotline:
    config: HotlineConfig
    env: dict[str, str]
    workdir: Path

    @property
    def phones(self) -> list[str]:
        return [s.phone for s in SURGEONS] + [NURSE]

    def call(self, caller: str, press: str = "", surgeons: str = "accept",
             **kwargs) -> tuple[CallResult, datetime]:
        started = datetime.now(timezone.utc)
        result = place_call(
            workdir=Path(tempfile.mkdtemp(dir=self.workdir)), sip_port=self.config.ports.sip,
            number="96608", password=self.config.sip_secret(), caller_number=caller,
            press=press, surgeon_port=self.config.ports.surgeon_phones,
            surgeon_numbers=self.phones, surgeons=surgeons.split(","),
            surgeon_host=self.config.surgeon_host, say=lambda line: None, **kwargs)
        return result, started

    def case_for(self, caller: str, since: datetime, timeout_s: float = 20.0,
                 db_url: str | None = None) -> Case:
        """The finished case of `caller`'s call, once the service has written it whole."""
        engine = make_engine(db_url or self.config.db_url)
        try:
            repo = CaseRepository(engine)
            deadline = time.monotonic() + timeout_s
            found = None
            while time.monotonic() < deadline:
                found = [c for c in repo.recent(50)
                         if c.caller.raw_safe == caller and c.started_at >= since - timedelta(seconds=2)]
                done = [c for c in found if c.ended_at is not None
                        and (c.connected_seq is None or c.recording_path)]
                if done:
                    assert len(found) == 1, f"one call made {len(found)} cases"
                    return done[0]
                time.sleep(0.3)
            raise AssertionError(f"no finished case for {caller}; saw {found!r}")
        finally:
            engine.dispose()

    def wait_no_channels(self, timeout_s: float = 15.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            count = instance.channel_count(self.config)
            if count == 0 or time.monotonic() > deadline:
                return count
            time.sleep(0.3)

    def wait_mirror(self, phone: str = "13700000201", timeout_s: float = 20.0) -> None:
        """Until the service has pushed the chains into Asterisk's globals (it does so after every AMI login)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if phone in mirrored_chains(self.config).values():
                return
            time.sleep(0.3)
        raise AssertionError("the service never mirrored the chains into Asterisk's globals")

    def restart_service(self, env: dict[str, str] | None = None) -> None:
        instance.stop_service(self.config)
        instance.start_service(self.config, env=env or self.env)


def kill_service(line: Hotline) -> None:
    """SIGKILL the whole service, watchdog and worker: a crash, no clean-up."""
    for pid in (instance.service_pid(line.config), instance.worker_pid(line.config)):
        if pid:
            os.kill(pid, signal.SIGKILL)


# -- one sandboxed hotline for a session (the integration and the attack suites) ----
def require_tools(*tools: str, what: str = "integration tests") -> None:
    """Skip (fail under CI) unless we are root and every tool is installed."""
    missing = [t for t in tools if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        reason = f"{what} need root and {', '.join(missing) or 'nothing else'}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run them: scripts/setup.sh installs everything)")
        pytest.skip(reason)


def ports_taken(ports: dict[str, int]) -> list[str]:
    """The instance's TCP ports something else already listens on (a leftover run)."""
    taken = []
    for name in ("sip", "ami", "agi", "surgeon_phones"):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", ports[name]))
            except OSError:
                taken.append(f"{name} {ports[name]}")
    return taken


@contextmanager
def running_hotline(name: str, ports: dict[str, int], *, what: str = "integration tests",
                    unset: tuple[str, ...] = ()) -> Iterator[Hotline]:
    """Sandboxed Asterisk 22 + the service (SQLite, the test network) as instance
    `name` on `ports`; everything stopped and removed afterwards, whatever failed."""
    require_tools("baresip", "debootstrap", "espeak-ng", "sox", "unshare", what=what)
    taken = ports_taken(ports)
    if taken:
        # Another Asterisk or service on these ports would answer in place of
        # ours (wrong secrets, wrong database): say so instead of failing oddly.
        pytest.fail(f"ports already in use: {', '.join(taken)} -- a leftover run? "
                    "(set HOTLINE_TEST_PORT_BASE to move them)", pytrace=False)
    var_dir = Path(tempfile.mkdtemp(prefix=f"hl-{name}-", dir="/tmp"))
    env = {
        **os.environ,
        "HOTLINE_VAR_DIR": str(var_dir),
        "HOTLINE_INSTANCE": name,
        "HOTLINE_MENU_FILE": str(HERE / "menu-test.toml"),
        # The tests read Asterisk's dialplan trace (full.log); production keeps it off.
        "HOTLINE_ASTERISK_FULL_LOG": "1",
        **{f"HOTLINE_PORT_{k.upper()}": str(v) for k, v in ports.items()},
    }
    for key in ("HOTLINE_DATABASE_URL", "HOTLINE_CONFIG", *unset):
        env.pop(key, None)
    config = load_config(env=env)
    try:
        instance.prepare(config, log=lambda line: None)
        seed_test_network(config.db_url)
        instance.start_asterisk(config)
        instance.start_service(config, env=env)
        yield Hotline(config, env, var_dir / "calls")
    finally:
        instance.stop_service(config)
        instance.stop_asterisk(config)
        if not os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            shutil.rmtree(var_dir, ignore_errors=True)
            # The default key ring lives beside the runtime dir, not in it.
            shutil.rmtree(config.data_key_path.parent.parent, ignore_errors=True)


class LogTail:
    """What a log file gained since this object was made."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0

    def new(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", errors="replace")

    def wait_for(self, predicate, timeout_s: float = 10.0) -> str:
        """The new text once `predicate(text)` holds (Asterisk's logger writes asynchronously)."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.new()
            if predicate(text) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)
