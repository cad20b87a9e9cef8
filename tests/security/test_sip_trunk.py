"""Issue 18, items 1 and 8 (RTP) -- the surgeons' trunk is known by its address, never by a name.

The trunk to the surgeons' phones has no password. Before, PJSIP identified
requests by their From user too, so anybody naming the trunk ("surgeons") was
taken for it: into the dialplan, a channel with media, no security event. Now
the trunk is matched by its source address alone (hotline surgeon_host,
127.0.0.2 here) and every other request is challenged like an unknown caller
and written to the security log, where the shipped fail2ban filter counts it.

The attackers speak from addresses of their own on loopback (127.0.0.5-7:
SIPp binds any of 127/8), never the callers' 127.0.0.1 or the trunk's. Each
test has its own address because Asterisk counts unidentified requests per
address over 5 s and then stays quiet about it until it forgets the address.
"""
from __future__ import annotations

import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from attack_support import SIPP_PORT, fail2ban_regex, require_tools, run_sipp
from conftest_support import LogTail
from db.repo import CaseRepository
from db.session import make_engine
from testphones.baresip import BaresipPhone, PhoneAccount

pytestmark = pytest.mark.integration

TRUNK = "surgeons"  # the trunk endpoint's name in pjsip.conf
FORGER = "127.0.0.6"
PROBER = "127.0.0.7"
FLOODER = "127.0.0.5"
# The real callers of the flood test. Not 127.0.0.1: Asterisk counts
# unidentified requests per source address (a caller's first, unauthenticated
# INVITE is one) and remembers an address for 30 s, so after an earlier test's
# probes from 127.0.0.1 even an honest caller's first INVITE there is logged as
# InvalidAccountID. Callers are known by their auth user, from any address.
CALLER_HOST = "127.0.0.8"
# The flood of the acceptance: 100 INVITEs a second for 10 s.
FLOOD_RATE, FLOOD_S = 100, 10
# Names a flood forges: the trunk's, the callers' auth user, a surgeon's phone.
FORGED_NAMES = (TRUNK, "caller", "13700000101", "100", "admin")


@pytest.fixture(autouse=True)
def _tools() -> None:
    require_tools("sipp", "fail2ban-regex", "ss")


def _case_callers(db_url: str) -> list[str]:
    engine = make_engine(db_url)
    try:
        return [case.caller.raw_safe for case in CaseRepository(engine).recent(1000)]
    finally:
        engine.dispose()


