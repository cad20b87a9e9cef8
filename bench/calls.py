"""SIPp calls through the bench instance: the hotline flow and the static dialplan side by side. Not a test.

One level = SIPp callers at a fixed rate (bench/sipp/caller.xml, SIP INFO
DTMF: the menu key 2) against the number of one flow, with a fresh SIPp UAS
on the surgeons' trunk (bench/sipp/surgeon.xml) that answers, presses 1 and
hangs up after `talk_ms`. A call counts as completed only if both SIPp sides
finished it and Asterisk's CEL shows it bridged (BRIDGE_ENTER of its
linkedid); a level passes with every call completed and no channel left.

The post-dial delay of a call is the time from the caller sending its key to
the surgeon side receiving the INVITE (both logged with gettimeofday by SIPp
on this machine, paired by the caller number in From).
"""
from __future__ import annotations

import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.stats import parse_sipp_log, parse_sipp_stats, percentile, post_dial_delays, sipp_totals
from hotline.config import SURGEON_HOST

SIPP = "/usr/bin/sipp"
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
HOTLINE_NUMBER = "96608"


@dataclass
class Level:
    """What one SIPp run at one rate saw."""

    flow: str  # "hotline" or "static"
    rate: float
    calls: int
    caller_ok: int = 0
    caller_failed: int = 0
    surgeon_ok: int = 0
    surgeon_failed: int = 0
    bridged: int = 0
    peak_concurrent: int = 0
    leftover_channels: int = 0
    seconds: float = 0.0
    pdd_s: list[float] = field(default_factory=list)
    sipp_rc: int = 0

    @property
    def passed(self) -> bool:
        return (self.sipp_rc == 0 and self.caller_failed == 0 and self.surgeon_failed == 0
                and self.caller_ok == self.calls and self.bridged == self.calls
                and self.leftover_channels == 0)

    @property
    def pdd_median_ms(self) -> float | None:
        return percentile(self.pdd_s, 50) * 1000 if self.pdd_s else None


@dataclass
class CallSettings:
    sip_port: int
    surgeon_port: int
    caller_port: int
    media_base: int  # SIPp media ports: caller media_base, surgeon media_base + 50
    secret: str
    cel_db: Path
    pre_ms: int = 800
    accept_ms: int = 300
    talk_ms: int = 1000
    recv_timeout_ms: int = 30_000
    surgeon_host: str = SURGEON_HOST  # where the hotline's surgeons' trunk points


def bridged_calls(cel_db: Path, since: float, callers: set[str]) -> int:
    """Calls of `callers` that Asterisk's CEL shows bridged after `since` (epoch s)."""
    with sqlite3.connect(f"file:{cel_db}?mode=ro", uri=True, timeout=10) as db:
        rows = db.execute(
            "SELECT DISTINCT c.cidnum FROM cel b JOIN cel c ON c.linkedid = b.linkedid "
            "WHERE b.eventtype = 'BRIDGE_ENTER' AND b.eventtime >= ? AND c.eventtype = 'CHAN_START' "
            "AND c.eventtime >= ?", (since, since - 60)).fetchall()
    return len({r[0] for r in rows} & callers)


def run_level(settings: CallSettings, workdir: Path, flow: str, number: str, rate: float,
              calls: int, caller_prefix: str, channel_count) -> Level:
    """Place `calls` calls at `rate` per second to `number`; what happened to them."""
    workdir.mkdir(parents=True, exist_ok=True)
    level = Level(flow, rate, calls)
    callers = [f"{caller_prefix}{n:05d}" for n in range(calls)]
    inf = workdir / "calls.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{number};{c};2\n" for c in callers))
    surgeon = subprocess.Popen(
        [SIPP, "-sf", str(SIPP_DIR / "surgeon.xml"), "-i", settings.surgeon_host,
         "-p", str(settings.surgeon_port), "-mp", str(settings.media_base + 50),
         "-set", "accept_ms", str(settings.accept_ms), "-set", "talk_ms", str(settings.talk_ms),
         "-trace_logs", "-log_file", str(workdir / "surgeon.log"),
         "-trace_err", "-error_file", str(workdir / "surgeon_err.log"),
         "-trace_stat", "-stf", str(workdir / "surgeon_stat.csv"), "-fd", "1",
         "-nostdin", "-nd", "-max_socket", "5000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        since = time.time()
        began = time.monotonic()
        caller = _run_bounded(
            [SIPP, f"127.0.0.1:{settings.sip_port}", "-sf", str(SIPP_DIR / "caller.xml"),
             "-inf", str(inf), "-i", "127.0.0.1", "-p", str(settings.caller_port),
             "-mp", str(settings.media_base), "-au", "caller-info", "-ap", settings.secret,
             "-set", "pre_ms", str(settings.pre_ms), "-recv_timeout", str(settings.recv_timeout_ms),
             "-r", str(rate), "-rp", "1000", "-m", str(calls),
             "-trace_logs", "-log_file", str(workdir / "caller.log"),
             "-trace_err", "-error_file", str(workdir / "caller_err.log"),
             "-trace_stat", "-stf", str(workdir / "caller_stat.csv"), "-fd", "1",
             "-nostdin", "-nd", "-max_socket", "5000"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=calls / rate + settings.recv_timeout_ms / 1000 + 120)
        level.seconds = time.monotonic() - began
        level.sipp_rc = caller.returncode
        time.sleep(2.0)  # the UAS's last stat line (-fd 1) and the last CEL rows
    finally:
        surgeon.terminate()
        try:
            surgeon.wait(10)
        except subprocess.TimeoutExpired:
            surgeon.kill()
            surgeon.wait()
    caller_totals = sipp_totals(parse_sipp_stats(_read(workdir / "caller_stat.csv")))
    surgeon_totals = sipp_totals(parse_sipp_stats(_read(workdir / "surgeon_stat.csv")))
    level.caller_ok, level.caller_failed = caller_totals["successful"], caller_totals["failed"]
    level.surgeon_ok, level.surgeon_failed = surgeon_totals["successful"], surgeon_totals["failed"]
    level.peak_concurrent = caller_totals["peak_concurrent"]
    level.bridged = bridged_calls(settings.cel_db, since, set(callers))
    level.pdd_s = post_dial_delays(parse_sipp_log(_read(workdir / "caller.log"), "KEY"),
                                   parse_sipp_log(_read(workdir / "surgeon.log"), "INVITE"))
    deadline = time.monotonic() + 15
    while (left := channel_count()) and time.monotonic() < deadline:
        time.sleep(0.5)
    level.leftover_channels = left
    return level


def _run_bounded(cmd: list[str], *, timeout: float, **kw) -> subprocess.CompletedProcess:
    """Run SIPp; past `timeout` kill it and report rc -1 (calls still hanging: the level failed)."""
    try:
        return subprocess.run(cmd, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:  # subprocess.run has killed it already
        return subprocess.CompletedProcess(cmd, -1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""
