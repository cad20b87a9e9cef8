"""A sandboxed Asterisk 22: a cached Debian sid root, run with chroot in a private mount namespace.

Debian bookworm has no Asterisk; sid has 22.x. `ensure_root()` debootstraps sid
with asterisk once into a cache outside the work tree (the mirror is read from
this machine's apt sources) and reuses it afterwards. `start()` bind-mounts the
project's var/ directory into the root at the same absolute path, so config,
prompts and recordings have one path for Asterisk and for the service, and the
mounts vanish with the Asterisk process (private mount namespace).
"""
from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hotline import proc

logger = logging.getLogger(__name__)

READY_MARK = ".hotline-root-ready"
PACKAGES = ("asterisk", "asterisk-core-sounds-en-wav")
ASTERISK_MODULE_DIR = "/usr/lib/x86_64-linux-gnu/asterisk/modules"


class SandboxError(RuntimeError):
    """The sandbox could not be provisioned or Asterisk would not start."""


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt uses (never a hard-coded host).

    Reads deb822 `*.sources` files and one-line `sources.list` entries and
    returns the first URI that serves the main archive (not -security).
    """
    candidates: list[str] = []
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in path.read_text(errors="replace").split("\n\n"):
            if re.search(r"^Enabled:\s*no", stanza, re.M | re.I):
                continue
            m = re.search(r"^URIs:\s*(.+)$", stanza, re.M)
            if m and re.search(r"^Types:.*\bdeb\b", stanza, re.M):
                candidates.extend(m.group(1).split())
    lists = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
                if m:
                    candidates.append(m.group(1))
    for uri in candidates:
        if "security" not in uri and uri.rstrip("/").endswith("/debian"):
            return uri
    for uri in candidates:
        if "security" not in uri:
            return uri
    raise SandboxError("no Debian mirror found in the apt sources; set HOTLINE_DEBIAN_MIRROR")


def ensure_root(root: Path, mirror: str | None = None, log=print) -> Path:
    """Provision the cached sid root with Asterisk unless it is already there. Idempotent."""
    if (root / READY_MARK).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    lock_path = root.parent / (root.name + ".lock")
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two processes provisioning at once wait here
        if (root / READY_MARK).exists():
            return root
        if shutil.which("debootstrap") is None:
            raise SandboxError("debootstrap is not installed (apt-get install debootstrap)")
        mirror = mirror or apt_mirror()
        staging = root.parent / (root.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        log(f"provisioning Asterisk sandbox in {root} from {mirror} (about a minute, once)")
        cmd = [
            "debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            "sid", str(staging), mirror,
        ]
        # A system tree: world-readable as Debian makes it, whatever umask the
        # CLI runs with (it is 077 for the instance's own files).
        result = subprocess.run(cmd, capture_output=True, text=True, umask=0o022)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
            raise SandboxError(f"debootstrap failed ({result.returncode}):\n{tail}")
        # Asterisk looks for /etc/asterisk at startup even with -C; keep it empty.
        (staging / READY_MARK).write_text(mirror + "\n")
        if root.exists():
            shutil.rmtree(root)
        staging.rename(root)
    return root


def asterisk_version(root: Path) -> str:
    out = subprocess.run(["chroot", str(root), "asterisk", "-V"], capture_output=True, text=True)
    return out.stdout.strip()


@dataclass
class AsteriskProcess:
    """One running sandboxed Asterisk; `stop()` ends it and, with it, its mounts."""

    root: Path
    instance_dir: Path
    pid: int
    log_file: Path

    def alive(self) -> bool:
        return proc.alive(self.pid)

    def stop(self, timeout_s: float = 15.0) -> None:
        proc.terminate(self.pid, timeout_s)
        (self.instance_dir / "asterisk.pid").unlink(missing_ok=True)


def start_asterisk(root: Path, instance_dir: Path, mounts: list[Path]) -> AsteriskProcess:
    """Start Asterisk in the background on the config in `instance_dir/etc`.

    `mounts` are host directories made visible at the same path inside the root.
    The process is its own session so it outlives the command that started it.
    """
    if os.geteuid() != 0:
        raise SandboxError("the Asterisk sandbox needs root (chroot and mount namespaces)")
    existing = running_asterisk(root, instance_dir)
    if existing is not None:
        return existing
    conf = instance_dir / "etc" / "asterisk.conf"
    if not conf.is_file():
        raise SandboxError(f"{conf} is missing: render the config first")
    # Asterisk runs as root: without this, cdr.db, cel.db, its logs, AstDB and
    # MixMonitor's recordings come out 0644, readable by every local user.
    lines = ["set -e", "umask 077"]
    for host_dir in mounts:
        host_dir = host_dir.resolve()
        inner = root / str(host_dir).lstrip("/")
        lines.append(f"mkdir -p {_sh(inner)} && mount --bind {_sh(host_dir)} {_sh(inner)}")
    lines.append(f"mount -t proc proc {_sh(root / 'proc')}")
    lines.append(f"exec chroot {_sh(root)} /usr/sbin/asterisk -f -n -C {_sh(conf)}")
    log_file = private_file(instance_dir / "log" / "console.log")
    pid = proc.spawn_detached(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", "\n".join(lines)],
        log_file)
    (instance_dir / "asterisk.pid").write_text(f"{pid}\n")
    return AsteriskProcess(root, instance_dir, pid, log_file)


def running_asterisk(root: Path, instance_dir: Path) -> AsteriskProcess | None:
    """The Asterisk started earlier for this instance, if its pid is still Asterisk."""
    try:
        pid = int((instance_dir / "asterisk.pid").read_text())
    except (OSError, ValueError):
        return None
    found = AsteriskProcess(root, instance_dir, pid, instance_dir / "log" / "console.log")
    return found if b"asterisk" in proc.cmdline(pid) and found.alive() else None


def private_file(path: Path) -> Path:
    """Create `path` (and its dir) if missing and make it 0600; returns it.

    For a log that a launched process appends to: the shell that opens it for
    the process would otherwise create it with the starter's umask.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    os.chmod(path, 0o600)
    return path


