"""Tools of the attack suite: a bare AMI session, the generated manager.conf, fail2ban-regex, SIPp."""
from __future__ import annotations

import configparser
import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hotline.config import HotlineConfig

SECURITY_DIR = Path(__file__).resolve().parent
BASE = int(os.environ.get("HOTLINE_TEST_PORT_BASE", "15000"))
PORTS = {"sip": BASE + 560, "ami": BASE + 538, "agi": BASE + 573, "surgeon_phones": BASE + 570,
         "rtp_start": BASE + 600, "rtp_end": BASE + 799}
SIPP_PORT = BASE + 900  # SIPp's own SIP port; + 920 its media port


def require_tools(*tools: str) -> None:
    """Skip (fail under CI) unless we are root and every tool is installed."""
    from conftest_support import require_tools as require

    require(*tools, what="the attack suite")


PROJECT_DIR = SECURITY_DIR.parent.parent
FAIL2BAN_DIR = PROJECT_DIR / "deploy" / "fail2ban"
SIPP_DIR = SECURITY_DIR / "sipp"


# -- AMI ---------------------------------------------------------------------
class AmiSession:
    """A blocking AMI session that sends one action at a time and returns its response.

    Deliberately not ivr/ami.py: an attacker speaks raw AMI, and the tests must
    see exactly what Asterisk answers, not what our client makes of it.
    """

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 10.0,
                 source: str | None = None):
        # `source`: the local address to speak from (an attacker's own, never 127.0.0.1).
        self.sock = socket.create_connection((host, port), timeout=timeout_s,
                                             source_address=(source, 0) if source else None)
        self.file = self.sock.makefile("rb")
        self.banner = self.file.readline().decode("utf-8", "replace").strip()
        self._seq = 0

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            self.file.close()

    def __enter__(self) -> AmiSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def action(self, name: str, **headers: str) -> dict[str, str]:
        """Send an action; return the response's headers (events in between are skipped).

        A repeated header in the response (GetConfig's Line-... are unique, so
        this only loses duplicates nobody asserts on) keeps its last value.
        """
        self._seq += 1
        action_id = f"sec-{self._seq}"
        lines = [f"Action: {name}", f"ActionID: {action_id}"]
        lines += [f"{key}: {value}" for key, value in headers.items()]
        for line in lines:
            assert not set(line) & set("\r\n"), "the suite never sends CR/LF inside a header"
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        while True:
            block = self._read_block()
            if "Response" in block and block.get("ActionID", action_id) == action_id:
                return block

    def login(self, username: str, secret: str) -> dict[str, str]:
        return self.action("Login", Username=username, Secret=secret, Events="off")

    def _read_block(self) -> dict[str, str]:
        block: dict[str, str] = {}
        while True:
            raw = self.file.readline()
            if not raw:
                raise ConnectionError("AMI closed the connection")
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line == "":
                if block:
                    return block
                continue
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()


def refused(response: dict[str, str]) -> bool:
    return response.get("Response") == "Error"


def manager_conf(config: HotlineConfig) -> configparser.ConfigParser:
    """The generated manager.conf of the instance, as Asterisk reads it (';' comments)."""
    parser = configparser.ConfigParser(inline_comment_prefixes=(";",), comment_prefixes=(";",),
                                       strict=False, interpolation=None)
    parser.read_string((config.instance_dir / "etc" / "manager.conf").read_text(encoding="utf-8"))
    return parser


def service_account(config: HotlineConfig) -> tuple[str, str]:
    """(user, secret) of the service's AMI account, found the way the service finds it.

    The service logs in as AMI_USER with the secret in instance_dir/ami.secret;
    the account is the manager.conf section holding that secret.
    """
    from hotline.service import AMI_USER

    secret = (config.instance_dir / "ami.secret").read_text().strip()
    conf = manager_conf(config)
    users = [name for name in conf.sections() if conf.get(name, "secret", fallback=None) == secret]
    assert users == [AMI_USER], f"the service's secret belongs to {users}, not [{AMI_USER!r}]"
    return AMI_USER, secret


def console_account(config: HotlineConfig) -> tuple[str, str]:
    from console.livecalls import CONSOLE_AMI_USER

    return CONSOLE_AMI_USER, (config.instance_dir / "console-ami.secret").read_text().strip()


# -- fail2ban --------------------------------------------------------------------
@dataclass
class RegexResult:
    matched: int
    missed: int
    hosts: dict[str, int]  # address -> matched lines
    raw: dict


def fail2ban_regex(log: Path, filter_name: str) -> RegexResult:
    """Run `fail2ban-regex` with one of our filters against a captured log file.

    The counts come from its summary; the address of each matched line is the
    one fail2ban's own <ADDR> group captured (`-o ip`), i.e. what a jail would ban.
    """
    exe = shutil.which("fail2ban-regex")
    assert exe, "fail2ban-regex is not installed (apt-get install fail2ban)"
    filter_file = FAIL2BAN_DIR / "filter.d" / f"{filter_name}.conf"
    common = [exe, "--raw"]
    summary = subprocess.run([*common, "--print-no-missed", str(log), str(filter_file)],
                             capture_output=True, text=True, timeout=60)
    assert summary.returncode == 0, summary.stderr + summary.stdout
    lines = summary.stdout
    found = re.search(r"^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed", lines, re.M)
    assert found, lines
    ips = subprocess.run([*common, "-o", "ip", str(log), str(filter_file)],
                         capture_output=True, text=True, timeout=60)
    assert ips.returncode == 0, ips.stderr
    hosts: dict[str, int] = {}
    for ip in ips.stdout.split():
        hosts[ip] = hosts.get(ip, 0) + 1
    return RegexResult(int(found.group(3)), int(found.group(4)), hosts, {"summary": lines})


# -- SIPp ----------------------------------------------------------------------
@dataclass
class SippRun:
    returncode: int
    responses: list[str]  # status lines received, e.g. "SIP/2.0 401 Unauthorized"
    output: str


def run_sipp(sip_port: int, local_port: int, scenario: str, workdir: Path, *,
             keys: dict[str, str], auth: tuple[str, str] | None = None, calls: int = 1,
             rate: int = 10, timeout_s: int = 20, local_ip: str = "127.0.0.1",
             inf: Path | None = None) -> SippRun:
    """Run one SIPp scenario of tests/security/sipp against the instance; wait for it.

    `local_ip` is the attacker's address (any of 127/8 on one machine); `inf`
    a SIPp injection file (CSV: fields [field0].. per call).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    messages = workdir / "messages.log"
    cmd = ["sipp", f"127.0.0.1:{sip_port}", "-sf", str(SIPP_DIR / scenario),
           "-i", local_ip, "-p", str(local_port), "-mp", str(local_port + 20),
           "-m", str(calls), "-r", str(rate), "-nostdin",
           "-timeout", f"{timeout_s}s", "-timeout_error",
           "-trace_msg", "-message_file", str(messages)]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    for key, value in keys.items():
        cmd += ["-key", key, value]
    if auth is not None:
        cmd += ["-au", auth[0], "-ap", auth[1]]
    out = subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True,
                         text=True, timeout=timeout_s + 15)
    responses = []
    if messages.exists():
        responses = [line.strip() for line in messages.read_text(errors="replace").splitlines()
                     if line.startswith("SIP/2.0 ")]
    return SippRun(out.returncode, responses, (out.stdout + out.stderr)[-3000:])
