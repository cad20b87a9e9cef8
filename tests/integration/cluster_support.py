"""Support for the cluster (HA) tests: a local cluster on its own database, SIPp call streams.

The cluster is the production set on loopback (cluster/local.py): Kamailio,
two sandboxed Asterisk nodes, two service instances, a PostgreSQL database
made for the test module and dropped afterwards.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, select, text

from bench.stats import parse_sipp_stats, sipp_totals
from cluster.local import ClusterLayout
from hotline import instance, proc, sandbox

ROOT = Path(__file__).resolve().parents[2]
SIPP = "/usr/bin/sipp"
SIPP_DIR = ROOT / "bench" / "sipp"
ADMIN_URL = os.environ.get("HOTLINE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def create_database(name: str) -> str:
    """A fresh PostgreSQL database for the cluster; its URL."""
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", name):
        raise ValueError(name)
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def drop_database(name: str) -> None:
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


def kill_service(layout: ClusterLayout, service: str) -> list[int]:
    """SIGKILL a service instance whole: its supervisor first (or it would restart the worker)."""
    config = layout.config(service)
    pids = [pid for pid in (instance.service_pid(config), instance.worker_pid(config)) if pid]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        deadline = time.monotonic() + 10
        while proc.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    return pids


def kill_node(layout: ClusterLayout, node: str) -> int:
    """SIGKILL a node's Asterisk (the sandbox's pid is Asterisk itself, exec'd)."""
    config = layout.config(node)
    running = sandbox.running_asterisk(config.asterisk_root, config.instance_dir)
    assert running is not None, f"{node} is not running"
    os.kill(running.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while running.alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    return running.pid


@dataclass
class StreamResult:
    callers: list[str]
    successful: int = 0
    failed: int = 0
    created: int = 0
    sipp_rc: int | None = None
    started: float = 0.0
    workdir: Path = field(default_factory=Path)


class CallStream:
    """SIPp callers at `rate` per second through the front door; a SIPp UAS answers as
    every surgeon (presses 1, talks `talk_ms`, hangs up). Runs in the background."""

    def __init__(self, layout: ClusterLayout, prefix: str, calls: int, rate: float = 1.0,
                 talk_ms: int = 4000, key: str = "2") -> None:
        self.layout = layout
        self.callers = [f"{prefix}{n:04d}" for n in range(calls)]
        self.rate = rate
        self.talk_ms = talk_ms
        self.key = key
        self.workdir = Path(tempfile.mkdtemp(prefix="ha-calls-", dir="/tmp"))
        self._surgeon: subprocess.Popen | None = None
        self._caller: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> "CallStream":
        layout, wd = self.layout, self.workdir
        media = layout.base_port + 60
        (wd / "calls.csv").write_text("SEQUENTIAL\n" + "".join(f"96608;{c};{self.key}\n" for c in self.callers))
        self._surgeon = subprocess.Popen(
            [SIPP, "-sf", str(SIPP_DIR / "surgeon.xml"), "-i", layout.config(layout.nodes[0]).surgeon_host,
             "-p", str(layout.surgeon_phones_port), "-mp", str(media + 100),
             "-set", "accept_ms", "300", "-set", "talk_ms", str(self.talk_ms),
             "-trace_stat", "-stf", str(wd / "surgeon_stat.csv"), "-fd", "1",
             "-nostdin", "-nd", "-max_socket", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        secret = layout.config(layout.nodes[0]).sip_secret()
        self.started = time.time()
        self._caller = subprocess.Popen(
            [SIPP, f"127.0.0.1:{layout.front_door_port}", "-sf", str(SIPP_DIR / "caller.xml"),
             "-inf", str(wd / "calls.csv"), "-i", "127.0.0.1", "-p", str(layout.base_port + 7),
             "-mp", str(media), "-au", "caller-info", "-ap", secret,
             "-set", "pre_ms", "800", "-recv_timeout", "40000",
             "-r", str(self.rate), "-rp", "1000", "-m", str(len(self.callers)),
             "-trace_stat", "-stf", str(wd / "caller_stat.csv"), "-fd", "1",
             "-trace_err", "-error_file", str(wd / "caller_err.log"),
             "-nostdin", "-nd", "-max_socket", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def wait(self, timeout_s: float = 240.0) -> StreamResult:
        assert self._caller is not None and self._surgeon is not None
        try:
            rc = self._caller.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._caller.kill()
            rc = self._caller.wait()
        time.sleep(1.5)  # the last stat line (-fd 1)
        for p in (self._surgeon,):
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        totals = sipp_totals(parse_sipp_stats(_read(self.workdir / "caller_stat.csv")))
        result = StreamResult(self.callers, totals["successful"], totals["failed"], totals["created"],
                              rc, self.started, self.workdir)
        return result

    def close(self) -> None:
        for p in (self._caller, self._surgeon):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        if not os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            shutil.rmtree(self.workdir, ignore_errors=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def cases_of(db_url: str, callers: list[str]) -> list[dict]:
    """The stored cases of these callers (one row each: linkedid, times, outcome fields)."""
    from db.repo import CASES

    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(CASES).where(CASES.c.caller_number.in_(callers))).mappings().all()
        return [dict(r) for r in rows]
    finally:
        engine.dispose()


def job_runs(log_text: str) -> list[dict]:
    """The `job run:` lines a service logged (hotline.jobs.log_job_runs)."""
    runs = []
    for m in re.finditer(r"job run: job=(\S+) instance=(\S+) due=(\S+) started=([0-9.-]+) "
                         r"ended=([0-9.]+) ok=(\S+)", log_text):
        runs.append({"job": m.group(1), "instance": m.group(2), "due": m.group(3),
                     "started": float(m.group(4)), "ended": float(m.group(5)), "ok": m.group(6)})
    return runs


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
