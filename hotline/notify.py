"""How a notice reaches its recipient: the `Notifier` interface and a logging one.

The real channels -- WeChat Work group robots, SMS through Twilio, and the
`RoutingNotifier` that picks them per notice -- are in `hotline.notifiers`
(docs/notifications.md). `LogNotifier` is what a notice falls back to when no
channel is configured for it: the duty desk reads the log.
"""
from __future__ import annotations

import logging
from typing import Protocol

from oncall.model import Surgeon
from network.notifications import mask_numbers
from oncall.notices import Notice

logger = logging.getLogger(__name__)


class NotifyError(Exception):
    """The notice was not delivered (now); the deliver job tries again later."""


class Notifier(Protocol):
    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        """Deliver `notice` to `recipient` (None: the duty desk), or raise `NotifyError`.

        Called from the scheduler's worker thread, one notice at a time; may
        block for a while (a network call), but should give up within seconds.
        """
        ...


class LogNotifier:
    """Logs one line per notice (INFO), the Chinese text with its line breaks escaped."""

    def __init__(self, log: logging.Logger = logger):
        self._log = log

    def send(self, notice: Notice, recipient: Surgeon | None) -> None:
        who = "duty desk" if recipient is None else f"surgeon {recipient.id} {recipient.name}"
        # Logs never hold whole phone numbers (issue 9): the notice's are cut to four digits.
        self._log.info("notice %s %s to %s: %s", escape(notice.key), notice.kind, escape(who),
                       escape(mask_numbers(notice.text_zh)))


def escape(text: str) -> str:
    """`text` on one log line: non-printable characters as Python escapes, `\\` doubled.

    Chinese text and punctuation stay readable.

    >>> escape("张三\\r\\n排班\\\\")
    '张三\\\\r\\\\n排班\\\\\\\\'
    """
    return "".join(
        "\\\\" if ch == "\\" else ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )
