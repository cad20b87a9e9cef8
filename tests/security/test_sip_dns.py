"""Issue 18, item 10 -- no DNS lookup on the call path: a surgeon's phone rings within 1 s of Dial().

Before, Asterisk bound each call's RTP to 0.0.0.0 and so, for every RTCP
session, looked up its own address: its host name (absent from the sandbox
root's hosts file), then A.ROOT-SERVERS.NET (acl.c ast_find_ourip). With a
name server that does not answer, each lookup stalled Dial() for the
resolver's timeout -- 5 s and more before the INVITE left.

The whole hotline (sandboxed Asterisk, service, baresip phones) runs here in
a network namespace of its own where loopback works and the name server is
a black hole (the default route leads into `lo`, where the packets are
lost): a lookup there hangs for its whole timeout, the worst a real network
does. The calls are placed
by tests/security/dns_blackhole_calls.py inside it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attack_support import require_tools

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parent / "dns_blackhole_calls.py"


@pytest.fixture(scope="module")
def blackholed_netns():
    """A network namespace: loopback up, every other address routed into it and lost.

    A packet to a non-local address sent down `lo` is dropped without an
    error, so a lookup waits for the resolver's whole timeout (no dummy or
    veth links, nor a firewall, are needed for that).
    """
    require_tools("ip", "baresip", "chroot")
    name = f"hl-dns-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for cmd in (["link", "set", "lo", "up"], ["route", "add", "default", "dev", "lo"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@pytest.fixture(scope="module")
def dns_run(blackholed_netns, tmp_path_factory) -> dict:
    """What dns_blackhole_calls.py measured in the namespace (once for the module)."""
    out = tmp_path_factory.mktemp("dns") / "measured.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    run = subprocess.run(["ip", "netns", "exec", blackholed_netns, sys.executable, str(SCRIPT),
                          str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    measured = json.loads(out.read_text(encoding="utf-8"))
    print(f"measured with DNS unreachable: {measured}")
    return measured


def test_a_surgeon_rings_within_1s_of_dial_with_dns_unreachable(dns_run):
    measured = dns_run
    # The premise: in there a lookup really stalls (it is not refused at once).
    assert measured["dns_stall_s"] >= 4.0, measured
    assert measured["errors"] == [], measured
    assert measured["dials"] == measured["rings"] == 3, measured
    assert len(measured["dial_to_ring_s"]) == 3, measured
    assert max(measured["dial_to_ring_s"]) < 1.0, measured
    # And Asterisk looked nothing up on the way.
    assert measured["lookups_logged"] == [], measured


def test_asterisk_starts_without_waiting_for_dns(dns_run):
    """pjproject looks up the host's own name (IPv4 and IPv6) at start: the root's hosts file answers."""
    assert dns_run["boot_s"] < 5.0, dns_run
