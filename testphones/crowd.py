"""Several calls at once: callers that dial and wait side by side, surgeon phones that ring together.

`testphones.scenario` plays one call from start to end; a major incident needs
more: two or three callers in a queue at the same time, and surgeon phones
that ring at once and answer only when the test says so (so it can see every
INVITE before anyone picks up). Used by tests/integration/test_incidents_live.py.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from hotline.config import SURGEON_HOST
from testphones.baresip import BaresipPhone, PhoneAccount, PhoneError, trunk_phones


@dataclass
class Ring:
    number: str
    at: float  # time.monotonic() when the INVITE reached the phone
    call_id: str


class SurgeonBank:
    """Every surgeon phone in one baresip process; each phone follows `plan`.

    plan[number] is "accept" (answer, then press 1) or "ignore" (let it ring);
    numbers not in the plan are ignored. Nobody answers before `release()`:
    a test sees every ring of a ring-all first. Answers are serialised (one
    process, one "current call" for DTMF).
    """

    def __init__(self, workdir: Path, numbers: list[str], port: int, plan: dict[str, str],
                 say: Callable[[str], None] = lambda line: None, host: str = SURGEON_HOST):
        self.phone = trunk_phones(workdir, numbers, port, "surgeon-bank", host)
        self.plan = dict(plan)
        self.say = say
        self.rings: list[Ring] = []
        self.accepted: list[str] = []
        self._released = threading.Event()
        self._answer_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="surgeon-bank", daemon=True)

    def start(self) -> "SurgeonBank":
        self.phone.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._released.set()
        self._thread.join(timeout=5)
        self.phone.stop()

    def release(self) -> None:
        """Let the phones whose plan is "accept" answer (the ones ringing and any later)."""
        self._released.set()

    def wait_rings(self, numbers: set[str], timeout_s: float = 30.0, since: int = 0) -> list[Ring]:
        """Until each of `numbers` has rung (among rings[since:]); those rings."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = {r.number for r in self.rings[since:]}
            if numbers <= seen:
                return [r for r in self.rings[since:] if r.number in numbers]
            time.sleep(0.1)
        raise AssertionError(f"rings {sorted(numbers)} not all seen; saw "
                             f"{[r.number for r in self.rings[since:]]}")

    def wait_accepted(self, number: str, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while number not in self.accepted:
            if time.monotonic() > deadline:
                raise AssertionError(f"{number} never pressed 1; rings {[r.number for r in self.rings]}")
            time.sleep(0.1)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                event = self.phone.wait_event("CALL_INCOMING", timeout_s=0.5)
            except PhoneError:
                continue
            self.rings.append(Ring(event.user, time.monotonic(), event.call_id))
            behaviour = self.plan.get(event.user, "ignore")
            self.say(f"  surgeon phone {event.user} rings ({behaviour})")
            if behaviour == "accept":
                threading.Thread(target=self._answer, args=(event.user,), daemon=True).start()

    def _answer(self, user: str) -> None:
        self._released.wait()
        if self._stop.is_set():
            return
        with self._answer_lock:
            try:
                self.phone.accept(user)
                self.phone.wait_event("CALL_ESTABLISHED", user=user, timeout_s=5)
                time.sleep(1.0)  # the whisper starts; Read() takes the key during its prompt
                self.phone.press("1")
                self.accepted.append(user)
                self.say(f"  surgeon phone {user} pressed 1")
            except PhoneError as exc:
                self.say(f"  surgeon phone {user}: {exc}")


class Caller:
    """One caller phone of its own (own process and port): dial, press, wait, hang up."""

    def __init__(self, workdir: Path, sip_port: int, password: str, caller_number: str,
                 number: str = "96608"):
        self.number = number
        self.sip_port = sip_port
        self.caller_number = caller_number
        self.phone = BaresipPhone(workdir, [PhoneAccount(
            caller_number, port=sip_port, auth_user="caller", password=password)],
            name=f"caller-{caller_number}")
        self.closed: str | None = None

    def start(self) -> "Caller":
        self.phone.start()
        return self

    def dial(self, press: str = "", press_after_s: float = 2.5, timeout_s: float = 10) -> "Caller":
        """Dial the hotline; once answered, wait `press_after_s` and press `press`."""
        self.phone.dial(f"sip:{self.number}@127.0.0.1:{self.sip_port}")
        self.phone.wait_event("CALL_ESTABLISHED", timeout_s=timeout_s)
        if press:
            time.sleep(press_after_s)
            self.phone.press(press)
        return self

    def wait_closed(self, timeout_s: float = 30.0) -> str:
        """Until the hotline ends the call; its reason."""
        if self.closed is None:
            self.closed = self.phone.wait_event("CALL_CLOSED", timeout_s=timeout_s).param
        return self.closed

    def hangup(self) -> None:
        if self.closed is None:
            try:
                self.phone.hangup()
                self.closed = self.phone.wait_event("CALL_CLOSED", timeout_s=5).param
            except PhoneError:
                self.closed = "gone"

    def stop(self) -> None:
        self.hangup()
        self.phone.stop()
