"""A whole call through the real Asterisk: a caller phone and the surgeons' phone network.

Used by `hotline call` and by the integration tests. The surgeons' phones are
one baresip process with an account per phone number, listening where the
hotline's surgeon trunk points. Each incoming ring is handled by the next
behaviour in `surgeons` (the last one repeats):
  accept   answer, then press 1
  decline  answer, then press 2
  no-key   answer and say nothing (a mobile voicemail box)
  ignore   let it ring out
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from hotline.config import SURGEON_HOST
from testphones.baresip import BaresipPhone, Event, PhoneAccount, PhoneError, trunk_phones

BEHAVIOURS = ("accept", "decline", "no-key", "ignore")


@dataclass
class Ring:
    number: str
    behaviour: str
    at: float


@dataclass
class CallResult:
    rings: list[Ring] = field(default_factory=list)
    caller_connected: bool = False
    bridged_to: str | None = None
    caller_closed: str | None = None
    answered_at: float | None = None  # time.monotonic() when the hotline answered
    log: list[str] = field(default_factory=list)


class SurgeonPhones:
    """The phones of every surgeon and the duty nurse, answering per a script."""

    def __init__(self, workdir: Path, numbers: list[str], port: int, surgeons: list[str],
                 say: Callable[[str], None] = print, answer_delay_s: float = 0.5,
                 hook: Callable[[str], None] = lambda event: None, host: str = SURGEON_HOST):
        for b in surgeons:
            if b not in BEHAVIOURS:
                raise ValueError(f"unknown surgeon behaviour {b!r}; one of {', '.join(BEHAVIOURS)}")
        self.phone = trunk_phones(workdir, numbers, port, "surgeon-phones", host)
        self.script = list(surgeons) or ["accept"]
        self.say = say
        self.answer_delay_s = answer_delay_s
        self.rings: list[Ring] = []
        self.bridged_to: str | None = None
        self.hook = hook
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="surgeon-phones", daemon=True)

    def start(self) -> "SurgeonPhones":
        self.phone.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.phone.stop()

    def _behaviour(self) -> str:
        index = min(len(self.rings), len(self.script) - 1)
        return self.script[index]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.phone.wait_event("CALL_INCOMING", timeout_s=0.5)
            except PhoneError:
                continue
            behaviour = self._behaviour()
            self.rings.append(Ring(event.user, behaviour, time.monotonic()))
            self.say(f"  surgeon phone {event.user} rings ({behaviour})")
            self.hook(f"ring:{event.user}")
            if behaviour == "ignore":
                continue
            try:
                self._answer(event, behaviour)
            except PhoneError as exc:
                self.say(f"  surgeon phone {event.user}: {exc}")

    def _answer(self, event: Event, behaviour: str) -> None:
        time.sleep(self.answer_delay_s)
        self.phone.accept(event.user)
        self.phone.wait_event("CALL_ESTABLISHED", user=event.user, timeout_s=5)
        if behaviour == "no-key":
            self.say(f"  surgeon phone {event.user} answered, pressed nothing")
            return
        time.sleep(1.0)  # the whisper starts; Read() takes the key during its prompt
        key = "1" if behaviour == "accept" else "2"
        self.phone.press(key)
        self.say(f"  surgeon phone {event.user} pressed {key}")
        if behaviour == "accept":
            self.bridged_to = event.user
            self.hook(f"accepted:{event.user}")


def place_call(*, workdir: Path, sip_port: int, number: str, password: str,
               caller_number: str, press: str, surgeon_port: int, surgeon_numbers: list[str],
               surgeons: list[str], talk_s: float = 3.0, timeout_s: float = 120.0,
               hangup_in_menu: bool = False, press_gap_s: float = 0.3, press_after_s: float = 1.0,
               say: Callable[[str], None] = print,
               hook: Callable[[str], None] = lambda event: None,
               surgeon_host: str = SURGEON_HOST) -> CallResult:
    """Dial the hotline from `caller_number`, press `press`, and play the surgeons' script.

    The caller hangs up `talk_s` after being bridged, or when `timeout_s` runs
    out, or right after pressing when `hangup_in_menu`. `hook` hears the
    moments a test may want to break something at: "answered" (the hotline
    answered the caller), "ring:<number>", "accepted:<number>". The surgeons'
    phones listen on `surgeon_host`:`surgeon_port`, where the hotline's trunk points.
    """
    result = CallResult()
    surgeons_net = SurgeonPhones(workdir / "surgeons", surgeon_numbers, surgeon_port, surgeons,
                                 say=say, hook=hook, host=surgeon_host).start()
    caller = BaresipPhone(workdir / "caller", [PhoneAccount(
        caller_number, port=sip_port, auth_user="caller", password=password)], name="caller")
    try:
        caller.start()
        say(f"caller {caller_number} dials {number}")
        caller.dial(f"sip:{number}@127.0.0.1:{sip_port}")
        caller.wait_event("CALL_ESTABLISHED", timeout_s=10)
        result.caller_connected = True
        result.answered_at = time.monotonic()
        hook("answered")
        time.sleep(press_after_s)
        if press:
            say(f"caller presses {press}")
            caller.press(press, gap_s=press_gap_s)
        if hangup_in_menu:
            caller.hangup()
            result.caller_closed = "caller hung up in the menu"
            return result
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if surgeons_net.bridged_to is not None:
                say(f"bridged: caller <-> surgeon {surgeons_net.bridged_to}; talking {talk_s:.0f}s")
                time.sleep(talk_s)
                caller.hangup()
                result.caller_closed = "caller hung up after talking"
                break
            try:
                closed = caller.wait_event("CALL_CLOSED", timeout_s=0.5)
                result.caller_closed = f"hotline ended the call ({closed.param})"
                break
            except PhoneError:
                continue
        else:
            caller.hangup()
            result.caller_closed = "caller gave up (timeout)"
        try:
            caller.wait_event("CALL_CLOSED", timeout_s=5)
        except PhoneError:
            pass
    finally:
        result.rings = list(surgeons_net.rings)
        result.bridged_to = surgeons_net.bridged_to
        caller.stop()
        surgeons_net.stop()
    return result
