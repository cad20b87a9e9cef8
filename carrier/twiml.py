"""TwiML documents for the hotline over Twilio Voice: pure builders, no I/O.

Each function returns the XML text Twilio reads. Everything that goes in is
ours (prompt texts from ivr/menu.toml, phones from the roster, URLs we built);
nothing a caller sent is ever put into a document.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from twilio.twiml.voice_response import Gather, VoiceResponse

SAY_LANGUAGE = {"zh": "zh-CN", "en": "en-US"}
_NATIONAL = re.compile(r"[0-9]{3,20}", re.ASCII)


class TwimlError(ValueError):
    """A value that cannot go into TwiML (a phone that is not a number)."""


def e164(phone: str) -> str:
    """A roster phone (Chinese national form, see routing.callers.normalise_number) in E.164.

    >>> e164("13800000001"), e164("043188888888"), e164("0012125550100")
    ('+8613800000001', '+8643188888888', '+12125550100')
    """
    if not isinstance(phone, str) or not _NATIONAL.fullmatch(phone):
        raise TwimlError("a phone is 3..20 ASCII digits")
    if phone.startswith("00"):
        return "+" + phone[2:]
    if phone.startswith("0"):
        return "+86" + phone[1:]
    return "+86" + phone


def _say(node, texts: Sequence[str], language: str) -> None:
    for text in texts:
        if text:
            node.say(text, language=SAY_LANGUAGE.get(language, "zh-CN"))


def menu(texts: Sequence[str], language: str, action: str, timeout_s: int,
         no_input: str) -> str:
    """Say `texts` inside a one-key <Gather> posting to `action`; no key -> <Redirect> to `no_input`."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, method="POST", timeout=timeout_s)
    _say(gather, texts, language)
    response.append(gather)
    response.redirect(no_input, method="POST")
    return str(response)


def dial(texts: Sequence[str], language: str, phone: str, ring_s: int, action: str,
         whisper: str, recording_callback: str | None) -> str:
    """Say `texts` to the caller, then ring one phone; its leg first runs `whisper`.

    `recording_callback`: record the bridged call (from the answer, both sides)
    and report it there; None: no recording.
    """
    return dial_all(texts, language, [(phone, whisper)], ring_s, action, recording_callback)


MAX_NUMBERS = 10  # Twilio rings at most ten <Number>s of one <Dial> at once


def dial_all(texts: Sequence[str], language: str, legs: Sequence[tuple[str, str]], ring_s: int,
             action: str, recording_callback: str | None) -> str:
    """Say `texts`, then ring every (phone, whisper URL) of `legs` at once.

    Twilio connects the first leg to pick up and hangs up the others; that
    leg's whisper still decides whether it is bridged (press 1).
    """
    if not 1 <= len(legs) <= MAX_NUMBERS:
        raise TwimlError(f"one <Dial> rings 1..{MAX_NUMBERS} phones")
    response = VoiceResponse()
    _say(response, texts, language)
    options = {"action": action, "method": "POST", "timeout": ring_s}
    if recording_callback is not None:
        options.update(record="record-from-answer-dual",
                       recording_status_callback=recording_callback,
                       recording_status_callback_method="POST")
    node = response.dial(**options)
    for phone, whisper_url in legs:
        node.number(e164(phone), url=whisper_url, method="POST")
    return str(response)


def whisper(texts: Sequence[str], accept_action: str, timeout_s: int, tries: int) -> str:
    """What the rung surgeon hears: who calls and "press 1", `tries` times, then hang up.

    A leg that ends here (no key: a mobile voicemail box) never reaches the caller.
    """
    response = VoiceResponse()
    for _ in range(tries):
        gather = Gather(num_digits=1, action=accept_action, method="POST", timeout=timeout_s)
        _say(gather, texts, "zh")
        response.append(gather)
    response.hangup()
    return str(response)


def bridge() -> str:
    """An empty document: on the surgeon's leg, ends the whisper and bridges the call."""
    return str(VoiceResponse())


def voicemail(texts: Sequence[str], language: str, action: str, recording_callback: str,
              max_s: int = 120) -> str:
    """Say `texts`, then record a voicemail after a beep."""
    response = VoiceResponse()
    _say(response, texts, language)
    response.record(action=action, method="POST", max_length=max_s, play_beep=True,
                    recording_status_callback=recording_callback,
                    recording_status_callback_method="POST")
    return str(response)


def goodbye(texts: Sequence[str], language: str) -> str:
    """Say `texts` and hang up."""
    response = VoiceResponse()
    _say(response, texts, language)
    response.hangup()
    return str(response)


def fallback(texts: Sequence[str], phone: str, ring_s: int) -> str:
    """The static fallback: ring the duty-nurse station, no whisper, no service."""
    response = VoiceResponse()
    _say(response, texts, "zh")
    response.dial(timeout=ring_s).number(e164(phone))
    return str(response)
