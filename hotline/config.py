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
    ports: Ports = field(default_factory=Ports)
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
    # empty: instance_dir/data.key, generated on first use. Keep it off the
    # database host's backups, or the backups are readable.
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

    @property
    def instance_dir(self) -> Path:
        return self.var_dir / "asterisk" / self.instance

    @property
    def prompts_dir(self) -> Path:
        return self.var_dir / "prompts"

    @property
    def recordings_dir(self) -> Path:
        return self.var_dir / "recordings" / self.instance

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / (self.instance + '.db')}"

    def ami_secret(self) -> str:
        """The AMI secret for this instance, generated once and kept 0600 in var/."""
        return _secret_file(self.instance_dir / "ami.secret")

    def sip_secret(self) -> str:
        """The password of the test-phone SIP endpoints, generated like the AMI one."""
        return _secret_file(self.instance_dir / "sip.secret")

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
        return Path(self.data_key_file).expanduser() if self.data_key_file else \
            self.instance_dir / "data.key"

    def vault(self, *, create: bool = True):
        """The vault sealing recordings and notes (a new key ring is made if missing)."""
        from vault import Vault, load_keyring

        return Vault(load_keyring(self.data_key_path, create=create))


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
