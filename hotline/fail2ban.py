"""The instance's own fail2ban: bans addresses that guess AMI secrets (`hotline up` / `down`).

deploy/fail2ban holds the filters and jails for an installed hotline, where
the system's fail2ban runs them. The demo has no system fail2ban of its own,
so `hotline up` starts one for the instance: a private configuration dir
(instance_dir/fail2ban), its socket and pid file in instance_dir/run, its log
in instance_dir/log/fail2ban.log, and one jail, `hotline-ami`, reading the
instance's security.log with the filter of deploy/fail2ban and the
`hotline-blackhole` action (a blackhole route: this machine has no iptables).

Surprising: ignoreip is the host's own 127.0.0.1 and ::1 only, not all of
127.0.0.0/8 as the installed jail has it: the service and the console log in
from 127.0.0.1, and any other loopback address is some local process that has
no business guessing AMI secrets -- the demo bans it.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from hotline.config import HotlineConfig
from hotline.instance import private_files
from hotline.sandbox import private_file

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "fail2ban"
JAIL = "hotline-ami"
FILTER = "hotline-asterisk-ami"
ACTION = "hotline-blackhole"
# Never banned: the service and the console log in to AMI from here.
OWN_ADDRESSES = ("127.0.0.1", "::1")
# Failed logins from one address within FINDTIME before it is banned for BANTIME.
MAXRETRY = 3
FINDTIME = "10m"
BANTIME = "1h"


class Fail2banError(RuntimeError):
    """The instance's fail2ban could not be started or asked."""


def conf_dir(config: HotlineConfig) -> Path:
    return config.instance_dir / "fail2ban"


def socket_path(config: HotlineConfig) -> Path:
    return config.instance_dir / "run" / "fail2ban.sock"


def pid_path(config: HotlineConfig) -> Path:
    return config.instance_dir / "run" / "fail2ban.pid"


def available() -> bool:
    """Whether this host can run the instance's fail2ban (installed, root, `ip`)."""
    return (os.geteuid() == 0 and shutil.which("fail2ban-client") is not None
            and shutil.which("ip") is not None)


def render(config: HotlineConfig, ignore: tuple[str, ...] = ()) -> Path:
    """Write the instance's fail2ban configuration dir; returns it.

    `ignore` adds addresses that are never banned (beside OWN_ADDRESSES).
    """
    for address in ignore:
        # One token each: the list goes into the jail file verbatim.
        if not address or any(ch.isspace() or ch in ";#%\n" for ch in address):
            raise ValueError(f"not an address to ignore: {address!r}")
    with private_files():  # also when not called by the CLI (umask 077 there already)
        return _render(config, ignore)


def _render(config: HotlineConfig, ignore: tuple[str, ...]) -> Path:
    root = conf_dir(config)
    for sub in ("", "filter.d", "action.d", "jail.d"):
        (root / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.copyfile(DEPLOY_DIR / "filter.d" / f"{FILTER}.conf", root / "filter.d" / f"{FILTER}.conf")
    shutil.copyfile(DEPLOY_DIR / "action.d" / f"{ACTION}.conf", root / "action.d" / f"{ACTION}.conf")
    log_file = private_file(config.instance_dir / "log" / "fail2ban.log")
    security_log = private_file(config.instance_dir / "log" / "security.log")
    (root / "fail2ban.conf").write_text(
        "# Rendered by `hotline up` for instance %s -- do not edit (hotline/fail2ban.py).\n"
        "[Definition]\nloglevel = INFO\nlogtarget = %s\nsocket = %s\npidfile = %s\n"
        "dbfile = %s\ndbpurgeage = 1d\n"
        % (config.instance, log_file, socket_path(config), pid_path(config),
           config.instance_dir / "lib" / "fail2ban.sqlite3"), encoding="utf-8")
    (root / "jail.conf").write_text(
        "# Rendered by `hotline up` for instance %s -- do not edit (hotline/fail2ban.py).\n"
        "[%s]\nenabled = true\nfilter = %s\nlogpath = %s\nbackend = polling\n"
        "action = %s\nmaxretry = %d\nfindtime = %s\nbantime = %s\nignoreip = %s\n"
        % (config.instance, JAIL, FILTER, security_log, ACTION, MAXRETRY, FINDTIME, BANTIME,
           " ".join((*OWN_ADDRESSES, *ignore))), encoding="utf-8")
    return root


def _client(config: HotlineConfig, *args: str, timeout_s: float = 30.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["fail2ban-client", "-c", str(conf_dir(config)), "-s", str(socket_path(config)),
         "-p", str(pid_path(config)), *args],
        capture_output=True, text=True, timeout=timeout_s)


def running(config: HotlineConfig) -> bool:
    if not socket_path(config).exists():
        return False
    try:
        return _client(config, "ping", timeout_s=10).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def start(config: HotlineConfig, ignore: tuple[str, ...] = ()) -> bool:
    """Start the instance's fail2ban with the AMI jail unless it runs; False if this host cannot."""
    if not available():
        return False
    if running(config):
        return True
    render(config, ignore)
    out = _client(config, "-x", "start")
    if out.returncode != 0 or not running(config):
        raise Fail2banError("fail2ban did not start: "
                            + (out.stderr or out.stdout).strip()[-300:])
    return True


def stop(config: HotlineConfig) -> bool:
    """Stop it (fail2ban lifts its bans as it stops); whether one was running."""
    if not running(config):
        return False
    _client(config, "stop")
    return True


def banned(config: HotlineConfig) -> list[str]:
    """The addresses the AMI jail bans now."""
    out = _client(config, "get", JAIL, "banip", timeout_s=10)
    if out.returncode != 0:
        raise Fail2banError((out.stderr or out.stdout).strip()[-300:])
    return out.stdout.split()
