"""The demo as `bash scripts/demo.sh` runs it, for the attack suite (issue 18, items 6 and 7).

`hotline up` in a subprocess: Asterisk, the service, the console and the
instance's fail2ban, with production's logging (no HOTLINE_ASTERISK_FULL_LOG,
which the other suites switch on) and the default key ring. The test network
is seeded before `up --no-demo`, so the integration suite's phones work.

Ports: HOTLINE_TEST_PORT_BASE + 408..473, RTP + 100..199 (the integration and
attack suites use + 38..73 and + 538..573). The AMI attacker speaks from
ATTACKER, an address no other suite uses; every ban is lifted afterwards.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from conftest_support import HERE as INTEGRATION_DIR
from conftest_support import Hotline, ports_taken, require_tools, seed_test_network
from hotline.config import PROJECT_DIR, load_config

BASE = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000"))
PORTS = {"sip": BASE + 460, "ami": BASE + 438, "agi": BASE + 473, "surgeon_phones": BASE + 470,
         "console": BASE + 408, "rtp_start": BASE + 100, "rtp_end": BASE + 199}
ATTACKER = "127.0.11.66"


def hotline_cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    out = subprocess.run([sys.executable, "-m", "hotline", *args], env=env, cwd=PROJECT_DIR,
                         capture_output=True, text=True, timeout=timeout_s)
    assert out.returncode == 0, f"hotline {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
    return out.stdout


def local_route(address: str) -> str:
    """What the kernel's local table says about `address` (a ban is a blackhole there)."""
    return subprocess.run(["ip", "route", "show", "table", "local", address],
                          capture_output=True, text=True).stdout.strip()


@contextmanager
def running_demo(phones_dir: Path) -> Iterator[Hotline]:
    """The demo instance `files` on PORTS; stopped and removed afterwards, whatever failed."""
    require_tools("baresip", "debootstrap", "espeak-ng", "sox", "unshare", "fail2ban-client", "ip",
                  what="the files-at-rest suite")
    taken = ports_taken(PORTS)
    if taken:
        pytest.fail(f"ports already in use: {', '.join(taken)} -- a leftover run?", pytrace=False)
    var_dir = Path(tempfile.mkdtemp(prefix="hl-files-", dir="/tmp"))
    env = {
        **os.environ,
        "HOTLINE_VAR_DIR": str(var_dir),
        "HOTLINE_INSTANCE": "files",
        "HOTLINE_MENU_FILE": str(INTEGRATION_DIR / "menu-test.toml"),
        "HOTLINE_RECONCILE_EVERY_S": "5",
        **{f"HOTLINE_PORT_{k.upper()}": str(v) for k, v in PORTS.items()},
    }
    for key in ("HOTLINE_DATABASE_URL", "HOTLINE_CONFIG", "HOTLINE_ASTERISK_FULL_LOG",
                "HOTLINE_DATA_KEY_FILE", "HOTLINE_AGI_ALLOWED_HOSTS"):
        env.pop(key, None)
    config = load_config(env=env)
    try:
        hotline_cli(env, "db")
        seed_test_network(config.db_url)
        hotline_cli(env, "up", "--no-demo")
        yield Hotline(config, env, phones_dir)
    finally:
        subprocess.run([sys.executable, "-m", "hotline", "down"], env=env, cwd=PROJECT_DIR,
                       capture_output=True, timeout=120)
        subprocess.run(["ip", "route", "del", "blackhole", ATTACKER, "table", "local"],
                       capture_output=True)
        if not os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            shutil.rmtree(var_dir, ignore_errors=True)
            shutil.rmtree(config.data_key_path.parent.parent, ignore_errors=True)
