"""The console process of a local instance (`hotline up` / `down` / `status`), and the
demo's admin account.

The demo serves plain HTTP on loopback, so its session cookie is not Secure
(`HOTLINE_CONSOLE_INSECURE_COOKIES=1` in the console's environment only); a
production console sits behind a TLS proxy with the default Secure cookies.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from hotline import proc
from hotline.config import HotlineConfig, _secret_file
from hotline.instance import InstanceError

DEMO_ADMIN = "admin"


def _pid_file(config: HotlineConfig) -> Path:
    return config.instance_dir / "console.pid"


def console_pid(config: HotlineConfig) -> int | None:
    try:
        pid = int(_pid_file(config).read_text())
    except (OSError, ValueError):
        return None
    line = proc.cmdline(pid)
    return pid if b"hotline" in line and b"console" in line and proc.alive(pid) else None


def start_console(config: HotlineConfig, *, insecure_cookies: bool = True,
                  timeout_s: float = 20.0) -> int:
    """Start `hotline console` on 127.0.0.1:<ports.console> in the background; wait until it answers."""
    pid = console_pid(config)
    if pid is not None:
        return pid
    env = dict(os.environ)
    if insecure_cookies:
        env["HOTLINE_CONSOLE_INSECURE_COOKIES"] = "1"
    log_file = config.instance_dir / "log" / "console.log"
    pid = proc.spawn_detached([sys.executable, "-m", "hotline", "--instance", config.instance,
                               "console", "--port", str(config.ports.console)], log_file, env)
    _pid_file(config).write_text(f"{pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive(pid):
            raise InstanceError(f"the console exited during start; see {log_file}")
        try:
            with socket.create_connection(("127.0.0.1", config.ports.console), timeout=0.5):
                return pid
        except OSError:
            time.sleep(0.2)
    raise InstanceError(f"the console did not listen on {config.ports.console}; see {log_file}")


def stop_console(config: HotlineConfig, timeout_s: float = 10.0) -> bool:
    pid = console_pid(config)
    _pid_file(config).unlink(missing_ok=True)
    if pid is None:
        return False
    proc.terminate(pid, timeout_s)
    return True


def ensure_demo_admin(config: HotlineConfig) -> tuple[str, str]:
    """The demo's admin account: (username, password); the password is generated
    once and kept 0600 in the instance directory."""
    from db.session import make_engine
    from db.users import UserRole, UserStore

    password = _secret_file(config.instance_dir / "console-admin.password")
    engine = make_engine(config.db_url)
    try:
        users = UserStore(engine)
        if users.by_username(DEMO_ADMIN) is None:
            users.create(DEMO_ADMIN, password, UserRole.ADMIN, display_name="演示管理员")
    finally:
        engine.dispose()
    return DEMO_ADMIN, password
