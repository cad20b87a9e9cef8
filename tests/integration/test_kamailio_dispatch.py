"""The Kamailio front door for real: calls through it to two nodes, one node killed and brought back.

Real Kamailio (Debian's package, started by cluster/kamailio.py) in front of
two SIPp UAS processes that stand in for Asterisk nodes
(sipp/frontdoor_node.xml: OPTIONS 200; INVITE 401 challenge, then 100/180/200,
ACK, BYE) and a SIPp caller (sipp/frontdoor_caller.xml) that answers the
challenge and hangs up itself. Every call is counted: placed, completed, and
at which node its INVITE, ACK and BYE arrived.

Dispatch hashes over Call-ID, so the tests choose Call-IDs (SIPp -cid_str)
and ask Kamailio (`dispatcher.hash`) which slot a Call-ID falls in; which
node a slot means is learned from the first calls.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from cluster import kamailio
from cluster.kamailio import FrontDoor, FrontDoorError
from conftest_support import require_tools

pytestmark = pytest.mark.integration

SIPP = "/usr/bin/sipp"
SIPP_DIR = Path(__file__).resolve().parent / "sipp"
HOST = "127.0.0.1"
SECRET = "fd-test-secret"
# Ports: HOTLINE_TEST_PORT_BASE + 900..949 (see the brief of issue 10).
_BASE = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000")) + 900
PORTS = {"front": _BASE, "a": _BASE + 1, "b": _BASE + 2, "caller": _BASE + 3, "spare": _BASE + 4,
         "media_a": _BASE + 10, "media_b": _BASE + 20, "media_caller": _BASE + 30}
FAILOVER_S = 2.0
PROBE_S = 2
# Waits for probes to change a node's state: a few probe rounds.
STATE_WAIT_S = 6 * (PROBE_S + FAILOVER_S)


@dataclass
class Calls:
    """One SIPp caller run: the Call-IDs it placed and the ones that completed."""

    placed: list[str]
    completed: list[str]
    returncode: int
    output: str


class NodeProcess:
    """One stand-in Asterisk node: a SIPp UAS we can SIGKILL and start again."""

    def __init__(self, name: str, workdir: Path):
        self.name = name
        self.workdir = workdir
        self.port = PORTS[name]
        self.logs: list[Path] = []
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        log = self.workdir / f"node-{self.name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.proc = subprocess.Popen(
            [SIPP, "-sf", str(SIPP_DIR / "frontdoor_node.xml"), "-i", HOST, "-p", str(self.port),
             "-mp", str(PORTS[f"media_{self.name}"]), "-set", "secret", SECRET,
             "-trace_logs", "-log_file", str(log), "-nostdin", "-nd"],
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def kill(self) -> None:
        """SIGKILL: a node that dies, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def events(self) -> dict[str, list[str]]:
        """{call-id: [event, ...]} from every log of this node (INVITE, AUTH ok=..., ACK, BYE)."""
        found: dict[str, list[str]] = defaultdict(list)
        for log in self.logs:
            if not log.exists():
                continue
            for line in log.read_text(errors="replace").splitlines():
                parts = line.split()
                if len(parts) >= 2 and parts[0] in ("INVITE", "AUTH", "ACK", "BYE"):
                    found[parts[1]].append(" ".join([parts[0], *parts[2:]]))
        return found


