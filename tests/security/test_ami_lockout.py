"""The AMI lockout (issue 18, item 7), against the demo as `hotline up` runs it.

Idle unauthenticated sockets must not keep the service or the console from
logging in, and guessing secrets must be banned by what the demo runs (the
instance's fail2ban, hotline/fail2ban.py). The attacker speaks from
demo_support.ATTACKER, never from 127.0.0.1; every ban is lifted and checked
gone afterwards.
"""
from __future__ import annotations

import socket
import subprocess
import time

import pytest

from attack_support import AmiSession, console_account, refused, service_account
from demo_support import ATTACKER, local_route
from hotline import instance

pytestmark = pytest.mark.integration


def _idle_sockets(port: int, count: int, source: str = ATTACKER) -> list[socket.socket]:
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        held.append(sock)
    return held


def _connected_users(config) -> str:
    return "\n".join(instance.asterisk_cli(config, "manager show connected"))


def test_idle_unauthenticated_sockets_cannot_lock_the_service_or_console_out(demo):
    config = demo.config
    held = _idle_sockets(config.ports.ami, 70)
    try:
        user, secret = service_account(config)
        with AmiSession(config.ports.ami) as ami:
            assert ami.login(user, secret).get("Response") == "Success"
        console_user, console_secret = console_account(config)
        with AmiSession(config.ports.ami) as ami:
            assert ami.login(console_user, console_secret).get("Response") == "Success"
        # A restarted service logs in again while the sockets are held.
        instance.stop_service(config)
        instance.start_service(config, env=demo.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and user not in _connected_users(config):
            time.sleep(0.5)
        assert user in _connected_users(config), "the restarted service could not log in"
    finally:
        for sock in held:
            sock.close()


def test_an_idle_unauthenticated_socket_is_dropped_within_seconds(demo):
    [sock] = _idle_sockets(demo.config.ports.ami, 1)
    try:
        sock.settimeout(20)
        started = time.monotonic()
        data = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        waited = time.monotonic() - started
    finally:
        sock.close()
    assert data.startswith(b"Asterisk Call Manager/")
    assert waited < 10, f"an idle socket was held {waited:.1f} s"


def test_guessing_ami_secrets_is_banned_by_the_demos_fail2ban(demo):
    from hotline import fail2ban

    config = demo.config
    assert fail2ban.running(config), "`hotline up` runs no fail2ban"
    assert fail2ban.banned(config) == []
    try:
        for attempt in range(fail2ban.MAXRETRY + 2):
            try:
                with AmiSession(config.ports.ami, timeout_s=3, source=ATTACKER) as ami:
                    # Before the ban each guess is refused as a wrong secret.
                    assert refused(ami.login("hotline", f"guess-{attempt}"))
            except OSError:
                break  # banned already
            time.sleep(0.3)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and ATTACKER not in fail2ban.banned(config):
            time.sleep(0.5)
        assert fail2ban.banned(config) == [ATTACKER]
        assert "blackhole" in local_route(ATTACKER)
        with pytest.raises(OSError):
            AmiSession(config.ports.ami, timeout_s=3, source=ATTACKER)
        # The service and the console are never banned: they log in as before.
        user, secret = service_account(config)
        with AmiSession(config.ports.ami) as ami:
            assert ami.login(user, secret).get("Response") == "Success"
    finally:
        subprocess.run(["fail2ban-client", "-c", str(fail2ban.conf_dir(config)), "-s",
                        str(fail2ban.socket_path(config)), "set", fail2ban.JAIL, "unbanip", ATTACKER],
                       capture_output=True, timeout=30)
    assert "blackhole" not in local_route(ATTACKER)
