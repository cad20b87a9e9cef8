"""Issue 9, part 4, live: a real call completes while hostile peers hold the service's FastAGI port.

The sandboxed Asterisk, the service as its own process and baresip phones
(tests/security/conftest.py). While the call runs, an attacker on this host
keeps 20 FastAGI connections open at all times -- half silent, half sending
garbage that never ends its environment -- reconnecting as soon as the
service drops one. The caller must still be routed by the service (not by the
dialplan's mirror or fallback), bridged and recorded.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from routing.escalation import AttemptOutcome as A

pytestmark = pytest.mark.integration

HOLDERS = 20


class FastAgiSiege:
    """Threads that each hold one FastAGI connection open with garbage, reconnecting when dropped."""

    def __init__(self, port: int, holders: int = HOLDERS) -> None:
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.opened = 0
        self.closed_by_server = 0
        self.server_said = b""
        self.threads = [threading.Thread(target=self._hold, args=(i,), daemon=True)
                        for i in range(holders)]

    def __enter__(self) -> FastAgiSiege:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)

    def _hold(self, index: int) -> None:
        junk = (b"agi_network: yes\nagi_network_script: call_start?linkedid=1.1\n"
                + os.urandom(64).replace(b"\n", b"x")) if index % 2 else b""
        while not self.stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    with self.lock:
                        self.opened += 1
                    if junk:
                        sock.sendall(junk)
                    sock.settimeout(0.2)
                    while not self.stop.is_set():
                        try:
                            data = sock.recv(4096)
                        except socket.timeout:
                            continue
                        with self.lock:
                            if data:
                                self.server_said += data
                            else:
                                self.closed_by_server += 1
                        if not data:
                            break
            except OSError:
                time.sleep(0.1)


def test_a_real_call_completes_while_hostile_peers_hold_fastagi(line):
    caller = "13611119001"
    service_log = line.config.instance_dir / "log" / "service.log"
    offset = service_log.stat().st_size
    with FastAgiSiege(line.config.ports.agi) as siege:
        time.sleep(1.0)  # the siege is in place before the call starts
        result, since = line.call(caller, press="1", surgeons="accept", talk_s=3)
        opened, dropped = siege.opened, siege.closed_by_server
    assert result.bridged_to == "13700000101"
    case = line.case_for(caller, since)
    # Routed by the service itself: a fallback or mirror call would be marked so.
    assert case.outcome == "connected" and not case.fallback
    assert [(a.phone, a.outcome) for a in case.attempts] == [("13700000101", A.ACCEPTED)]
    assert case.recording_path and Path(case.recording_path).stat().st_size > 1000
    # The attackers were let in (127.0.0.1 is allowed) but told nothing, and
    # every connection was cut within the 2 s environment deadline, over and over.
    assert siege.server_said == b""
    assert opened > HOLDERS and dropped >= opened - HOLDERS, (opened, dropped)
    new_log = service_log.read_bytes()[offset:].decode("utf-8", "replace")
    assert "dropped" in new_log
    assert "Traceback" not in new_log
