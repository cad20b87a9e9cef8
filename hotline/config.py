"""Configuration, read once in layers: defaults <- TOML file <- HOTLINE_* environment.

Nothing below the composition root reads the environment; everything gets a
`HotlineConfig` (or the part of it it needs) passed in.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

PROJECT_DIR = Path(__file__).resolve().parent.parent
SURGEON_HOST = "127.0.0.2"  # the surgeons' phone network on one machine (loopback /8)


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one Asterisk instance and the service beside it."""

    sip: int = 5060
    ami: int = 5038
    agi: int = 4573
    surgeon_phones: int = 5070  # where the surgeons' phone network (trunk peer) listens
    console: int = 8608  # the web console and JSON API (loopback; a TLS proxy in front)
    rtp_start: int = 10000
    rtp_end: int = 10999


@dataclass(frozen=True)
class HotlineConfig:
    instance: str = "demo"
    var_dir: Path = PROJECT_DIR / "var"
    database_url: str = ""  # empty: SQLite file in var_dir
    asterisk_root: Path = Path("/var/cache/hotline/asterisk-sid")
    debian_mirror: str = ""  # empty: read from the machine's apt sources
    menu_file: Path = PROJECT_DIR / "ivr" / "menu.toml"
    agi_host: str = "127.0.0.1"
    # The Asterisk hosts the FastAGI server talks to: FastAGI has no
    # authentication, so any other peer is closed before a byte is read.
    agi_allowed_hosts: tuple[str, ...] = ("127.0.0.1", "::1")
    # The surgeons' phone network (the trunk peer): its IPv4 address. The trunk
    # is recognised by this source address alone (pjsip identify), so it is an
    # address of its own, never the callers' 127.0.0.1 (docs/security.md).
    surgeon_host: str = SURGEON_HOST
    ports: Ports = field(default_factory=Ports)
    # -- a cluster (docs/deployment.md); the defaults are one node and one service.
    # Which instances cooperate: they share the scheduler election (one
    # PostgreSQL advisory lock per cluster name). Empty: this instance alone.
    cluster_name: str = ""
    # This instance's Asterisk node name (its systemname: uniqueids, linkedids
    # and recording names start with it). Empty: a single node.
    node_name: str = ""
    # The service instances' FastAGI addresses ("ip:port") by slot: the n-th is
    # instance n. Empty: the one service beside it (agi_host, ports.agi).
    agi_targets: tuple[str, ...] = ()
    # The slot this node's dialplan asks first (then the next ones, wrapping).
    agi_first: int = 1
    # This service instance's slot n: it sets the heartbeat HOTLINE_HEARTBEAT_n
    # and is HOTLINE_AGI_n in every node's dialplan.
    service_slot: int = 1
    # The Asterisk nodes this service serves over AMI (AsteriskNode). Empty:
    # the instance's own Asterisk on 127.0.0.1:ports.ami.
    asterisk_nodes: tuple["AsteriskNode", ...] = ()
    # Recordings dir shared by the cluster's nodes and services (the same path
    # on every host). Empty: var_dir/recordings/<instance>.
    recordings_path: str = ""
    # How often the elected scheduler reconciles cases with Asterisk's CDR/CEL.
    reconcile_every_s: int = 300
    log_level: str = "INFO"
    # The console's session cookie is Secure (HTTPS only) unless this is set for
    # plain-HTTP development on loopback (the demo sets it).
    console_insecure_cookies: bool = False
    # Notifications (docs/notifications.md). Secrets -- WeChat robot keys, the
    # Twilio auth token -- come from HOTLINE_* environment variables or files
    # in instance_dir, never from a config file (load_config refuses them).
    wechat_webhook_base: str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send"
    wechat_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)  # (target, key)
    twilio_account_sid: str = ""
    twilio_from: str = ""  # the SMS sender, E.164 (+86...)
    twilio_base_url: str = ""  # empty: Twilio's own (https://api.twilio.com)
    twilio_auth_token: str = field(default="", repr=False)
    # Twilio Voice (carrier/, docs/twilio.md): the public base URL Twilio calls,
    # e.g. https://hotline.example.org -- webhook signatures are checked
    # against it, so behind a reverse proxy it must be the proxy's URL.
    twilio_public_url: str = ""
    # The key ring that seals recordings and case notes (vault/, docs/privacy.md);
    # empty: <var_dir>-keys/<instance>/data.key, generated on first use -- beside
    # the runtime dir, never inside it: Asterisk bind-mounts var_dir and backups
    # take it whole. Keep it off the database host's backups too.
    data_key_file: str = ""
    # Asterisk's full.log (verbose dialplan trace, DTMF): it holds callers'
    # numbers and keys, so only for tests and debugging (HOTLINE_ASTERISK_FULL_LOG=1).
    asterisk_full_log: bool = False
    # Retention periods in days (privacy/retention.py, docs/privacy.md); None:
    # that module's default. Checked at start: a bad period stops the service.
    retention_cases_days: int | None = None
    retention_recordings_days: int | None = None
    retention_audit_days: int | None = None
    retention_notices_days: int | None = None
    retention_sessions_days: int | None = None
    retention_blocklist_days: int | None = None
    # Wound photos (issue 11, docs/photos.md): the console's address as phones reach
    # it (https://hotline.example.org). Upload links and the surgeon's phone view are
    # sent on it; empty: the service sends no link (the console uses its own address).
    console_public_url: str = ""
    # An upload link by SMS when a case opens: "mobile" (callers on a Chinese mobile) or "off".
    photo_link_on_case_open: str = "mobile"

    @property
    def instance_dir(self) -> Path:
        return self.var_dir / "asterisk" / self.instance

    @property
    def prompts_dir(self) -> Path:
        return self.var_dir / "prompts"

    @property
    def recordings_dir(self) -> Path:
        if self.recordings_path:
            return Path(self.recordings_path)
        return self.var_dir / "recordings" / self.instance

    @property
    def election_name(self) -> str:
        """The name the scheduler election is held under: the cluster, else this instance."""
        return self.cluster_name or self.instance

    def nodes(self) -> tuple["AsteriskNode", ...]:
        """The Asterisk nodes this service serves: the configured ones, else its own."""
        return self.asterisk_nodes or (AsteriskNode(
            name=self.node_name or self.instance, host="127.0.0.1", ami_port=self.ports.ami,
            secret_file=str(self.instance_dir / "ami.secret"),
            log_dir=str(self.instance_dir / "log"), own=True),)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / (self.instance + '.db')}"

    def ami_secret(self) -> str:
        """The AMI secret for this instance, generated once and kept 0600 in var/."""
        return _secret_file(self.instance_dir / "ami.secret")

    def sip_secret(self) -> str:
        """The password of the test-phone SIP endpoints, generated like the AMI one."""
        return _secret_file(self.instance_dir / "sip.secret")

    @property
    def agi_secret_file(self) -> Path:
        """Where the FastAGI proof key lives: Asterisk's dialplan reads it with FILE() on
        every request (never a global or a literal: the console's AMI account may read
        those), the service reads it once at start."""
        return self.instance_dir / "agi.secret"

    def agi_secret(self) -> str:
        """The key of the FastAGI request proof (ivr/handlers.py), generated like the AMI one."""
        return _secret_file(self.agi_secret_file)

    def console_secret(self) -> str:
        """The key that signs the console's session cookies, generated like the AMI one."""
        return _secret_file(self.instance_dir / "console.secret")

    def console_ami_secret(self) -> str:
        """The console's own AMI account (read-only: live calls), generated like the AMI one."""
        return _secret_file(self.instance_dir / "console-ami.secret")

    def wechat_key(self, target: str) -> str | None:
        """The WeChat Work robot key of `target` ("desk" or a team code), or None.

        From $HOTLINE_WECHAT_KEY_<TARGET> (upper case, '.' and '-' as '_'),
        else the file instance_dir/wechat-<target>.key; never generated.
        """
        env_name = target.lower().replace(".", "_").replace("-", "_")
        for name, key in self.wechat_keys:
            if name == env_name:
                return key
        return _optional_secret(self.instance_dir / f"wechat-{target}.key")

    def twilio_token(self) -> str | None:
        """The Twilio auth token: $HOTLINE_TWILIO_AUTH_TOKEN, else instance_dir/twilio.token."""
        return self.twilio_auth_token or _optional_secret(self.instance_dir / "twilio.token")

    @property
    def data_key_path(self) -> Path:
        """The key ring: HOTLINE_DATA_KEY_FILE, else `<var_dir>-keys/<instance>/data.key`."""
        return Path(self.data_key_file).expanduser() if self.data_key_file else \
            self.var_dir.parent / (self.var_dir.name + "-keys") / self.instance / "data.key"

    @property
    def legacy_data_key_path(self) -> Path:
        """Where the default key ring lived before it moved out of the data tree."""
        return self.instance_dir / "data.key"

    def vault(self, *, create: bool = True):
        """The vault sealing recordings and notes (a new key ring is made if missing).

        Surprising: with the default path, a key ring still at the old place
        (inside the instance dir) is moved out first, so data sealed before
        stays readable and no second ring is generated.
        """
        from vault import Vault, load_keyring, move_keyring

        if not self.data_key_file:
            # <var_dir>-keys itself private too: it names every instance.
            self.data_key_path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            move_keyring(self.legacy_data_key_path, self.data_key_path)
        return Vault(load_keyring(self.data_key_path, create=create))


