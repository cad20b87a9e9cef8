"""Hostile callers: caller IDs, key presses and dialled strings that a caller controls.

The calls are scripted with SIPp (tests/integration/sipp/*.xml) as the
`caller-info` endpoint: digest auth, DTMF as SIP INFO, no RTP from the caller.
That endpoint is identified by its auth user, so the From header is free text,
the way a carrier presents whatever caller ID it was given.

What Asterisk 22 makes of a From user part, as these tests pin it down:
- pjproject percent-decodes the user part ('%24%28reboot%29' -> '$(reboot)');
- res_pjsip cuts the number at the first ';' ("'%3BDROP..." -> "'", and
  '%3BDROP...' -> '', which the service reads as no caller ID at all);
- and keeps at most 79 characters (an AST_CHANNEL_NAME-sized buffer);
- a decoded NUL ends the string ('12%00345' -> '12');
- decoded CR/LF are kept, and go raw into the FastAGI environment and into
  AMI events (see test_caller_id_with_escaped_crlf_still_gets_a_case).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import pytest

from cases.lifecycle import MENU_CHOICES, Case
from db.repo import CaseRepository
from db.session import make_engine
from routing.escalation import AttemptOutcome
from testphones.scenario import SurgeonPhones

from attack_support import BASE
from conftest_support import HERE, NURSE, Hotline, LogTail

pytestmark = pytest.mark.integration

SIPP_DIR = HERE / "sipp"
CALL_SCENARIO = SIPP_DIR / "caller_info_dtmf.xml"
REFUSED_SCENARIO = SIPP_DIR / "caller_info_refused.xml"
# SIPp's own ports, clear of the attack suite's instance (attack_support: +538..+799,
# +900..) -- HOTLINE_TEST_PORT_BASE moves both.
SIPP_SIP_PORT = BASE + 300
SIPP_MEDIA_PORT = BASE + 320

# RFC 3261 user part: unreserved / escaped / user-unreserved. ';' is legal too,
# but it separates SIPp's injection fields, so it must travel as %3B.
_SIP_USER = re.compile(r"(?:[A-Za-z0-9\-_.!~*'()&=+$,?/]|%[0-9A-Fa-f]{2})+", re.ASCII)
_WAIT_TICK = "receive timeout on message"  # the scenario's wait loop, not an error


@pytest.fixture(autouse=True)
def _sipp_installed() -> None:
    if shutil.which("sipp") is None:
        reason = "SIPp is not installed (apt-get install sip-tester)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def nurse_phone(hotline: Hotline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SurgeonPhones]:
    """The surgeons' phone network (the duty nurse among them): every ring is answered with 1."""
    phones = SurgeonPhones(tmp_path_factory.mktemp("phones"), hotline.phones,
                           hotline.config.ports.surgeon_phones, ["accept"],
                           say=lambda text: None).start()
    try:
        yield phones
    finally:
        phones.stop()


# -- SIPp ----------------------------------------------------------------
def name_addr(user: str, display: str | None = None, host: str = "127.0.0.1") -> str:
    """A From name-addr; `user` must already be a legal (percent-escaped) SIP user part."""
    assert _SIP_USER.fullmatch(user), f"not a legal SIP user part: {user[:40]!r}"
    if display is None:
        return f"<sip:{user}@{host}>"
    quoted = display.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <sip:{user}@{host}>'


@dataclass
class SippRun:
    returncode: int
    workdir: Path
    messages: list[tuple[str, str]]  # ("sent" | "received", first line of the message)
    errors: str

    def received(self, prefix: str) -> list[str]:
        return [first for way, first in self.messages if way == "received" and first.startswith(prefix)]

    def sent(self, prefix: str) -> list[str]:
        return [first for way, first in self.messages if way == "sent" and first.startswith(prefix)]

    @property
    def hung_up_by(self) -> str | None:
        """Who sent the BYE: 'caller' (SIPp), 'hotline', or None."""
        for way, first in self.messages:
            if first.startswith("BYE "):
                return "caller" if way == "sent" else "hotline"
        return None

    def __str__(self) -> str:
        flow = "\n".join(f"  {'>>' if way == 'sent' else '<<'} {first[:100]}" for way, first in self.messages)
        return f"SIPp exit {self.returncode} in {self.workdir}\n{flow}\nerrors:\n{self.errors[-2000:]}"


