"""One local hotline instance: sandboxed Asterisk + service + SQLite, as `hotline up` runs it.

Harness operations only (provision, render, start, stop, ask Asterisk); the
service's own wiring is in hotline/service.py.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from db.session import make_engine, migrate
from dialplans.render import render_all, write_config
from hotline import proc, sandbox
from hotline.config import HotlineConfig
from ivr.menu import load_menu
from recordings.prompts import generate_prompts

class InstanceError(RuntimeError):
    """The local instance could not be prepared, started or reached."""


@contextmanager
def private_files():
    """Files and dirs made inside are for this user only (umask 077), whoever calls.

    The CLI runs under umask 077 already; this covers a caller that is not the
    CLI (the test harness, a script importing this module).
    """
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def make_private(root: Path) -> int:
    """Take group and other permissions off everything under `root`; how many changed.

    Once, for a runtime dir written before instances kept their files private
    (a demo from an older checkout): its database and recordings were 0644.
    Symlinks are left alone (their targets may be anybody's).
    """
    changed = 0
    for path in [root, *root.rglob("*")] if root.is_dir() else []:
        try:
            if path.is_symlink():
                continue
            mode = path.stat().st_mode & 0o7777
            if mode & 0o077:
                os.chmod(path, mode & ~0o077)
                changed += 1
        except OSError:
            continue  # vanished meanwhile (a WAL file), or not ours to change
    return changed


def prepare(config: HotlineConfig, log=print) -> None:
    """Provision the sandbox root, synthesise prompts, render the config, migrate the database."""
    sandbox.ensure_root(config.asterisk_root, config.debian_mirror or None, log=log)
    sandbox.name_the_host(config.asterisk_root)
    with private_files():
        config.var_dir.mkdir(parents=True, exist_ok=True)
        tightened = make_private(config.var_dir)
        if tightened:
            log(f"made {tightened} files and dirs under {config.var_dir} private to their owner")
        menu = load_menu(config.menu_file)
        written = generate_prompts(menu.prompts, config.prompts_dir)
        if written:
            log(f"synthesised {len(written)} prompt files into {config.prompts_dir}")
        render(config)
        migrate(config.db_url)


def render(config: HotlineConfig) -> Path:
    with private_files():
        return _render(config)


def _render(config: HotlineConfig) -> Path:
    menu = load_menu(config.menu_file)
    for sub in ("log", "run", "lib", "spool"):
        (config.instance_dir / sub).mkdir(parents=True, exist_ok=True)
    config.recordings_dir.mkdir(parents=True, exist_ok=True)
    files = render_all(
        menu=menu, menu_source=str(config.menu_file), instance=config.instance,
        instance_dir=config.instance_dir, prompts_dir=config.prompts_dir,
        recordings_dir=config.recordings_dir, ports=config.ports, agi_host=config.agi_host,
        ami_secret=config.ami_secret(),
        sip_secret=config.sip_secret(),
        console_ami_secret=config.console_ami_secret(),
        surgeon_host=config.surgeon_host,
        full_log=config.asterisk_full_log,
        agi_targets=config.agi_targets, agi_first=config.agi_first, node_name=config.node_name,
        agi_secret_file=config.agi_secret_file,
    )
    config.agi_secret()  # made before Asterisk first reads it
    etc = config.instance_dir / "etc"
    write_config(files, etc)
    return etc


def seed(config: HotlineConfig, now: datetime | None = None) -> None:
    from db.seed import seed_demo

    with private_files():
        engine = make_engine(config.db_url)
        try:
            seed_demo(engine, now or datetime.now(timezone.utc))
        finally:
            engine.dispose()


def start_asterisk(config: HotlineConfig, timeout_s: float = 30.0) -> sandbox.AsteriskProcess:
    with private_files():
        proc = sandbox.start_asterisk(config.asterisk_root, config.instance_dir, [config.var_dir])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            out = asterisk_cli(config, "core waitfullybooted", timeout_s=10)
            if any("fully booted" in line for line in out):
                return proc
        except InstanceError:
            pass
        if not proc.alive():
            raise InstanceError(f"Asterisk exited during start; see {proc.log_file}")
        if time.monotonic() > deadline:
            raise InstanceError(f"Asterisk did not answer AMI within {timeout_s}s; see {proc.log_file}")
        time.sleep(0.3)


def stop_asterisk(config: HotlineConfig) -> bool:
    running = sandbox.running_asterisk(config.asterisk_root, config.instance_dir)
    if running is not None:
        running.stop()
    # The bind mount vanished with Asterisk's namespace; drop its empty mount point.
    inner = config.asterisk_root / str(config.var_dir.resolve()).lstrip("/")
    try:
        inner.rmdir()
    except OSError:
        pass
    return running is not None


def asterisk_cli(config: HotlineConfig, command: str, timeout_s: float = 10.0) -> list[str]:
    """Run an Asterisk CLI command (`asterisk -rx`) in the sandbox; its output lines.

    The control socket lives in the bind-mounted run dir, visible only in
    Asterisk's private mount namespace, so the command enters it with nsenter.
    No AMI account with `command` privilege has to exist for the harness.
    """
    running = sandbox.running_asterisk(config.asterisk_root, config.instance_dir)
    if running is None:
        raise InstanceError(f"Asterisk of instance {config.instance!r} is not running")
    conf = config.instance_dir / "etc" / "asterisk.conf"
    try:
        out = subprocess.run(
            ["nsenter", "--mount", "--target", str(running.pid), "chroot", str(config.asterisk_root),
             "/usr/sbin/asterisk", "-C", str(conf), "-rx", command],
            capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise InstanceError(f"Asterisk did not answer {command!r} within {timeout_s}s") from None
    if out.returncode != 0:
        raise InstanceError(f"asterisk -rx {command!r} failed: {(out.stderr or out.stdout).strip()[:200]}")
    return out.stdout.splitlines()


def channel_count(config: HotlineConfig) -> int:
    """Active channels in Asterisk right now (tests assert none are left)."""
    for line in asterisk_cli(config, "core show channels count"):
        if "active channel" in line:
            return int(line.split()[0])
    raise InstanceError("could not read the channel count")


# -- the service process ---------------------------------------------------
def _service_pid_file(config: HotlineConfig) -> Path:
    return config.instance_dir / "service.pid"


def start_service(config: HotlineConfig, env: dict[str, str] | None = None,
                  timeout_s: float = 20.0) -> int:
    """Start `hotline serve` (watchdog + worker) in the background; wait until the worker is ready."""
    pid = service_pid(config)
    if pid is not None:
        return pid
    log_file = sandbox.private_file(config.instance_dir / "log" / "service.log")
    ready = config.instance_dir / "service.ready"
    ready.unlink(missing_ok=True)
    pid = proc.spawn_detached(
        [sys.executable, "-m", "hotline", "--instance", config.instance, "serve"], log_file, env)
    with private_files():
        _service_pid_file(config).write_text(f"{pid}\n")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not proc.alive(pid):
            raise InstanceError(f"the service exited during start; see {log_file}")
        if worker_pid(config) is not None:
            return pid
        time.sleep(0.1)
    raise InstanceError(f"the service did not listen on {config.ports.agi}; see {log_file}")


def service_pid(config: HotlineConfig) -> int | None:
    try:
        pid = int(_service_pid_file(config).read_text())
    except (OSError, ValueError):
        return None
    line = proc.cmdline(pid)
    return pid if b"hotline" in line and b"serve" in line and proc.alive(pid) else None


def worker_pid(config: HotlineConfig) -> int | None:
    """The pid of the service worker (under `hotline serve`'s watchdog) once it is ready."""
    try:
        pid = int((config.instance_dir / "service.ready").read_text())
    except (OSError, ValueError):
        return None
    return pid if proc.alive(pid) else None


def stop_service(config: HotlineConfig, timeout_s: float = 15.0) -> bool:
    pid = service_pid(config)
    _service_pid_file(config).unlink(missing_ok=True)
    if pid is None:
        return False
    proc.terminate(pid, timeout_s)
    return True
