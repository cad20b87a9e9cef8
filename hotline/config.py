"""Configuration, read once in layers: defaults <- TOML file <- HOTLINE_* environment.

Nothing below the composition root reads the environment; everything gets a
`HotlineConfig` (or the part of it it needs) passed in.
"""
from __future__ import annotations

import dataclasses
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
    ports: Ports = field(default_factory=Ports)
    log_level: str = "INFO"
    # The console's session cookie is Secure (HTTPS only) unless this is set for
    # plain-HTTP development on loopback (the demo sets it).
    console_insecure_cookies: bool = False

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
}
_PORT_ENV_PREFIX = "HOTLINE_PORT_"  # e.g. HOTLINE_PORT_SIP=15060


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
        values.update(data)
    for key, name in _ENV_KEYS.items():
        if env.get(key):
            values[name] = env[key]
    for key, raw in env.items():
        if key.startswith(_PORT_ENV_PREFIX):
            ports[key[len(_PORT_ENV_PREFIX):].lower()] = int(raw)
    ports.update(overrides.pop("ports", {}) or {})  # type: ignore[arg-type]
    values.update(overrides)
    known = {f.name for f in dataclasses.fields(HotlineConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown configuration keys: {', '.join(sorted(unknown))}")
    port_fields = {f.name for f in dataclasses.fields(Ports)}
    if set(ports) - port_fields:
        raise ValueError(f"unknown ports: {', '.join(sorted(set(ports) - port_fields))}")
    if isinstance(values.get("console_insecure_cookies"), str):
        flag = str(values["console_insecure_cookies"]).strip().lower()
        if flag not in ("1", "0", "true", "false", "yes", "no"):
            raise ValueError("console_insecure_cookies: use 1/0, true/false or yes/no")
        values["console_insecure_cookies"] = flag in ("1", "true", "yes")
    for name in ("var_dir", "asterisk_root", "menu_file"):
        if name in values:
            values[name] = Path(str(values[name])).expanduser().resolve()
    return HotlineConfig(ports=Ports(**ports), **values)  # type: ignore[arg-type]
