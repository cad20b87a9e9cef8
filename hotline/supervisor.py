"""`hotline serve`: a small supervisor around the service process (the worker).

The worker touches a heartbeat file every half second from its event loop. The
supervisor restarts a worker that exits and SIGKILLs one whose heartbeat goes
stale (SIGSTOP, a blocked event loop, a deadlock) — killing closes its sockets,
so Asterisk's waiting AGI requests return at once and the dialplan falls back
to the chain mirror, instead of a caller hanging in silence. This is the same
job systemd's WatchdogSec does in production; here it needs no systemd.
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, argv: list[str], heartbeat_file: Path, stale_s: float = 3.0,
                 start_grace_s: float = 15.0, restart_backoff_s: tuple[float, ...] = (0.2, 1, 2, 5)):
        self.argv = argv
        self.heartbeat_file = heartbeat_file
        self.stale_s = stale_s
        self.start_grace_s = start_grace_s
        self.restart_backoff_s = restart_backoff_s
        self._stopping = False
        self._worker: subprocess.Popen | None = None
        self.restarts = 0

    def _on_signal(self, signum, _frame) -> None:
        self._stopping = True
        if self._worker is not None and self._worker.poll() is None:
            self._worker.send_signal(signal.SIGTERM)

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        failures = 0
        while not self._stopping:
            started = time.monotonic()
            self.heartbeat_file.unlink(missing_ok=True)
            self._worker = subprocess.Popen(self.argv)
            logger.info("worker started, pid %d", self._worker.pid)
            code = self._watch(self._worker, started)
            if self._stopping:
                break
            self.restarts += 1
            failures = failures + 1 if time.monotonic() - started < 30 else 0
            delay = self.restart_backoff_s[min(failures, len(self.restart_backoff_s) - 1)]
            logger.warning("worker pid %d ended (%s); restarting in %.1fs",
                           self._worker.pid, code, delay)
            time.sleep(delay)
        if self._worker is not None:
            try:
                self._worker.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self._worker.kill()
                self._worker.wait()
        self.heartbeat_file.unlink(missing_ok=True)
        return 0

    def _watch(self, worker: subprocess.Popen, started: float) -> str:
        while True:
            code = worker.poll()
            if code is not None:
                return f"exit code {code}"
            if not self._stopping:
                try:
                    age = time.time() - self.heartbeat_file.stat().st_mtime
                except FileNotFoundError:  # not up yet: allowed for start_grace_s
                    age = time.monotonic() - started - self.start_grace_s + self.stale_s
                if age > self.stale_s:
                    logger.error("worker pid %d silent for %.1fs: killing it", worker.pid, age)
                    worker.kill()
                    worker.wait()
                    return "killed by the watchdog"
            time.sleep(0.2)


def touch(path: Path) -> None:
    try:
        os.utime(path)
    except FileNotFoundError:
        path.write_text(f"{os.getpid()}\n")


def worker_argv(instance: str, config_file: str | None) -> list[str]:
    argv = [sys.executable, "-m", "hotline"]
    if config_file:
        argv += ["--config", config_file]
    return argv + ["--instance", instance, "serve", "--worker"]
