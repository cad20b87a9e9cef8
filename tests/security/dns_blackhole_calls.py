"""Place calls through a whole hotline whose DNS is unreachable; write what was measured as JSON.

Run by tests/security/test_sip_dns.py inside a network namespace of its own
(`ip netns exec`), where loopback works and every packet to a name server
vanishes, so a DNS lookup stalls for its whole timeout instead of failing
fast. Not a test by itself: the test judges the JSON.

    python dns_blackhole_calls.py OUT.json
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

SECURITY_DIR = Path(__file__).resolve().parent
for path in (SECURITY_DIR.parent.parent, SECURITY_DIR.parent / "integration", SECURITY_DIR):
    sys.path.insert(0, str(path))

from attack_support import PORTS  # noqa: E402
from conftest_support import running_hotline  # noqa: E402
from hotline import instance  # noqa: E402
from testphones.baresip import PhoneError  # noqa: E402

CALLS = 3
# A full.log line: [2026-12-08 03:22:53.363] VERBOSE[123][C-00000001] pbx.c: Executing [...] Dial(...)
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]")
_DIAL = re.compile(r'Executing \[[^\]]*\] Dial\("[^"]*", "PJSIP/(\d+)@surgeons')


def _stamp(line: str) -> float:
    """Epoch seconds of an Asterisk log line (the sandbox root's clock is UTC)."""
    found = _STAMP.match(line)
    assert found, line
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
        tzinfo=timezone.utc).timestamp()


def dns_stall_s(root: Path) -> float:
    """How long one lookup takes in the sandbox root (its resolv.conf, its hosts file)."""
    started = time.monotonic()
    subprocess.run(["chroot", str(root), "getent", "ahosts", "a.root-servers.net"],
                   capture_output=True, timeout=120)
    return time.monotonic() - started


def main(out: Path) -> None:
    report: dict[str, object] = {}
    start_asterisk = instance.start_asterisk

    def timed_start(config, *args, **kwargs):
        # Until Asterisk answers "fully booted": pjproject's look-ups of the
        # host's own name, if any, happen in there.
        started = time.monotonic()
        try:
            return start_asterisk(config, *args, **kwargs)
        finally:
            report["boot_s"] = time.monotonic() - started

    instance.start_asterisk = timed_start  # running_hotline starts it through this module
    with running_hotline("dns", PORTS, what="the DNS blackhole calls") as line:
        line.workdir.mkdir(parents=True, exist_ok=True)
        report["dns_stall_s"] = dns_stall_s(line.config.asterisk_root)
        full_log = line.config.instance_dir / "log" / "full.log"
        offset = full_log.stat().st_size if full_log.exists() else 0
        # Wall clock of each ring: time.monotonic() in Ring.at, moved by this offset.
        wall_minus_mono = time.time() - time.monotonic()
        rings, errors = [], []
        for n in range(CALLS):
            try:
                result, _ = line.call(f"1395550040{n}", press="2", surgeons="accept",
                                      talk_s=1.0, timeout_s=60)
            except PhoneError as exc:  # e.g. the caller not answered: the stall is in the answer
                errors.append(str(exc))
                continue
            finally:
                line.wait_no_channels(timeout_s=40)
            rings += [(r.number, r.at + wall_minus_mono) for r in result.rings]
        report["errors"] = errors
        with open(full_log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    dials = [(m.group(1), _stamp(entry)) for entry in text.splitlines()
             if (m := _DIAL.search(entry))]
    report["dials"] = len(dials)
    report["rings"] = len(rings)
    # Each Dial() is followed by its phone's ring, in order.
    report["dial_to_ring_s"] = [ring_at - dial_at
                                for (number, dial_at), (rung, ring_at) in zip(dials, rings)
                                if number == rung]
    report["lookups_logged"] = [entry for entry in text.splitlines()
                                if "Unable to lookup" in entry or "ROOT-SERVERS" in entry]
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    os.umask(0o077)
    main(Path(sys.argv[1]))
