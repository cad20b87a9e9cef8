"""Kamailio as the hotline's SIP front door: render its config, start, stop, read node states.

Kamailio (Debian's package) listens on the hotline's address and hands each new
INVITE to one Asterisk node chosen by its dispatcher module, probing every node
with SIP OPTIONS and failing over to the next node when one does not answer.
The routing script is cluster/templates/kamailio.cfg; docs/frontdoor.md says
what it does and does not do.

Surprises:
- Everything of one front door lives in its run dir: the rendered config, the
  dispatcher list, the pid file, Kamailio's runtime dir and the control socket
  (a Unix socket path may hold at most 107 bytes, so the run dir must be short).
- Node states come from Kamailio itself (`kamcmd dispatcher.list` over the
  control socket); a node is "inactive" only once Kamailio saw it fail.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import jinja2

from hotline import proc

TEMPLATES = Path(__file__).resolve().parent / "templates"
KAMAILIO = "/usr/sbin/kamailio"
KAMCMD = "/usr/sbin/kamcmd"

# The one dispatcher set (group) that holds the Asterisk nodes.
NODE_SET = 1
# Node names end up in the dispatcher list (duid=...) and in log lines; the
# same shape as an Asterisk node's systemname (dialplans/render.py).
NODE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?", re.ASCII)
# The run dir is written into the config as a quoted string: no quote, no
# backslash, no '$' (pseudo-variables), no space, no newline.
SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+-]*", re.ASCII)
_UNIX_PATH_MAX = 107

# A node that answers an OPTIONS probe with 2xx, 3xx or 4xx is alive: Asterisk
# answers a probe from an unknown peer with 401 or 404 at times. Not 408:
# Kamailio's own transaction layer produces a 408 when a probe goes unanswered,
# and accepting it would keep a dead node "active" (dispatcher docs,
# ds_ping_reply_codes). So 4xx is spelled out, code by code, without 408.
PROBE_ALIVE_CODES = "class=2;class=3;" + ";".join(
    f"code={code}" for code in range(400, 500) if code != 408)

# kamcmd dispatcher.list FLAGS: first letter is the state.
_STATES = {"A": "active", "I": "inactive", "T": "probing", "D": "disabled"}


class FrontDoorError(RuntimeError):
    """The front door could not be started, stopped or asked (the message says why)."""


class Node(NamedTuple):
    """One Asterisk node behind the front door: its name and its SIP address (UDP)."""

    name: str
    host: str
    port: int


def _check_ip(value: object, what: str) -> str:
    """An IP literal that can be a SIP hop (no 0.0.0.0, no multicast); ValueError otherwise."""
    try:
        ip = ipaddress.ip_address(value if isinstance(value, str) else "")
    except ValueError:
        raise ValueError(f"{what} is not an IP literal: {str(value)[:60]!r}") from None
    if ip.is_unspecified or ip.is_multicast:
        raise ValueError(f"{what} is not a usable address: {ip}")
    return str(ip)


def _check_port(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{what} is not a port number: {str(value)[:20]!r}")
    return value


def _hostport(host: str, port: int) -> str:
    """`host:port` as SIP writes it (an IPv6 literal in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class FrontDoor:
    """One Kamailio front door: where it listens, the nodes it dispatches to, its numbers.

    Validated on construction, so a FrontDoor that exists can be rendered:
    hosts are IP literals, ports ints, node names [a-z0-9-]. `nodes` takes
    (name, host, port) tuples and holds them as `Node`s, in the given order.
    """

    host: str
    port: int
    nodes: tuple[Node, ...]
    run_dir: Path
    # Seconds between SIP OPTIONS probes of every node (Kamailio counts whole seconds).
    probe_interval_s: int = 2
    # An INVITE that has no reply at all from its node within this many seconds
    # goes to the next node; also how long a probe waits for its answer.
    failover_timeout_s: float = 2.0
    # Kamailio's shared and private memory, MB: a front door for one hotline is small.
    shm_mb: int = field(default=32, repr=False)
    pkg_mb: int = field(default=4, repr=False)

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("host", _check_ip(self.host, "listen host"))
        _check_port(self.port, "listen port")
        try:
            nodes = tuple(Node(*n) for n in self.nodes)
        except TypeError:
            raise ValueError("nodes must be (name, host, port) tuples") from None
        if not nodes:
            raise ValueError("a front door needs at least one Asterisk node")
        checked = []
        for node in nodes:
            if not isinstance(node.name, str) or not NODE_NAME.fullmatch(node.name):
                raise ValueError(f"not a node name ([a-z0-9-], at most 32): {str(node.name)[:40]!r}")
            checked.append(Node(node.name, _check_ip(node.host, f"host of node {node.name}"),
                                _check_port(node.port, f"port of node {node.name}")))
        names = [n.name for n in checked]
        if len(set(names)) != len(names):
            raise ValueError(f"node names repeat: {names}")
        addresses = [(n.host, n.port) for n in checked]
        if len(set(addresses)) != len(addresses):
            raise ValueError("two nodes share one address")
        if (self.host, self.port) in addresses:
            raise ValueError("a node cannot sit on the front door's own address")
        set_("nodes", tuple(checked))

        run_dir = Path(self.run_dir)
        if not SAFE_PATH.fullmatch(str(run_dir)):
            raise ValueError(f"run dir must be an absolute path of [A-Za-z0-9._/+-]: {str(run_dir)[:80]!r}")
        if len(str(run_dir / "kamailio.ctl")) > _UNIX_PATH_MAX:
            raise ValueError(f"run dir too long for a Unix socket path: {run_dir}")
        set_("run_dir", run_dir)

        probe = self.probe_interval_s
        if isinstance(probe, bool) or not isinstance(probe, int) or not 1 <= probe <= 3600:
            raise ValueError(f"probe interval must be whole seconds, 1..3600: {probe!r}")
        timeout = self.failover_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.1 <= timeout <= 60:
            raise ValueError(f"failover timeout must be 0.1..60 seconds: {timeout!r}")
        for name in ("shm_mb", "pkg_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
                raise ValueError(f"{name} must be 1..1024: {value!r}")

    # -- the files in the run dir --------------------------------------------
    @property
    def config_file(self) -> Path:
        return self.run_dir / "kamailio.cfg"

    @property
    def list_file(self) -> Path:
        return self.run_dir / "dispatcher.list"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "kamailio.pid"

    @property
    def ctl_socket(self) -> Path:
        return self.run_dir / "kamailio.ctl"

    @property
    def runtime_dir(self) -> Path:
        return self.run_dir / "runtime"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "kamailio.log"

    @property
    def address(self) -> str:
        """`host:port` of the front door, as in a SIP URI."""
        return _hostport(self.host, self.port)

    def node_uri(self, node: Node) -> str:
        """The dispatcher destination of `node` (also what `kamcmd dispatcher.list` shows)."""
        return f"sip:{_hostport(node.host, node.port)}"


def render_files(front: FrontDoor) -> dict[str, str]:
    """{file name: text} of the rendered kamailio.cfg and dispatcher.list (no I/O but the template)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a missing value is an error, not an empty string
        keep_trailing_newline=True,
        autoescape=False,
    )
    context = dict(
        listen=front.address, ctl_socket=str(front.ctl_socket), list_file=str(front.list_file),
        node_set=NODE_SET, probe_interval_s=front.probe_interval_s,
        failover_ms=max(100, round(front.failover_timeout_s * 1000)),
        probe_alive_codes=PROBE_ALIVE_CODES,
    )
    lines = ["# Rendered by cluster/kamailio.py: the Asterisk nodes of the hotline's front door.",
             "# setid destination flags priority attrs"]
    for node in front.nodes:
        # flags 8: probed from the start; duid: the node's name, shown by dispatcher.list.
        lines.append(f"{NODE_SET} {front.node_uri(node)} 8 0 duid={node.name}")
    return {"kamailio.cfg": env.get_template("kamailio.cfg").render(**context),
            "dispatcher.list": "\n".join(lines) + "\n"}


def render(front: FrontDoor) -> Path:
    """Write kamailio.cfg and dispatcher.list into the run dir; the config's path."""
    front.run_dir.mkdir(parents=True, exist_ok=True)
    for name, text in render_files(front).items():
        tmp = front.run_dir / (name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(front.run_dir / name)
    return front.config_file


@dataclass(frozen=True)
class KamailioProcess:
    """One running front door; `stop()` ends it."""

    front: FrontDoor
    pid: int

    @property
    def log_file(self) -> Path:
        return self.front.log_file

    def alive(self) -> bool:
        return proc.alive(self.pid)

    def stop(self, timeout_s: float = 10.0) -> None:
        proc.terminate(self.pid, timeout_s)
        _remove_leftovers(self.front)


def running(front: FrontDoor) -> KamailioProcess | None:
    """The front door's Kamailio if it runs (its pid file names a live kamailio on this config)."""
    try:
        pid = int(front.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    # The pid may have been reused by another process since: check what it runs.
    args = proc.cmdline(pid).split(b"\0")
    if proc.alive(pid) and args and args[0].endswith(b"kamailio") \
            and str(front.config_file).encode() in args:
        return KamailioProcess(front, pid)
    return None


def _port_problem(host: str, port: int) -> str | None:
    """Why Kamailio could not bind host:port (UDP or TCP), or None if both are free."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for kind, name in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
        with socket.socket(family, kind) as probe:
            if kind == socket.SOCK_STREAM:
                # Like Kamailio: a port in TIME_WAIT from our last run is not "taken".
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    return (f"{name} port {_hostport(host, port)} is already in use: another SIP "
                            "server (Debian's kamailio service?) or a leftover front door")
                return f"cannot listen on {name} {_hostport(host, port)}: {e.strerror}"
    return None


def _log_tail(front: FrontDoor, lines: int = 6) -> str:
    try:
        text = front.log_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    errors = [line.strip() for line in text.splitlines() if "ERROR" in line or "CRITICAL" in line]
    return " | ".join((errors or text.splitlines())[-lines:])[:800]


def _remove_leftovers(front: FrontDoor) -> None:
    for path in (front.pid_file, front.ctl_socket):
        path.unlink(missing_ok=True)


def start(front: FrontDoor, timeout_s: float = 15.0) -> KamailioProcess:
    """Render the config and start Kamailio in the background; returns once it answers on its control socket.

    Already running: the running one is returned as it is (not re-rendered).
    Kamailio stays in the foreground of its own session (-DD, logging to
    stderr, -E), which goes to the run dir's kamailio.log.
    """
    if not Path(KAMAILIO).is_file() or not os.access(KAMAILIO, os.X_OK):
        raise FrontDoorError(f"{KAMAILIO} is missing: install the kamailio package (scripts/setup.sh does)")
    existing = running(front)
    if existing is not None:
        return existing
    problem = _port_problem(front.host, front.port)
    if problem:
        raise FrontDoorError(problem)
    render(front)
    _remove_leftovers(front)
    front.runtime_dir.mkdir(parents=True, exist_ok=True)
    front.log_file.unlink(missing_ok=True)  # so _log_tail tells about this start only
    argv = [KAMAILIO, "-DD", "-E", "-f", str(front.config_file), "-P", str(front.pid_file),
            "-Y", str(front.runtime_dir), "-w", str(front.run_dir),
            "-m", str(front.shm_mb), "-M", str(front.pkg_mb)]
    pid = proc.spawn_detached(argv, front.log_file)
    deadline = time.monotonic() + timeout_s
    while True:
        if not proc.alive(pid):
            raise FrontDoorError(f"kamailio exited during start: {_log_tail(front)} (log: {front.log_file})")
        if front.ctl_socket.exists():
            try:
                _kamcmd(front, "core.version")
                return KamailioProcess(front, pid)
            except FrontDoorError:
                pass
        if time.monotonic() > deadline:
            proc.terminate(pid)
            raise FrontDoorError(f"kamailio did not answer on {front.ctl_socket} within {timeout_s}s "
                                 f"(log: {front.log_file})")
        time.sleep(0.1)


def stop(front: FrontDoor, timeout_s: float = 10.0) -> bool:
    """Stop the front door's Kamailio (SIGTERM, then SIGKILL); False if it was not running."""
    existing = running(front)
    if existing is None:
        _remove_leftovers(front)
        return False
    existing.stop(timeout_s)
    return True


def _kamcmd(front: FrontDoor, *command: str, timeout_s: float = 5.0) -> str:
    if not Path(KAMCMD).is_file():
        raise FrontDoorError(f"{KAMCMD} is missing: install the kamailio package (scripts/setup.sh does)")
    try:
        out = subprocess.run([KAMCMD, "-s", f"unixs:{front.ctl_socket}", *command],
                             capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise FrontDoorError(f"kamcmd {command[0]} got no answer within {timeout_s}s") from None
    if out.returncode != 0:
        raise FrontDoorError(f"kamcmd {command[0]} failed: {(out.stderr or out.stdout).strip()[:200]}")
    return out.stdout


def parse_dispatcher_list(text: str) -> dict[str, str]:
    """{destination URI: FLAGS} from `kamcmd dispatcher.list` output (pure).

    >>> parse_dispatcher_list("DEST: {\\n URI: sip:127.0.0.1:5080\\n FLAGS: AP\\n}")
    {'sip:127.0.0.1:5080': 'AP'}
    """
    found: dict[str, str] = {}
    uri = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "URI":
            uri = value.strip()
        elif key == "FLAGS" and uri is not None:
            found[uri] = value.strip()
            uri = None
    return found


def states_from_flags(front: FrontDoor, flags: dict[str, str]) -> dict[str, str]:
    """{node name: "active" | "inactive" | "probing" | "disabled"} from dispatcher FLAGS (pure).

    The first letter of FLAGS is the state: A active, I inactive, T trying
    (a probe just failed, below the failure threshold: "probing" here), D
    disabled by an admin. A node Kamailio does not list is "unknown".
    """
    states = {}
    for node in front.nodes:
        value = flags.get(front.node_uri(node), "")
        states[node.name] = _STATES.get(value[:1], "unknown")
    return states


def node_states(front: FrontDoor) -> dict[str, str]:
    """Each node's state as Kamailio's dispatcher reports it right now."""
    if running(front) is None:
        raise FrontDoorError(f"the front door on {front.address} is not running")
    return states_from_flags(front, parse_dispatcher_list(_kamcmd(front, "dispatcher.list")))