class Sipp:
    """One SIPp call (-m 1) against the test instance, in the background."""

    def __init__(self, line: Hotline, workdir: Path, scenario: Path, *, dialled: str, from_hdr: str,
                 digits: str = "", pre_ms: int = 1000, hold_ms: int = 3000, timeout_s: int = 30):
        for field in (dialled, from_hdr, digits):
            assert not set(field) & set(";\r\n\0"), f"cannot inject {field[:40]!r} through SIPp's CSV"
        assert re.fullmatch(r"[0-9A-D*#]*", digits), digits
        self.workdir = workdir
        self.timeout_s = timeout_s
        workdir.mkdir(parents=True, exist_ok=True)
        inject = workdir / "inject.csv"
        inject.write_text(f"SEQUENTIAL\n{dialled};{from_hdr};{digits};\n", encoding="utf-8")
        self.message_file = workdir / "messages.log"
        self.error_file = workdir / "errors.log"
        self.cmd = [
            "sipp", f"127.0.0.1:{line.config.ports.sip}", "-sf", str(scenario),
            "-inf", str(inject), "-au", "caller-info", "-ap", line.config.sip_secret(),
            "-i", "127.0.0.1", "-p", str(SIPP_SIP_PORT), "-mp", str(SIPP_MEDIA_PORT),
            "-m", "1", "-nostdin", "-timeout", f"{timeout_s}s", "-timeout_error",
            "-trace_err", "-error_file", str(self.error_file),
            "-trace_msg", "-message_file", str(self.message_file),
        ]
        if scenario == CALL_SCENARIO:
            self.cmd += ["-set", "pre_ms", str(pre_ms), "-set", "hold_ms", str(hold_ms)]
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Sipp":
        self._out = open(self.workdir / "sipp.out", "wb")
        self.proc = subprocess.Popen(self.cmd, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def finish(self) -> SippRun:
        """Wait for SIPp (bounded by its own -timeout plus a margin), then read its logs."""
        assert self.proc is not None
        try:
            returncode = self.proc.wait(timeout=self.timeout_s + 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            returncode = self.proc.wait()
        finally:
            self._out.close()
        errors = ""
        if self.error_file.exists():
            errors = "\n".join(line for line in self.error_file.read_text(errors="replace").splitlines()
                               if _WAIT_TICK not in line)
        return SippRun(returncode, self.workdir, _read_messages(self.message_file), errors)

    def run(self) -> SippRun:
        return self.start().finish()


def _read_messages(path: Path) -> list[tuple[str, str]]:
    """(direction, first line) of each SIP message in SIPp's -trace_msg log."""
    messages: list[tuple[str, str]] = []
    if not path.exists():
        return messages
    way = None
    for text in path.read_text(errors="replace").splitlines():
        header = re.match(r"UDP message (sent|received) ", text)
        if header:
            way = header.group(1)
        elif way and text.strip():
            messages.append((way, text.strip()))
            way = None
    return messages


# -- the hotline's side ----------------------------------------------------
def service_log(line: Hotline) -> LogTail:
    return LogTail(line.config.instance_dir / "log" / "service.log")


def asterisk_log(line: Hotline, name: str = "full.log") -> LogTail:
    return LogTail(line.config.instance_dir / "log" / name)


def cases_since(line: Hotline, since: datetime) -> list[Case]:
    engine = make_engine(line.config.db_url)
    try:
        return [c for c in CaseRepository(engine).recent(50) if c.started_at >= since]
    finally:
        engine.dispose()


def wait_for(what: str, check: Callable[[], object], timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def the_case_since(line: Hotline, since: datetime, timeout_s: float = 20.0) -> Case:
    """The one case started after `since`, once the service has written it whole."""
    found: list[Case] = []

    def finished() -> bool:
        nonlocal found
        found = cases_since(line, since)
        return bool(found) and all(c.ended_at is not None and (c.connected_seq is None or c.recording_path)
                                   for c in found)

    try:
        wait_for("a finished case", finished, timeout_s)
    except AssertionError:
        raise AssertionError(f"no finished case since {since:%T}; saw {found!r}") from None
    assert len(found) == 1, f"one call made {len(found)} cases: {found!r}"
    return found[0]


def assert_safe_display(case: Case) -> None:
    safe = case.caller.raw_safe
    assert not set(safe) & {"\r", "\n", "\0"}, repr(safe)
    assert len(safe) <= 64, len(safe)


# -- a) hostile caller IDs ------------------------------------------------
DIGITS_1000 = "0123456789" * 100

# (id, From user as sent (percent-escaped), display name, CALLERID(num) as Asterisk presents it, class)
HOSTILE_CALLER_IDS = [
    ("sql-cut-at-semicolon", "'%3BDROP%20TABLE%20cases--", None, "'", "invalid"),
    ("sql-cut-to-nothing", "%3BDROP%20TABLE%20cases--", None, None, "anonymous"),
    ("sql-quote", "1'%20OR%20'1'='1'--", None, "1' OR '1'='1'--", "invalid"),
    ("shell", "%24%28reboot%29", None, "$(reboot)", "invalid"),
    ("dial-string", "500&PJSIP/trunk/0014165551212", None, "500&PJSIP/trunk/0014165551212", "invalid"),
    ("1000-digits", DIGITS_1000, None, DIGITS_1000[:79], "invalid"),
    ("path", "../../etc/passwd", None, "../../etc/passwd", "invalid"),
    ("escaped-nul", "12%00345", None, "12", "invalid"),
    ("unicode-display-name", "13611110021", '急诊 Dr. Müller 👩\u200d⚕️ <script>alert(1)</script>', "13611110021", "public"),
    ("anonymous", "anonymous", "Anonymous", "anonymous", "anonymous"),
]


@pytest.mark.parametrize(("sent", "display", "presented", "caller_class"),
                         [p[1:] for p in HOSTILE_CALLER_IDS], ids=[p[0] for p in HOSTILE_CALLER_IDS])
def test_hostile_caller_id_is_recorded_safely_and_reaches_the_duty_nurse(
        line: Hotline, nurse_phone: SurgeonPhones, tmp_path: Path,
        sent: str, display: str | None, presented: str | None, caller_class: str):
    log = service_log(line)
    nurse_phone.bridged_to = None
    rings_before = len(nurse_phone.rings)
    since = datetime.now(timezone.utc)
    host = "anonymous.invalid" if sent == "anonymous" else "127.0.0.1"
    # Press 0 (duty nurse) once the greeting plays; stay on the line until the hotline hangs up.
    call = Sipp(line, tmp_path / "sipp", CALL_SCENARIO, dialled="96608",
                from_hdr=name_addr(sent, display, host), digits="0", pre_ms=1000, hold_ms=20000).start()
    try:
        wait_for("the duty nurse to accept", lambda: nurse_phone.bridged_to == NURSE or not call.running(), 20)
        assert nurse_phone.bridged_to == NURSE, "SIPp ended before the nurse accepted"
        wait_for("the case to record the connection",
                 lambda: any(c.connected_seq for c in cases_since(line, since)), 10)
        time.sleep(0.5)  # bridged: caller and nurse talk
        nurse_phone.phone.hangup(NURSE)  # the hotline then hangs up on the caller
    finally:
        run = call.finish()
    assert run.returncode == 0, str(run)
    assert run.received("SIP/2.0 200 OK") and run.hung_up_by == "hotline", str(run)
    assert [r.number for r in nurse_phone.rings[rings_before:]] == [NURSE]

    case = the_case_since(line, since)
    assert case.caller.raw == presented, f"stored {case.caller.raw!r}, Asterisk presents {presented!r}"
    assert case.caller.caller_class.value == caller_class
    assert_safe_display(case)
    assert case.caller.number == (presented if caller_class == "public" else None)
    assert [m.choice for m in case.menu] == ["0"]
    assert case.team == "nurse" and case.outcome == "nurse"
    assert [(a.kind, a.phone, a.outcome) for a in case.attempts] == [("nurse", NURSE, AttemptOutcome.ACCEPTED)]
    assert case.hangup_by == "surgeon"
    assert "Traceback" not in log.new()


# -- the same, with CR/LF in the caller ID ----------------------------------
# Asterisk decodes %0D%0A in the From user into CALLERID(num) and would write it
# raw into the FastAGI environment and AMI events; the dialplan filters control
# characters out before anything else, so these callers get a whole case.
CRLF_CALLER_IDS = [
    # Decoded: "13611110041\r\nnot a key": a line the service cannot parse.
    ("breaks-the-agi-environment", "13611110041%0D%0Anot%20a%20key"),
    # Decoded: "13611110041\r\nagi_arg_1: x": a well-formed extra AGI variable.
    ("adds-an-agi-variable", "13611110041%0D%0Aagi_arg_1%3A%20x"),
]


@pytest.mark.parametrize("sent", [p[1] for p in CRLF_CALLER_IDS], ids=[p[0] for p in CRLF_CALLER_IDS])
def test_caller_id_with_escaped_crlf_gets_a_whole_case(line: Hotline, tmp_path: Path, sent: str):
    log = service_log(line)
    since = datetime.now(timezone.utc)
    run = Sipp(line, tmp_path / "sipp", CALL_SCENARIO, dialled="96608", from_hdr=name_addr(sent),
               digits="7", pre_ms=1000, hold_ms=2500).run()
    assert run.returncode == 0, str(run)
    assert "Traceback" not in log.new()
    case = the_case_since(line, since, timeout_s=7)
    assert_safe_display(case)
    assert not case.fallback and [m.choice for m in case.menu][:1] == ["invalid"]
    assert case.caller.caller_class.value == "invalid", case.caller  # not the number before the CR
    assert case.hangup_by == "caller"  # the hangup handler's call_end was accepted


# -- b) a flood of keys -------------------------------------------------
def test_200_dtmf_digits_take_one_menu_turn_and_never_drop_the_caller(
        line: Hotline, nurse_phone: SurgeonPhones, tmp_path: Path):
    log = service_log(line)
    # None of them a menu option (8 is "call me back" now): the invalid path, whatever lands.
    keys = ("7*#56" * 40)[:200]
    since = datetime.now(timezone.utc)
    run = Sipp(line, tmp_path / "sipp", CALL_SCENARIO, dialled="96608",
               from_hdr=name_addr("13611110051"), digits=keys, pre_ms=1000, hold_ms=3000).run()
    assert run.returncode == 0, str(run)
    assert len(run.sent("INFO ")) == 200, str(run)  # each one answered 200, or SIPp fails
    assert run.hung_up_by == "caller", "the hotline hung up first:\n" + str(run)

    case = the_case_since(line, since)
    assert case.hangup_by == "caller"
    choices = [m.choice for m in case.menu]
    assert 1 <= len(choices) <= 2, choices  # menu-test.toml: max_retries = 1
    assert choices[0] == "invalid" and set(choices) <= {"invalid", "timeout"}, choices
    assert all(m.choice in MENU_CHOICES and len(m.label) <= 128 for m in case.menu)
    assert "Traceback" not in log.new()


# -- c) dialplan injection in the dialled number ---------------------------
@pytest.mark.parametrize("dialled", [
    "500&PJSIP%2Ftrunk%2F0014165551212",
    "96608&PJSIP%2Ftrunk%2F0014165551212",
])
def test_dial_string_as_the_request_uri_is_refused_with_404(line: Hotline, tmp_path: Path, dialled: str):
    full, messages = asterisk_log(line), asterisk_log(line, "messages.log")
    since = datetime.now(timezone.utc)
    run = Sipp(line, tmp_path / "sipp", REFUSED_SCENARIO, dialled=dialled,
               from_hdr=name_addr("13611110061"), timeout_s=15).run()
    # The scenario passes only on a final 404 after the digest challenge.
    assert run.returncode == 0, str(run)
    assert run.received("SIP/2.0 404") and not run.received("SIP/2.0 200"), str(run)
    decoded = dialled.replace("%2F", "/")
    time.sleep(0.5)  # Asterisk's logger thread
    assert (f"to extension '{decoded}' rejected because extension not found in context "
            "'hotline-callers'") in messages.new()
    asterisk_did = full.new()
    assert "Dial(" not in asterisk_did and "Executing [" not in asterisk_did
    assert cases_since(line, since) == []
