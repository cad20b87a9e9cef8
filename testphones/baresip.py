"""Drive baresip (Debian `baresip-core`) as a SIP phone over its ctrl_tcp socket.

ctrl_tcp speaks netstrings of JSON: commands `{"command", "params", "token"}`,
answers `{"response": true, "ok", "data", "token"}` and events
`{"event": true, "type": "CALL_INCOMING", "accountaor", "id", ...}`.

Surprises (field-notes.md): baresip rejects an INVITE whose request-URI user
matches none of its accounts, so one process with one account per phone number
stands in for a whole mobile network; it hangs up when its `aufile` source WAV
ends, so the microphone file is long; REGISTER_OK fires before the control port
is open, so nothing here waits for it.
"""
from __future__ import annotations

import itertools
import json
import logging
import queue
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hotline.config import SURGEON_HOST

logger = logging.getLogger(__name__)

MODULE_DIR = "/usr/lib/baresip/modules"


class PhoneError(RuntimeError):
    """The phone did not start, answer a command, or see an expected event."""


@dataclass
class PhoneAccount:
    """One SIP identity of the phone: `user@host:port`, optionally with digest credentials."""

    user: str
    host: str = "127.0.0.1"
    port: int | None = None
    auth_user: str | None = None
    password: str | None = None

    @property
    def aor(self) -> str:
        return f"sip:{self.user}@{self.host}" + (f":{self.port}" if self.port else "")

    def line(self) -> str:
        params = ["regint=0", "audio_codecs=PCMU,PCMA", "answermode=manual"]
        if self.auth_user:
            params += [f"auth_user={self.auth_user}", f"auth_pass={self.password}"]
        return f"<{self.aor};transport=udp>;" + ";".join(params)


@dataclass
class Event:
    type: str
    aor: str
    call_id: str
    param: str
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def user(self) -> str:
        """The phone number part of the account the event belongs to."""
        return self.aor.split(":", 1)[-1].split("@", 1)[0]