@dataclass(frozen=True)
class AsteriskNode:
    """One Asterisk node a service instance serves over AMI.

    `secret_file` holds the AMI secret of the service's account on that node;
    `log_dir` is where that node's CDR/CEL SQLite files are read for
    reconciliation ("" when this host cannot see them).
    """

    name: str
    host: str
    ami_port: int
    secret_file: str
    log_dir: str = ""
    # The instance's own Asterisk (no nodes configured): its secret is made on
    # first use, as `render` does. Another node's is only read: it must match
    # that node's manager.conf.
    own: bool = False

    def ami_secret(self) -> str:
        if self.own:
            return _secret_file(Path(self.secret_file))
        secret = _optional_secret(Path(self.secret_file))
        if not secret:
            raise ValueError(f"AMI secret of node {self.name} missing: {self.secret_file}")
        return secret


def _asterisk_nodes(raw: object) -> tuple[AsteriskNode, ...]:
    """`[[asterisk_nodes]]` tables from TOML: name, host (an IP), ami_port, secret_file, log_dir."""
    from dialplans.render import NODE_NAME

    if not isinstance(raw, (list, tuple)):
        raise ValueError("asterisk_nodes: a list of tables")
    nodes = []
    for item in raw:
        if isinstance(item, AsteriskNode):
            nodes.append(item)
            continue
        if not isinstance(item, dict) or set(item) - {"name", "host", "ami_port", "secret_file", "log_dir"}:
            raise ValueError("asterisk_nodes: each needs name, host, ami_port, secret_file (and log_dir)")
        name = str(item.get("name", ""))
        if not NODE_NAME.fullmatch(name):
            raise ValueError(f"asterisk_nodes: {name[:40]!r} is not a node name")
        host = _ip_addresses("asterisk_nodes.host", [item.get("host", "")])[0]
        port = item.get("ami_port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"asterisk_nodes: {name}: ami_port must be a port number")
        if not item.get("secret_file"):
            raise ValueError(f"asterisk_nodes: {name}: secret_file is required")
        nodes.append(AsteriskNode(name, host, port, str(item["secret_file"]), str(item.get("log_dir", ""))))
    if len({n.name for n in nodes}) != len(nodes):
        raise ValueError("asterisk_nodes: node names must differ")
    return tuple(nodes)


def _optional_secret(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (FileNotFoundError, NotADirectoryError):
        return None


def _secret_file(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        value = secrets.token_urlsafe(24)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value


_ENV_KEYS = {
    "HOTLINE_INSTANCE": "instance",
    "HOTLINE_VAR_DIR": "var_dir",
    "HOTLINE_DATABASE_URL": "database_url",
    "HOTLINE_ASTERISK_ROOT": "asterisk_root",
    "HOTLINE_DEBIAN_MIRROR": "debian_mirror",
    "HOTLINE_MENU_FILE": "menu_file",
    "HOTLINE_LOG_LEVEL": "log_level",
    "HOTLINE_CONSOLE_INSECURE_COOKIES": "console_insecure_cookies",
    "HOTLINE_WECHAT_WEBHOOK_BASE": "wechat_webhook_base",
    "HOTLINE_TWILIO_ACCOUNT_SID": "twilio_account_sid",
    "HOTLINE_TWILIO_FROM": "twilio_from",
    "HOTLINE_TWILIO_BASE_URL": "twilio_base_url",
    "HOTLINE_TWILIO_AUTH_TOKEN": "twilio_auth_token",
    "HOTLINE_TWILIO_PUBLIC_URL": "twilio_public_url",
    "HOTLINE_DATA_KEY_FILE": "data_key_file",
    "HOTLINE_ASTERISK_FULL_LOG": "asterisk_full_log",
    **{f"HOTLINE_RETENTION_{kind.upper()}_DAYS": f"retention_{kind}_days"
       for kind in ("cases", "recordings", "audit", "notices", "sessions", "blocklist")},
    "HOTLINE_AGI_ALLOWED_HOSTS": "agi_allowed_hosts",  # comma-separated IP addresses
    "HOTLINE_SURGEON_HOST": "surgeon_host",
    "HOTLINE_CLUSTER_NAME": "cluster_name",
    "HOTLINE_NODE_NAME": "node_name",
    "HOTLINE_AGI_TARGETS": "agi_targets",  # comma-separated ip:port, by slot
    "HOTLINE_AGI_FIRST": "agi_first",
    "HOTLINE_SERVICE_SLOT": "service_slot",
    "HOTLINE_RECORDINGS_PATH": "recordings_path",
    "HOTLINE_RECONCILE_EVERY_S": "reconcile_every_s",
    "HOTLINE_CONSOLE_PUBLIC_URL": "console_public_url",
    "HOTLINE_PHOTO_LINK_ON_CASE_OPEN": "photo_link_on_case_open",
}
_PORT_ENV_PREFIX = "HOTLINE_PORT_"  # e.g. HOTLINE_PORT_SIP=15060
_WECHAT_KEY_PREFIX = "HOTLINE_WECHAT_KEY_"  # e.g. HOTLINE_WECHAT_KEY_DESK, ..._FACIAL
_SECRET_KEYS = frozenset({"wechat_keys", "twilio_auth_token"})  # env or files only


def load_config(
    file: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: object,
) -> HotlineConfig:
    """Build the configuration: defaults, then `file` (TOML), then env, then overrides.

    `file` defaults to $HOTLINE_CONFIG when set. Unknown keys are errors, so a
    typo in a config file is reported rather than silently ignored.
    """
    env = os.environ if env is None else env
    values: dict[str, object] = {}
    ports: dict[str, int] = {}
    path = file or (Path(env["HOTLINE_CONFIG"]) if env.get("HOTLINE_CONFIG") else None)
    if path is not None:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        ports.update({k: int(v) for k, v in data.pop("ports", {}).items()})
        if _SECRET_KEYS & set(data):
            raise ValueError(f"{', '.join(sorted(_SECRET_KEYS & set(data)))}: secrets are read "
                             "from HOTLINE_* environment variables or files, not the config file")
        values.update(data)
    for key, name in _ENV_KEYS.items():
        if env.get(key):
            values[name] = env[key]
    for key, raw in env.items():
        if key.startswith(_PORT_ENV_PREFIX):
            ports[key[len(_PORT_ENV_PREFIX):].lower()] = int(raw)
    wechat_keys = sorted((key[len(_WECHAT_KEY_PREFIX):].lower(), raw.strip())
                         for key, raw in env.items()
                         if key.startswith(_WECHAT_KEY_PREFIX) and raw.strip())
    if wechat_keys:
        values["wechat_keys"] = tuple(wechat_keys)
    ports.update(overrides.pop("ports", {}) or {})  # type: ignore[arg-type]
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(HotlineConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    port_fields = {f.name for f in dataclasses.fields(Ports)}
    if set(ports) - port_fields:
        raise ValueError(f"unknown ports: {', '.join(sorted(set(ports) - port_fields))}")
    for name in ("console_insecure_cookies", "asterisk_full_log"):
        if isinstance(values.get(name), str):
            flag = str(values[name]).strip().lower()
            if flag not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError(f"{name}: use 1/0, true/false or yes/no")
            values[name] = flag in ("1", "true", "yes")
    for name in [k for k in values if k.startswith("retention_") and isinstance(values[k], str)]:
        try:
            values[name] = int(str(values[name]).strip())
        except ValueError:
            raise ValueError(f"{name}: a whole number of days") from None
    if "asterisk_nodes" in values:
        values["asterisk_nodes"] = _asterisk_nodes(values["asterisk_nodes"])
    if "agi_targets" in values:
        from dialplans.render import check_agi_target

        raw_targets = values["agi_targets"]
        items = raw_targets.split(",") if isinstance(raw_targets, str) else raw_targets
        values["agi_targets"] = tuple(check_agi_target(str(t).strip()) for t in items)  # type: ignore[union-attr]
    if "agi_first" in values:
        values["agi_first"] = int(str(values["agi_first"]))
    if "reconcile_every_s" in values:
        every = int(str(values["reconcile_every_s"]))
        if not 1 <= every <= 86400:
            raise ValueError("reconcile_every_s: 1 to 86400 seconds")
        values["reconcile_every_s"] = every
    if "service_slot" in values:
        from ivr.channel_vars import heartbeat_var

        values["service_slot"] = int(str(values["service_slot"]))
        heartbeat_var(values["service_slot"])  # type: ignore[arg-type]  # 1..9, else ValueError
    if values.get("node_name"):
        from dialplans.render import NODE_NAME

        if not NODE_NAME.fullmatch(str(values["node_name"])):
            raise ValueError(f"node_name: {str(values['node_name'])[:40]!r} is not a node name")
    if "surgeon_host" in values:
        # An IPv4 literal only: it becomes the trunk's identify match and contact
        # verbatim, and a name would put a DNS lookup on every surgeon's ring.
        try:
            values["surgeon_host"] = str(ipaddress.IPv4Address(str(values["surgeon_host"]).strip()))
        except ValueError:
            raise ValueError(f"surgeon_host: {str(values['surgeon_host'])[:60]!r} "
                             "is not an IPv4 address") from None
    if "agi_allowed_hosts" in values:
        values["agi_allowed_hosts"] = _ip_addresses("agi_allowed_hosts", values["agi_allowed_hosts"])
    for name in ("var_dir", "asterisk_root", "menu_file"):
        if name in values:
            values[name] = Path(str(values[name])).expanduser().resolve()
    return HotlineConfig(ports=Ports(**ports), **values)  # type: ignore[arg-type]


def _ip_addresses(key: str, raw: object) -> tuple[str, ...]:
    """A list of IP addresses from TOML (a list) or the environment (comma-separated).

    Names are refused, not resolved: an allow-list that follows DNS is only as
    trustworthy as the resolver. An empty list is refused too -- it would
    silently send every call to the dialplan's fallback.
    """
    items = raw.split(",") if isinstance(raw, str) else raw
    if not isinstance(items, (list, tuple)):
        raise ValueError(f"{key}: a list of IP addresses")
    hosts = []
    for item in items:
        text = str(item).strip()
        try:
            hosts.append(str(ipaddress.ip_address(text)))
        except ValueError:
            raise ValueError(f"{key}: {text[:60]!r} is not an IP address") from None
    if not hosts:
        raise ValueError(f"{key}: at least one address (the Asterisk host)")
    return tuple(hosts)