@dataclass
class Rig:
    front: FrontDoor
    nodes: dict[str, NodeProcess]
    workdir: Path

    def place_calls(self, prefix: str, count: int, rate: int = 10) -> Calls:
        """`count` calls with Call-IDs prefix-1..prefix-count; returns once all ended (bounded)."""
        log = self.workdir / f"caller-{prefix}.log"
        out = subprocess.run(
            [SIPP, f"{HOST}:{self.front.port}", "-sf", str(SIPP_DIR / "frontdoor_caller.xml"),
             "-i", HOST, "-p", str(PORTS["caller"]), "-mp", str(PORTS["media_caller"]),
             "-au", "caller", "-ap", SECRET, "-m", str(count), "-r", str(rate),
             "-cid_str", f"{prefix}-%u", "-trace_logs", "-log_file", str(log),
             "-nostdin", "-nd", "-timeout", "60s", "-timeout_error"],
            cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
        lines = log.read_text(errors="replace").splitlines() if log.exists() else []
        return Calls(placed=[ln.split()[1] for ln in lines if ln.startswith("placed ")],
                     completed=[ln.split()[1] for ln in lines if ln.startswith("completed ")],
                     returncode=out.returncode, output=(out.stdout + out.stderr)[-2000:])

    def slot(self, call_id: str) -> int:
        """The dispatcher slot Kamailio hashes `call_id` to (as ds_select_dst algorithm 0 does)."""
        out = subprocess.run([kamailio.KAMCMD, "-s", f"unixs:{self.front.ctl_socket}",
                              "dispatcher.hash", str(len(self.nodes)), call_id],
                             capture_output=True, text=True, timeout=10, check=True)
        return int(re.search(r"slot:\s*(\d+)", out.stdout).group(1))

    def prefix_whose_first_call_is_in(self, slot: int, tag: str) -> str:
        for n in range(200):
            prefix = f"{tag}{n}"
            if self.slot(f"{prefix}-1") == slot:
                return prefix
        raise AssertionError(f"no Call-ID prefix found for slot {slot}")

    def node_of(self, call_id: str) -> list[str]:
        """The nodes whose log shows `call_id` at all."""
        return [name for name, node in self.nodes.items() if call_id in node.events()]

    def wait_states(self, want: dict[str, str]) -> dict[str, str]:
        deadline = time.monotonic() + STATE_WAIT_S
        while True:
            states = kamailio.node_states(self.front)
            if all(states[k] == v for k, v in want.items()) or time.monotonic() > deadline:
                return states
            time.sleep(0.3)

    def kamailio_log(self) -> str:
        return self.front.log_file.read_text(errors="replace") if self.front.log_file.exists() else ""


def _require() -> None:
    require_tools("kamailio", "kamcmd", "sipp", what="front door tests")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    _require()
    # The control socket path must stay short: a run dir of our own under /tmp.
    run_dir = Path(f"/tmp/hl-fd-{PORTS['front']}")
    front = FrontDoor(HOST, PORTS["front"], [("a", HOST, PORTS["a"]), ("b", HOST, PORTS["b"])],
                      run_dir, probe_interval_s=PROBE_S, failover_timeout_s=FAILOVER_S)
    kamailio.stop(front)  # a leftover of an interrupted run
    nodes = {name: NodeProcess(name, tmp_path) for name in ("a", "b")}
    rig = Rig(front, nodes, tmp_path)
    try:
        for node in nodes.values():
            node.start()
        kamailio.start(front)
        yield rig
    finally:
        kamailio.stop(front)
        for node in nodes.values():
            node.kill()
        if os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            print(f"front door run dir kept: {run_dir}")


def assert_all_completed(calls: Calls, count: int) -> None:
    assert len(calls.placed) == count, f"placed {len(calls.placed)} of {count}: {calls.output}"
    assert sorted(calls.completed) == sorted(calls.placed), \
        f"lost calls: {sorted(set(calls.placed) - set(calls.completed))}; sipp said: {calls.output}"
    assert calls.returncode == 0, calls.output


def assert_whole_call_at(rig: Rig, call_id: str, node: str) -> None:
    """The call's INVITE (challenged, then authenticated), ACK and BYE all reached `node`, nothing the other."""
    assert rig.node_of(call_id) == [node], f"{call_id} seen at {rig.node_of(call_id)}, expected {node}"
    events = rig.nodes[node].events()[call_id]
    assert events == ["INVITE ruser=96608 from=13612340000", "AUTH ok=true", "ACK", "BYE"], events


def test_calls_spread_fail_over_and_come_back(rig: Rig) -> None:
    total_placed = total_completed = 0

    # 1. Both nodes up: the calls reach both, each whole call at one node.
    assert rig.wait_states({"a": "active", "b": "active"}) == {"a": "active", "b": "active"}
    calls = rig.place_calls("spread", 12)
    assert_all_completed(calls, 12)
    total_placed, total_completed = total_placed + len(calls.placed), total_completed + len(calls.completed)
    slot_to_node: dict[int, str] = {}
    for call_id in calls.completed:
        (node,) = rig.node_of(call_id)
        assert_whole_call_at(rig, call_id, node)
        # Call-ID hashing: one slot, one node, every time.
        assert slot_to_node.setdefault(rig.slot(call_id), node) == node
    assert set(slot_to_node.values()) == {"a", "b"}, f"calls did not reach both nodes: {slot_to_node}"
    slot_of = {node: slot for slot, node in slot_to_node.items()}

    # 2. Node A dies. The very next call hashes to A: it must still complete,
    #    through B, after the failover timeout; so must every call after it.
    first_after_kill = rig.prefix_whose_first_call_is_in(slot_of["a"], "kill")
    rig.nodes["a"].kill()
    calls = rig.place_calls(first_after_kill, 8)
    assert_all_completed(calls, 8)
    total_placed, total_completed = total_placed + len(calls.placed), total_completed + len(calls.completed)
    for call_id in calls.completed:
        assert_whole_call_at(rig, call_id, "b")
    assert f"INVITE failed over to node {rig.front.node_uri(rig.front.nodes[1])}" in rig.kamailio_log()
    assert rig.wait_states({"a": "inactive"}) == {"a": "inactive", "b": "active"}

    # 3. Node A comes back: the probes mark it active and it takes its calls again.
    rig.nodes["a"].start()
    assert rig.wait_states({"a": "active"}) == {"a": "active", "b": "active"}
    back = rig.prefix_whose_first_call_is_in(slot_of["a"], "back")
    calls = rig.place_calls(back, 6)
    assert_all_completed(calls, 6)
    total_placed, total_completed = total_placed + len(calls.placed), total_completed + len(calls.completed)
    assert_whole_call_at(rig, f"{back}-1", "a")
    for call_id in calls.completed:
        assert_whole_call_at(rig, call_id, {v: k for k, v in slot_of.items()}[rig.slot(call_id)])

    assert (total_placed, total_completed) == (26, 26)


def test_front_door_answers_options_itself_and_refuses_other_methods(rig: Rig) -> None:
    def ask(method: str) -> str:
        request = (f"{method} sip:{rig.front.address} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {HOST}:{PORTS['caller']};branch=z9hG4bK-fd-{method.lower()}\r\n"
                   f"From: <sip:probe@{HOST}>;tag=fd1\r\nTo: <sip:{rig.front.address}>\r\n"
                   f"Call-ID: fd-{method.lower()}-1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n"
                   "Content-Length: 0\r\n\r\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, PORTS["caller"]))
            sock.settimeout(5)
            sock.sendto(request.encode(), (HOST, rig.front.port))
            return sock.recv(65535).decode(errors="replace").split("\r\n", 1)[0]

    assert ask("OPTIONS") == "SIP/2.0 200 OK"
    assert ask("REGISTER").startswith("SIP/2.0 405")
    assert ask("MESSAGE").startswith("SIP/2.0 405")
    # No node left: the front door says so to whoever probes it.
    for node in rig.nodes.values():
        node.kill()
    assert rig.wait_states({"a": "inactive", "b": "inactive"}) == {"a": "inactive", "b": "inactive"}
    assert ask("OPTIONS").startswith("SIP/2.0 503")


def test_a_caller_cannot_steer_a_request_past_the_nodes(rig: Rig) -> None:
    """An in-dialog-looking request routed through us to an address of the caller's choice is refused."""
    target = ("127.0.0.1", PORTS["spare"])
    bye = (f"BYE sip:victim@{target[0]}:{target[1]} SIP/2.0\r\n"
           f"Via: SIP/2.0/UDP {HOST}:{PORTS['caller']};branch=z9hG4bK-fd-steer\r\n"
           f"Route: <sip:{rig.front.address};lr>\r\n"
           f"From: <sip:13612340000@{HOST}>;tag=fd2\r\nTo: <sip:victim@{target[0]}>;tag=fd3\r\n"
           "Call-ID: fd-steer-1\r\nCSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as victim, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as caller:
        victim.bind(target)
        victim.settimeout(1.5)
        caller.bind((HOST, PORTS["caller"]))
        caller.settimeout(5)
        caller.sendto(bye.encode(), (HOST, rig.front.port))
        assert caller.recv(65535).decode(errors="replace").startswith("SIP/2.0 403")
        with pytest.raises(TimeoutError):
            victim.recv(65535)
    # The refused request never reached a node either.
    assert all("fd-steer-1" not in node.events() for node in rig.nodes.values())


def test_start_refuses_a_taken_port_and_stop_is_idempotent(tmp_path: Path) -> None:
    _require()
    front = FrontDoor(HOST, PORTS["spare"], [("a", HOST, PORTS["a"])],
                      Path(f"/tmp/hl-fd-{PORTS['spare']}"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((HOST, PORTS["spare"]))
        with pytest.raises(FrontDoorError, match="already in use"):
            kamailio.start(front)
    assert kamailio.running(front) is None
    assert kamailio.stop(front) is False
    with pytest.raises(FrontDoorError, match="not running"):
        kamailio.node_states(front)


def test_start_says_when_kamailio_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kamailio, "KAMAILIO", "/nonexistent/kamailio")
    front = FrontDoor(HOST, PORTS["spare"], [("a", HOST, PORTS["a"])], Path(f"/tmp/hl-fd-{PORTS['spare']}"))
    with pytest.raises(FrontDoorError, match="install the kamailio package"):
        kamailio.start(front)


def test_start_says_when_kamailio_exits_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    _require()
    front = FrontDoor(HOST, PORTS["spare"], [("a", HOST, PORTS["a"])], Path(f"/tmp/hl-fd-{PORTS['spare']}"))
    good = kamailio.render_files

    def broken(fd: FrontDoor) -> dict[str, str]:
        files = good(fd)
        return {**files, "kamailio.cfg": files["kamailio.cfg"] + "\nno_such_parameter=1\n"}

    monkeypatch.setattr(kamailio, "render_files", broken)
    try:
        with pytest.raises(FrontDoorError, match="exited during start"):
            kamailio.start(front)
    finally:
        kamailio.stop(front)
    assert kamailio.running(front) is None
