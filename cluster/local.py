"""A whole cluster on one machine: Kamailio, Asterisk nodes, service instances, one PostgreSQL.

`hotline cluster up|down|status` and the HA tests use this. Each part is the
production part (docs/deployment.md), only on loopback ports:

- the front door: Kamailio on `base` (UDP/TCP), dispatching to the nodes;
- node i (`node-a`, `node-b`, ...): a sandboxed Asterisk 22 whose systemname is
  its name, SIP on base+10+10i, AMI on base+11+10i, RTP from base+1000+500i;
  its dialplan asks every service instance, starting with "its own" (node i
  prefers instance i+1, so the load spreads and either can serve both);
- service j (`svc-1`, ...): `hotline serve`, FastAGI on base+40+j, AMI links
  to every node, heartbeat HOTLINE_HEARTBEAT_j on every node; the scheduler
  runs in the one instance holding the cluster's PostgreSQL advisory lock;
- the surgeons' phone network: every node's trunk points at base+5.

All instances share the cluster's var dir (prompts, recordings, the data key
ring) and the database; each writes its own config file there, and each
process is started with HOTLINE_CONFIG pointing at it.
"""
from __future__ import annotations

import dataclasses
import json
import string
from dataclasses import dataclass
from pathlib import Path

from hotline.config import AsteriskNode, HotlineConfig, Ports, load_config

NODE_NAMES = tuple(f"node-{letter}" for letter in string.ascii_lowercase[:9])


class ClusterError(RuntimeError):
    """The local cluster could not be prepared, started or asked."""


@dataclass(frozen=True)
class ClusterLayout:
    """Where each part of a local cluster lives; pure (nothing is started here)."""

    name: str
    var_dir: Path
    database_url: str
    base_port: int = 16000
    node_count: int = 2
    service_count: int = 2
    menu_file: Path | None = None
    asterisk_root: Path | None = None
    reconcile_every_s: int = 300
    full_log: bool = False

    def __post_init__(self) -> None:
        if not (1 <= self.node_count <= len(NODE_NAMES) and 1 <= self.service_count <= 9):
            raise ValueError("a local cluster has 1-9 nodes and 1-9 service instances")
        if not self.database_url.startswith("postgresql"):
            raise ValueError("a cluster needs PostgreSQL: every instance shares it, and the "
                             "scheduler election is a PostgreSQL advisory lock (give --database-url)")
        if not 1024 <= self.base_port <= 65535 - 1000 - 500 * self.node_count:
            raise ValueError(f"base port {self.base_port} leaves no room for the cluster's ports")

    # -- ports -----------------------------------------------------------------
    @property
    def front_door_port(self) -> int:
        return self.base_port

    @property
    def surgeon_phones_port(self) -> int:
        return self.base_port + 5

    @property
    def nodes(self) -> tuple[str, ...]:
        return NODE_NAMES[:self.node_count]

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(f"svc-{j}" for j in range(1, self.service_count + 1))

    def agi_port(self, slot: int) -> int:
        return self.base_port + 40 + slot

    def node_ports(self, index: int) -> Ports:
        rtp = self.base_port + 1000 + 500 * index
        return Ports(sip=self.base_port + 10 + 10 * index, ami=self.base_port + 11 + 10 * index,
                     agi=self.agi_port(1), surgeon_phones=self.surgeon_phones_port,
                     console=self.base_port + 12 + 10 * index, rtp_start=rtp, rtp_end=rtp + 499)

    # -- shared places ---------------------------------------------------------------
    @property
    def recordings_path(self) -> Path:
        return self.var_dir / "recordings" / self.name

    @property
    def data_key_file(self) -> Path:
        return self.var_dir / "cluster" / "data.key"

    @property
    def config_dir(self) -> Path:
        return self.var_dir / "cluster"

    def config_file(self, instance: str) -> Path:
        return self.config_dir / f"{instance}.toml"

    @property
    def front_door_dir(self) -> Path:
        return self.var_dir / "kamailio"

    # -- instance configurations ----------------------------------------------------
    def _common(self) -> dict[str, object]:
        common: dict[str, object] = {
            "var_dir": str(self.var_dir), "database_url": self.database_url,
            "cluster_name": self.name, "recordings_path": str(self.recordings_path),
            "data_key_file": str(self.data_key_file),
            "reconcile_every_s": self.reconcile_every_s,
            "asterisk_full_log": self.full_log,
        }
        if self.menu_file is not None:
            common["menu_file"] = str(self.menu_file)
        if self.asterisk_root is not None:
            common["asterisk_root"] = str(self.asterisk_root)
        return common

    def node_settings(self, index: int) -> dict[str, object]:
        """Node `index`'s config file contents: its ports, name and FastAGI targets in its order."""
        ports = self.node_ports(index)
        # Node i asks instance i+1 first (wrapping), then the others in turn.
        return {**self._common(), "instance": self.nodes[index], "node_name": self.nodes[index],
                "agi_targets": [f"127.0.0.1:{self.agi_port(slot)}"
                                for slot in range(1, self.service_count + 1)],
                "agi_first": index % self.service_count + 1,
                "ports": dataclasses.asdict(ports)}

    def service_settings(self, slot: int) -> dict[str, object]:
        """Service `slot`'s config file contents: its FastAGI port, slot and AMI links to every node."""
        instance = self.services[slot - 1]
        links = []
        for index, node in enumerate(self.nodes):
            node_dir = self.var_dir / "asterisk" / node
            links.append({"name": node, "host": "127.0.0.1", "ami_port": self.node_ports(index).ami,
                          "secret_file": str(node_dir / "ami.secret"), "log_dir": str(node_dir / "log")})
        ports = dataclasses.asdict(self.node_ports(0))
        ports["agi"] = self.agi_port(slot)
        return {**self._common(), "instance": instance, "service_slot": slot,
                "asterisk_nodes": links, "ports": ports}

    def write_configs(self) -> dict[str, Path]:
        """Write every instance's config file (TOML); instance name -> path."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        written = {}
        for index, node in enumerate(self.nodes):
            written[node] = _write_toml(self.config_file(node), self.node_settings(index))
        for slot, service in enumerate(self.services, start=1):
            written[service] = _write_toml(self.config_file(service), self.service_settings(slot))
        return written

    def config(self, instance: str) -> HotlineConfig:
        """The configuration an instance's process reads (from its file, as it would)."""
        return load_config(self.config_file(instance), env={})

    def env(self, instance: str) -> dict[str, str]:
        """The environment an instance's process is started with: this one without any
        HOTLINE_* setting (they would override its config file), plus HOTLINE_CONFIG."""
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
        env["HOTLINE_CONFIG"] = str(self.config_file(instance))
        return env

    def front_door(self):
        from cluster.kamailio import FrontDoor

        return FrontDoor(host="127.0.0.1", port=self.front_door_port,
                         nodes=tuple((node, "127.0.0.1", self.node_ports(i).sip)
                                     for i, node in enumerate(self.nodes)),
                         run_dir=self.front_door_dir)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "front_door": f"127.0.0.1:{self.front_door_port}",
                "nodes": {n: self.node_ports(i).sip for i, n in enumerate(self.nodes)},
                "services": {s: self.agi_port(j) for j, s in enumerate(self.services, start=1)}}


