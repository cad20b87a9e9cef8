"""The phone network a callback reaches: surgeons' phones and the caller's phone on one trunk.

A callback rings a surgeon first and then dials the caller's number over the
same surgeons' trunk, so one baresip process on the trunk's port must hold an
account for every surgeon *and* one for the caller's number (baresip rejects
an INVITE whose request-URI user it has no account for: "UA not found").
Unlike `scenario.SurgeonPhones`, nothing here answers by itself: the test
says which phone answers, presses what, and hangs up, step by step.
"""
from __future__ import annotations

import time
from pathlib import Path

from hotline.config import SURGEON_HOST
from testphones.baresip import Event, trunk_phones


class TrunkPhones:
    """Phones for `numbers` behind the surgeons' trunk, driven one step at a time."""

    def __init__(self, workdir: Path, numbers: list[str], port: int,
                 host: str = SURGEON_HOST) -> None:
        self.phone = trunk_phones(workdir, numbers, port, "trunk-phones", host)
        self.rings: list[str] = []

    def __enter__(self) -> "TrunkPhones":
        self.phone.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.phone.stop()

    def wait_ring(self, timeout_s: float = 30.0) -> Event:
        """The next phone that rings (any number); remembered in `rings`."""
        event = self.phone.wait_event("CALL_INCOMING", timeout_s=timeout_s)
        self.rings.append(event.user)
        return event

    def answer(self, number: str, timeout_s: float = 10.0) -> None:
        """Pick up the ringing phone `number` and wait until the call is up."""
        self.phone.accept(number)
        self.phone.wait_event("CALL_ESTABLISHED", user=number, timeout_s=timeout_s)

    def press(self, digits: str, after_s: float = 1.0) -> None:
        """Press keys on the call just answered (after the prompt has begun)."""
        time.sleep(after_s)
        self.phone.press(digits)

    def hang_up(self, number: str) -> None:
        self.phone.hangup(number)

    def wait_closed(self, number: str, timeout_s: float = 15.0) -> Event:
        return self.phone.wait_event("CALL_CLOSED", user=number, timeout_s=timeout_s)
