"""Start a long-running background process that outlives its starter, without a zombie.

A plain Popen child that we never wait for trips ResourceWarning and, when it
dies, lingers as a zombie that still 'exists' for kill(pid, 0). Started from a
short-lived shell instead, it is re-parented to init, which reaps it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

_LAUNCHER = '"$@" </dev/null >>"$HOTLINE_SPAWN_LOG" 2>&1 & echo $!'


def spawn_detached(argv: list[str], log_file: Path, env: dict[str, str] | None = None) -> int:
    """Run `argv` in a new session, output appended to `log_file`; returns its pid."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    child_env["HOTLINE_SPAWN_LOG"] = str(log_file)
    out = subprocess.run(["sh", "-c", _LAUNCHER, "sh", *argv], env=child_env,
                         capture_output=True, text=True, check=True, start_new_session=True)
    return int(out.stdout.strip())


def state(pid: int) -> str | None:
    """The process state letter from /proc (R, S, Z...), or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    return state(pid) not in (None, "Z", "X")


def terminate(pid: int, timeout_s: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`; returns once the process is gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        if time.monotonic() > deadline:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + 5
        time.sleep(0.05)


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
