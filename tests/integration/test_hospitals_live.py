"""Partner hospitals against the real sandboxed Asterisk: a number imported with
`hotline hospital import` while the service runs is recognised on the next real SIP call
(fast lane to the referral team, the case names the hospital), and the console's hospital
page, in a real browser, lists that case."""
from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from browser_support import (Console, artifacts_dir, headless_chromium, hotline_cli,
                             running_console)
from conftest_support import Hotline
from db.hospitals import HospitalStore
from db.repo import RosterRepository
from db.session import make_engine

pytestmark = pytest.mark.integration

NEW_NUMBER = "043388880001"  # registered by this test's import, not by the seed
REFERRAL_PHONE = "13700000401"
HOSPITAL_ID = 2
TIMEOUT_MS = 30_000


def _wait_for_log(path: Path, needle: str, timeout_s: float = 60.0) -> None:
    """Until the service's log has `needle` (it logs each routing snapshot reload)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise AssertionError(f"the service never logged {needle!r} in {path}")


@pytest.fixture(scope="module")
def imported_call(hotline: Hotline, tmp_path_factory: pytest.TempPathFactory):
    """Import a new hospital with the CLI while the service runs, then call from its number."""
    hotline.workdir.mkdir(parents=True, exist_ok=True)
    hotline.wait_mirror(REFERRAL_PHONE)
    engine = make_engine(hotline.config.db_url)
    try:
        rosters = RosterRepository(engine)
        assert NEW_NUMBER not in rosters.partner_numbers()
        directory = tmp_path_factory.mktemp("directory") / "hospitals.csv"
        directory.write_bytes((
            "编号,名称,等级,城市,电话,联系医生\n"
            f"{HOSPITAL_ID},延边大学附属医院,三甲,延吉市,0433-8888 0001,金哲 主任 13900000033\n"
        ).encode("gb18030"))
        done = hotline_cli(hotline.env, "hospital", "import", str(directory))
        assert "1 added" in done.stdout, done.stdout
        version = rosters.version()
        # The service's roster cache probes the version every 2 s and logs the reload.
        _wait_for_log(hotline.config.instance_dir / "log" / "service.log",
                      f"routing snapshot reloaded: version {version}")
        result, since = hotline.call(NEW_NUMBER, press="", surgeons="accept")
        case = hotline.case_for(NEW_NUMBER, since)
        assert hotline.wait_no_channels() == 0
        return result, case, HospitalStore(engine).recent_cases(HOSPITAL_ID)
    finally:
        engine.dispose()


def test_a_number_imported_while_the_service_runs_is_recognised_on_the_next_call(imported_call):
    result, case, recent = imported_call
    assert [r.number for r in result.rings] == [REFERRAL_PHONE]  # no menu: straight to referral
    assert result.bridged_to == REFERRAL_PHONE
    assert case.caller.caller_class.value == "partner" and case.caller.hospital_id == HOSPITAL_ID
    assert case.team == "referral" and [m.choice for m in case.menu] == ["partner"]
    assert case.outcome == "connected"
    assert [c.case_id for c in recent] == [case.case_id]


@pytest.fixture(scope="module")
def console(hotline: Hotline) -> Iterator[Console]:
    accounts = {"supervisor": ("it-hospitals-sup", "supervisor", None)}
    with running_console(hotline.env, accounts, "console-hospitals.log") as running:
        yield running


def test_the_hospital_page_lists_the_call_in_a_real_browser(imported_call, console: Console):
    _, case, _ = imported_call
    account = console.accounts["supervisor"]
    with headless_chromium() as browser:
        page = browser.new_context(base_url=console.base_url).new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto("/login")
        form = page.locator("#sign-in-form")
        form.locator("input[name=username]").fill(account.username)
        form.locator("input[name=password]").fill(account.password)
        form.get_by_role("button").click()
        expect(page).to_have_url(re.compile(r"/calls"), timeout=TIMEOUT_MS)
        page.goto("/hospitals/")
        page.get_by_role("link", name="延边大学附属医院").click()
        expect(page.locator("#hospital-name")).to_have_text("延边大学附属医院", timeout=TIMEOUT_MS)
        expect(page.locator("#hospital-numbers")).to_contain_text(NEW_NUMBER, timeout=TIMEOUT_MS)
        expect(page.locator("#hospital-contacts")).to_contain_text("金哲", timeout=TIMEOUT_MS)
        expect(page.locator("#hospital-calls")).to_have_text("1", timeout=TIMEOUT_MS)
        link = page.locator("#hospital-cases").get_by_role("link", name=case.case_id)
        link.click()
        expect(page.locator("#case-id")).to_have_text(case.case_id, timeout=TIMEOUT_MS)
        expect(page.locator("#case-hospital-link")).to_have_text("延边大学附属医院", timeout=TIMEOUT_MS)
        page.screenshot(path=str(artifacts_dir() / "hospital-case.png"), full_page=True)