def _free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` free for both TCP and UDP (baresip listens on both for SIP)."""
    for _ in range(50):
        with socket.socket() as tcp:
            tcp.bind((host, 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise PhoneError("no free loopback port")


def make_speech_wav(path: Path, bursts: int = 30) -> Path:
    """A long 'voice' for the phone's microphone: 2 s of tone, 4 s of pause, repeated.

    Long because baresip hangs up when the file ends; pauses because a
    voicemail Record() ends on 3 s of silence, as it would after real speech.
    """
    if not path.exists():
        subprocess.run(
            ["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth", "2",
             "sine", "300-500", "vol", "0.3", "pad", "0", "4", "repeat", str(bursts - 1)],
            check=True, capture_output=True,
        )
    return path


def trunk_phones(workdir: Path, numbers: list[str], port: int, name: str,
                 host: str = SURGEON_HOST) -> "BaresipPhone":
    """One baresip process for the phones behind the surgeons' trunk: an account per number.

    It listens on the trunk's own address `host` (the hotline's surgeon_host):
    the trunk is recognised by that source address, so phones elsewhere --
    the callers on 127.0.0.1 -- could not speak for it.
    """
    return BaresipPhone(workdir, [PhoneAccount(n, host=host) for n in sorted(set(numbers))],
                        sip_port=port, name=name, host=host)


class BaresipPhone:
    """A baresip process with one or more accounts, listening on `host`:`sip_port`."""

    def __init__(self, workdir: Path, accounts: list[PhoneAccount], sip_port: int = 0,
                 name: str = "phone", host: str = "127.0.0.1"):
        if shutil.which("baresip") is None:
            raise PhoneError("baresip is not installed (apt-get install baresip-core)")
        self.workdir = Path(workdir)
        self.accounts = accounts
        self.host = host
        self._fixed_sip_port = bool(sip_port)
        self.sip_port = sip_port or _free_port(host)
        self.ctrl_port = _free_port()
        self.name = name
        self.events: "queue.Queue[Event]" = queue.Queue()
        self.history: list[Event] = []
        self._responses: dict[str, "queue.Queue[dict]"] = {}
        self._tokens = itertools.count(1)
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._backlog: list[Event] = []

    # -- lifecycle -------------------------------------------------------
    def start(self, timeout_s: float = 15.0, tries: int = 3) -> "BaresipPhone":
        """Start baresip; on a failed start (a port taken meanwhile) try again on new ports."""
        for attempt in range(tries):
            try:
                return self._start_once(timeout_s)
            except PhoneError:
                if attempt == tries - 1:
                    raise
                logger.warning("%s: baresip did not start; trying new ports", self.name)
                self.ctrl_port = _free_port()
                if not self._fixed_sip_port:
                    self.sip_port = _free_port(self.host)
        raise AssertionError("unreachable")

    def _start_once(self, timeout_s: float) -> "BaresipPhone":
        self.workdir.mkdir(parents=True, exist_ok=True)
        mic = make_speech_wav(self.workdir / "speech.wav")
        (self.workdir / "config").write_text("\n".join([
            "poll_method epoll",
            f"sip_listen {self.host}:{self.sip_port}",
            f"audio_player aufile,{self.workdir / 'heard.wav'}",
            f"audio_source aufile,{mic}",
            f"audio_alert aufile,{self.workdir / 'alert.wav'}",
            f"module_path {MODULE_DIR}",
            "module g711.so",
            "module aufile.so",
            "module_app account.so",
            "module_app menu.so",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            "",
        ]))
        (self.workdir / "accounts").write_text("\n".join(a.line() for a in self.accounts) + "\n")
        self._log = open(self.workdir / "baresip.log", "ab")
        self._proc = subprocess.Popen(
            ["baresip", "-f", str(self.workdir)], stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self._sock = socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=1)
                break
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    tail = (self.workdir / "baresip.log").read_text(errors="replace")[-600:]
                    raise PhoneError(f"{self.name}: baresip did not open its control port; "
                                     f"its log ends:\n{tail}")
                time.sleep(0.1)
        self._sock.settimeout(None)
        self._reader = threading.Thread(target=self._read_loop, name=f"{self.name}-ctrl", daemon=True)
        self._reader.start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            try:
                self._send({"command": "quit", "params": "", "token": "quit"})
            except OSError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._reader is not None:
            self._reader.join(timeout=2)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "BaresipPhone":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- protocol --------------------------------------------------------
    def _send(self, obj: dict) -> None:
        data = json.dumps(obj).encode()
        with self._lock:
            assert self._sock is not None
            self._sock.sendall(str(len(data)).encode() + b":" + data + b",")

    def _read_loop(self) -> None:
        buf = b""
        sock = self._sock
        while sock is not None:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while True:
                colon = buf.find(b":")
                if colon < 0:
                    break
                length = int(buf[:colon])
                if len(buf) < colon + 1 + length + 1:
                    break
                payload = buf[colon + 1: colon + 1 + length]
                buf = buf[colon + 2 + length:]
                self._dispatch(json.loads(payload))

    def _dispatch(self, msg: dict) -> None:
        if msg.get("response"):
            q = self._responses.get(msg.get("token", ""))
            if q is not None:
                q.put(msg)
        elif msg.get("event"):
            event = Event(msg.get("type", ""), msg.get("accountaor", ""), msg.get("id", ""),
                          msg.get("param", ""), msg)
            logger.debug("%s event %s %s %s", self.name, event.type, event.aor, event.param)
            self.history.append(event)
            self.events.put(event)

    def command(self, command: str, params: str = "", timeout_s: float = 5.0) -> dict:
        token = f"t{next(self._tokens)}"
        q: "queue.Queue[dict]" = queue.Queue()
        self._responses[token] = q
        try:
            self._send({"command": command, "params": params, "token": token})
            reply = q.get(timeout=timeout_s)
        except queue.Empty:
            raise PhoneError(f"{self.name}: no answer to {command!r}") from None
        finally:
            self._responses.pop(token, None)
        if not reply.get("ok"):
            raise PhoneError(f"{self.name}: {command!r} failed: {reply.get('data')!r}")
        return reply

    def wait_event(self, *types: str, user: str | None = None, timeout_s: float = 30.0) -> Event:
        """The next event of one of `types` (for account `user` if given).

        Events that do not match are kept for a later wait, not dropped: with
        several phones in one process, one phone's ring may arrive while a
        test waits for another phone's answer.
        """
        def matches(event: Event) -> bool:
            return event.type in types and (user is None or event.user == user)

        with self._lock:
            for index, event in enumerate(self._backlog):
                if matches(event):
                    return self._backlog.pop(index)
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = ", ".join(f"{e.type}({e.user})" for e in self.history[-10:])
                raise PhoneError(f"{self.name}: no {'/'.join(types)} within {timeout_s}s; last: {seen}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if matches(event):
                return event
            with self._lock:
                self._backlog.append(event)
                del self._backlog[:-500]  # bounded: old noise (RTCP reports) goes

    # -- actions ---------------------------------------------------------
    def select(self, account: PhoneAccount | str) -> None:
        aor = account.aor if isinstance(account, PhoneAccount) else account
        self.command("uafind", aor)

    def dial(self, uri: str) -> None:
        self.command("dial", uri)

    def accept(self, user: str | None = None) -> None:
        if user is not None:
            self.select(self._account(user))
        self.command("accept")

    def press(self, digits: str, gap_s: float = 0.3) -> None:
        """Send RFC 4733 DTMF on the current call."""
        for digit in digits:
            self.command("sndcode", digit)
            time.sleep(gap_s)

    def hangup(self, user: str | None = None) -> None:
        if user is not None:
            self.select(self._account(user))
        self.command("hangup")

    def _account(self, user: str) -> PhoneAccount:
        for account in self.accounts:
            if account.user == user:
                return account
        raise PhoneError(f"{self.name}: no account for {user!r}")