def _names_file(path: Path, names: tuple[str, ...]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("SEQUENTIAL\n" + "".join(f"{name};\n" for name in names), encoding="utf-8")
    return path


def _invalid_account_lines(text: str, address: str) -> list[str]:
    return [entry for entry in text.splitlines()
            if 'SecurityEvent="InvalidAccountID"' in entry
            and f'RemoteAddress="IPV4/UDP/{address}/' in entry]


def _final_codes(responses: list[str]) -> list[str]:
    return [r.split()[1] for r in responses if not r.split()[1].startswith("1")]


def test_a_request_naming_the_trunk_from_elsewhere_is_challenged_and_logged(line, tmp_path):
    log = LogTail(line.config.instance_dir / "log" / "security.log")
    callers_before = _case_callers(line.config.db_url)
    calls = 12
    run = run_sipp(line.config.ports.sip, SIPP_PORT, "invite_unidentified.xml", tmp_path / "sipp",
                   keys={"dialled": "96608"}, calls=calls, rate=20, local_ip=FORGER,
                   inf=_names_file(tmp_path / "names.csv", (TRUNK,)))
    assert run.returncode == 0, run.output
    # Each forged INVITE was challenged like an unknown caller's: the trunk's
    # name opened nothing. (SIPp's exit code says every call ended that way;
    # a retransmitted INVITE under load may draw its 401 twice.)
    finals = _final_codes(run.responses)
    assert set(finals) == {"401"} and len(finals) >= calls, run.responses
    assert _case_callers(line.config.db_url) == callers_before
    # From the 5th within 5 s each one is a security event, naming the forger.
    logged = calls - 4
    text = log.wait_for(lambda t: len(_invalid_account_lines(t, FORGER)) >= logged)
    entries = _invalid_account_lines(text, FORGER)
    assert len(entries) == logged, text[-3000:]
    assert all(f'AccountID="{TRUNK}"' in entry for entry in entries)
    captured = tmp_path / "security.log"
    captured.write_text(text, encoding="utf-8")
    result = fail2ban_regex(captured, "hotline-asterisk-sip")
    assert result.hosts == {FORGER: logged}, result.raw["summary"]


def test_options_do_not_tell_the_trunks_name(line, tmp_path):
    """The trunk's name is answered like any other name: a challenge, not 200."""
    answers = {}
    for name in (TRUNK, "no-such-endpoint"):
        run = run_sipp(line.config.ports.sip, SIPP_PORT, "options_scan.xml", tmp_path / name,
                       keys={"from_user": name}, local_ip=PROBER)
        answers[name] = (run.returncode, _final_codes(run.responses))
    assert answers == {TRUNK: (0, ["401"]), "no-such-endpoint": (0, ["401"])}, answers


def test_the_trunk_is_known_by_its_address(line, tmp_path):
    """From the surgeons' network's own address, whatever the name, the trunk answers."""
    host = line.config.surgeon_host
    assert host not in ("127.0.0.1", FORGER, PROBER, FLOODER)
    run = run_sipp(line.config.ports.sip, SIPP_PORT, "options_answered.xml", tmp_path / "sipp",
                   keys={"from_user": "keepalive"}, local_ip=host)
    assert run.returncode == 0, run.output
    assert _final_codes(run.responses) == ["200"], run.responses


class _Caller:
    """A desk phone on CALLER_HOST that authenticates; times dial -> answer, then hangs up."""

    def __init__(self, line, workdir: Path, number: str):
        self.sip_port = line.config.ports.sip
        self.phone = BaresipPhone(workdir, [PhoneAccount(
            number, port=self.sip_port, auth_user="caller", password=line.config.sip_secret())],
            name=f"caller-{number}", host=CALLER_HOST)

    def answer_delay(self) -> float:
        self.phone.start()
        try:
            started = time.monotonic()
            self.phone.dial(f"sip:96608@127.0.0.1:{self.sip_port}")
            self.phone.wait_event("CALL_ESTABLISHED", timeout_s=30)
            delay = time.monotonic() - started
            self.phone.hangup()
            self.phone.wait_event("CALL_CLOSED", timeout_s=10)
            return delay
        finally:
            self.phone.stop()


def test_a_spoofed_flood_barely_delays_a_real_callers_answer(line, tmp_path):
    """100 forged INVITEs a second for 10 s (every name, the trunk's too) beside real calls."""
    log = LogTail(line.config.instance_dir / "log" / "security.log")
    baseline = [_Caller(line, tmp_path / f"quiet-{n}", f"1395550010{n}").answer_delay()
                for n in range(2)]
    flood_result = {}
    calls = FLOOD_RATE * FLOOD_S

    def flood() -> None:
        flood_result["run"] = run_sipp(
            line.config.ports.sip, SIPP_PORT, "invite_unidentified.xml", tmp_path / "flood",
            keys={"dialled": "96608"}, calls=calls, rate=FLOOD_RATE, local_ip=FLOODER,
            inf=_names_file(tmp_path / "names.csv", FORGED_NAMES), timeout_s=FLOOD_S + 20)

    flooder = threading.Thread(target=flood, name="flood")
    flood_started = time.monotonic()
    flooder.start()
    during = []
    for n in range(3):
        time.sleep(max(0.0, flood_started + 1.5 + 3 * n - time.monotonic()))
        during.append(_Caller(line, tmp_path / f"flood-{n}", f"1395550020{n}").answer_delay())
    flooder.join(timeout=FLOOD_S + 40)
    run = flood_result["run"]
    print(f"answer delay: quiet {baseline}, during the flood {during}")
    assert run.returncode == 0, run.output
    finals = _final_codes(run.responses)
    assert set(finals) == {"401"} and len(finals) >= calls, (len(finals), sorted(set(finals)))
    # The real callers were answered, each within 1 s of how fast it is without a flood.
    assert max(during) - statistics.median(baseline) < 1.0, (baseline, during)
    # None of the forged INVITEs opened a case.
    assert not set(_case_callers(line.config.db_url)) & set(FORGED_NAMES)
    # The flood is visible to fail2ban: the shipped filter counts the flooder
    # (its first 5 s, from the 5th INVITE) and nobody else.
    text = log.wait_for(lambda t: len(_invalid_account_lines(t, FLOODER)) >= 100)
    captured = tmp_path / "security.log"
    captured.write_text(text, encoding="utf-8")
    result = fail2ban_regex(captured, "hotline-asterisk-sip")
    print(f"fail2ban filter over the flood: {result.hosts}")
    assert set(result.hosts) == {FLOODER} and result.hosts[FLOODER] >= 100, result.raw["summary"]
    assert result.hosts[FLOODER] == len(_invalid_account_lines(text, FLOODER))


def test_rtp_is_bound_to_the_sip_address(line, tmp_path):
    """During a call, every RTP/RTCP socket of this instance is on 127.0.0.1, none on 0.0.0.0."""
    ports = line.config.ports
    phone = BaresipPhone(tmp_path / "caller", [PhoneAccount(
        "13955500301", port=ports.sip, auth_user="caller", password=line.config.sip_secret())],
        name="rtp-caller").start()
    try:
        phone.dial(f"sip:96608@127.0.0.1:{ports.sip}")
        phone.wait_event("CALL_ESTABLISHED", timeout_s=30)
        out = subprocess.run(["ss", "-H", "-uan", f"( sport >= :{ports.rtp_start} and "
                              f"sport <= :{ports.rtp_end} )"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        phone.hangup()
        phone.wait_event("CALL_CLOSED", timeout_s=10)
    finally:
        phone.stop()
    local = [row.split()[3] for row in out.splitlines() if row.strip()]
    # RTP and RTCP of the caller's channel at least.
    assert len(local) >= 2, out
    assert {address.rpartition(":")[0] for address in local} == {"127.0.0.1"}, out