def _sh(path: Path | str) -> str:
    return shlex.quote(str(path))


def name_the_host(root: Path) -> Path:
    """Make the sandbox root's /etc/hosts name `localhost` and this machine's host name.

    Without it glibc asks DNS for the host's own name -- pjproject does at
    Asterisk's start, for IPv4 and IPv6, and Asterisk did on every call while
    RTP was bound to 0.0.0.0 -- which waits out the resolver's whole timeout
    when the name server does not answer (docs/security.md, SIP). Both
    families are named: an IPv4-only entry still sends the IPv6 lookup to
    DNS. The root is shared by every instance on the machine and read by
    running ones: only a missing name is added, the lines already there are
    kept, and the file is replaced atomically. Idempotent.
    """
    hosts = root / "etc" / "hosts"
    try:
        text = hosts.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    known: dict[str, set[str]] = {"127.0.0.1": set(), "::1": set()}
    for entry in text.splitlines():
        fields = entry.split("#", 1)[0].split()
        if fields:
            known["::1" if ":" in fields[0] else "127.0.0.1"].update(fields[1:])
    names = [name for name in dict.fromkeys(("localhost", socket.gethostname())) if name]
    added = [f"{address}\t{' '.join(missing)}\n" for address, names_there in known.items()
             if (missing := [name for name in names if name not in names_there])]
    if added:
        if text and not text.endswith("\n"):
            text += "\n"
        tmp = hosts.with_name(f".hosts.{os.getpid()}.tmp")
        tmp.write_text(text + "".join(added), encoding="utf-8")
        os.chmod(tmp, 0o644)  # a system file every resolver in the root reads; no secrets
        tmp.replace(hosts)
    return hosts