LAYOUT_FILE = "layout.json"


def save_layout(layout: ClusterLayout) -> Path:
    """Keep the layout beside the configs: `down` and `status` read it back by name."""
    layout.config_dir.mkdir(parents=True, exist_ok=True)
    data = {f.name: getattr(layout, f.name) for f in dataclasses.fields(layout)}
    data = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    path = layout.config_dir / LAYOUT_FILE
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return path


def load_layout(var_dir: Path) -> ClusterLayout:
    """The layout `up` saved in `var_dir`; ClusterError if there is none."""
    path = var_dir / "cluster" / LAYOUT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise ClusterError(f"no cluster in {var_dir} (run `hotline cluster up` first)") from None
    for key in ("var_dir", "menu_file", "asterisk_root"):
        if data.get(key) is not None:
            data[key] = Path(data[key])
    return ClusterLayout(**data)


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(value, list) and all(not isinstance(v, dict) for v in value):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _write_toml(path: Path, settings: dict[str, object]) -> Path:
    """A small TOML writer for our own flat settings (+ [ports] and [[asterisk_nodes]])."""
    lines = ["# Written by `hotline cluster up` -- regenerate rather than edit."]
    tables = {}
    for key, value in settings.items():
        if isinstance(value, dict) or (isinstance(value, list) and value and isinstance(value[0], dict)):
            tables[key] = value
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        for item in (value if isinstance(value, list) else [value]):
            lines.append("")
            lines.append(f"[[{key}]]" if isinstance(value, list) else f"[{key}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in item.items())
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# -- starting and stopping (harness operations, like hotline/instance.py) ------------------
def up(layout: ClusterLayout, *, seed: bool = True, log=print) -> None:
    """Prepare and start every part: nodes, services, then the front door."""
    from cluster import kamailio
    from hotline import instance

    save_layout(layout)
    layout.write_configs()
    share_sip_secret(layout)
    share_agi_secret(layout)
    first = layout.config(layout.nodes[0])
    instance.prepare(first, log=log)  # sandbox root, prompts, the database's migrations
    if seed:
        instance.seed(first)
        log("demo network loaded into the cluster's database")
    for node in layout.nodes:
        config = layout.config(node)
        instance.render(config)
        instance.start_asterisk(config)
        log(f"{node}: Asterisk running (SIP 127.0.0.1:{config.ports.sip}, AMI {config.ports.ami})")
    for service in layout.services:
        config = layout.config(service)
        pid = instance.start_service(config, env=layout.env(service))
        log(f"{service}: service running (pid {pid}, FastAGI 127.0.0.1:{config.ports.agi})")
    kamailio.start(layout.front_door())
    log(f"front door: Kamailio on 127.0.0.1:{layout.front_door_port}")


def share_sip_secret(layout: ClusterLayout) -> str:
    """Give every node the first node's SIP secret: a caller the front door sends
    to any node must pass that node's challenge with the same password."""
    secret = layout.config(layout.nodes[0]).sip_secret()
    _share_secret(secret, [layout.config(node).instance_dir / "sip.secret" for node in layout.nodes[1:]])
    return secret


def share_agi_secret(layout: ClusterLayout) -> str:
    """Give every node and every service the first node's FastAGI key: any node
    may ask any service, and each checks the same request proof (ivr/handlers.py)."""
    secret = layout.config(layout.nodes[0]).agi_secret()
    _share_secret(secret, [layout.config(name).agi_secret_file
                           for name in (*layout.nodes[1:], *layout.services)])
    return secret


def _share_secret(secret: str, paths: list[Path]) -> None:
    import os

    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text().strip() != secret:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")


def down(layout: ClusterLayout, log=print) -> None:
    """Stop every part that runs; whatever is already stopped is skipped."""
    from cluster import kamailio
    from hotline import instance

    if not layout.config_dir.is_dir():
        log("no cluster here")
        return
    try:
        stopped = kamailio.stop(layout.front_door())
        log(f"front door: {'stopped' if stopped else 'was not running'}")
    except Exception as exc:  # stop what else runs even so
        log(f"front door: could not stop ({exc})")
    for service in layout.services:
        if layout.config_file(service).exists():
            stopped = instance.stop_service(layout.config(service))
            log(f"{service}: {'stopped' if stopped else 'was not running'}")
    for node in layout.nodes:
        if layout.config_file(node).exists():
            stopped = instance.stop_asterisk(layout.config(node))
            log(f"{node}: {'stopped' if stopped else 'was not running'}")


def status(layout: ClusterLayout) -> dict[str, object]:
    """What runs: each node (Asterisk pid, channels, front door state), each service, the scheduler holder."""
    from cluster import kamailio
    from db.session import make_engine
    from hotline import instance, sandbox
    from hotline.leader import current_holder

    report: dict[str, object] = {"name": layout.name}
    try:
        states = kamailio.node_states(layout.front_door())
        front = kamailio.running(layout.front_door())
        report["front_door"] = {"port": layout.front_door_port,
                                "pid": front.pid if front else None}
    except Exception as exc:
        states, report["front_door"] = {}, {"port": layout.front_door_port, "error": str(exc)[:200]}
    nodes = {}
    for node in layout.nodes:
        config = layout.config(node)
        running = sandbox.running_asterisk(config.asterisk_root, config.instance_dir)
        entry: dict[str, object] = {"pid": running.pid if running else None,
                                    "front_door": states.get(node, "unknown")}
        if running:
            try:
                entry["channels"] = instance.channel_count(config)
            except instance.InstanceError as exc:
                entry["channels"] = f"? ({exc})"
        nodes[node] = entry
    report["nodes"] = nodes
    services = {}
    for service in layout.services:
        config = layout.config(service)
        services[service] = {"pid": instance.service_pid(config), "worker": instance.worker_pid(config)}
    report["services"] = services
    engine = make_engine(layout.database_url)
    try:
        report["scheduler"] = current_holder(engine, layout.name)
    except Exception as exc:
        report["scheduler"] = f"? ({type(exc).__name__})"
    finally:
        engine.dispose()
    return report


__all__ = ["AsteriskNode", "ClusterError", "ClusterLayout", "down", "status", "up"]
