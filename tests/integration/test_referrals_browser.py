"""Referrals end to end in a real browser: a partner hospital's real call through the sandboxed
Asterisk becomes a case; the surgeon who took it turns it into a referral on the case page,
moves it to arrived, and sees the time since injury tick and the timeline; the list page
shows it; another surgeon does not see it.

Playwright drives Debian's chromium (/usr/bin/chromium) against `hotline console` running as
its own process on the integration instance's database. Screenshots go to this run's
artifacts (browser_support.artifacts_dir).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Error as PlaywrightError, Page, expect

from browser_support import (Console, artifacts_dir, failed, headless_chromium, register_reports,
                             running_console, screenshot_path)
from cases.lifecycle import Case
from conftest_support import PARTNER_NUMBER, Hotline
from oncall.model import HOTLINE_TZ

pytestmark = pytest.mark.integration

TIMEOUT_MS = 30_000  # shared, noisy machines: generous, and never asserted on
expect.set_options(timeout=TIMEOUT_MS)
LOCAL = ZoneInfo(HOTLINE_TZ)
ACCOUNTS = {
    "supervisor": ("rf-supervisor", "supervisor", None),
    "receiver": ("rf-surgeon5", "surgeon", 5),  # 戊, on call for the referral line: takes the call
    "other": ("rf-surgeon1", "surgeon", 1),  # 甲, facial: never rung for it
}


@pytest.fixture(scope="module")
def console(hotline: Hotline) -> Iterator[Console]:
    with running_console(hotline.env, ACCOUNTS, "console-referrals.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[Browser]:
    register_reports(pytestconfig)
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture
def browse(console: Console, browser: Browser,
           request: pytest.FixtureRequest) -> Iterator[Callable[[str], Page]]:
    """`browse("receiver")`: a page in a fresh context, signed in as that account.

    A script error on any page fails the test (at teardown): the ticking
    counter must not die silently.
    """
    contexts = []
    script_errors: list[str] = []

    def open_page(who: str) -> Page:
        context = browser.new_context(base_url=console.base_url,
                                      viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append((who, context))
        page = context.new_page()
        page.on("pageerror", lambda error: script_errors.append(f"{who}: {error}"))
        account = console.accounts[who]
        page.goto("/login")
        form = page.locator("#sign-in-form")
        form.locator("input[name=username]").fill(account.username)
        form.locator("input[name=password]").fill(account.password)
        form.get_by_role("button").click()
        expect(page).to_have_url(re.compile(r"/calls"))
        return page

    yield open_page
    if failed(request.node):
        for n, (who, context) in enumerate(contexts):
            for m, page in enumerate(context.pages):
                try:
                    page.screenshot(path=screenshot_path(f"{request.node.name}-{who}-{n}{m}",
                                                         "failures"), full_page=True)
                except PlaywrightError:
                    pass
    for _, context in contexts:
        context.close()
    assert not script_errors, script_errors


@pytest.fixture(scope="module")
def referral_call(hotline: Hotline) -> Case:
    """A real call from the partner hospital's registered number, taken by surgeon 5."""
    hotline.workdir.mkdir(parents=True, exist_ok=True)
    hotline.wait_mirror("13700000401")
    result, since = hotline.call(PARTNER_NUMBER, press="4", surgeons="accept", talk_s=2)
    assert result.bridged_to == "13700000401", result
    case = hotline.case_for(PARTNER_NUMBER, since)
    assert hotline.wait_no_channels() == 0, "channels left in Asterisk after the call"
    assert case.caller.hospital_id == 1 and case.connected_surgeon_id == 5, case
    return case


def test_a_case_becomes_a_referral_and_is_moved_to_arrived(referral_call: Case, browse):
    case = referral_call
    page = browse("receiver")
    # Playwright's clock: the page's timers and Date run on it, so the ticking
    # counter can be moved on by hours without waiting for them.
    page.clock.install()
    page.goto(f"/cases/{case.case_id}")
    expect(page.locator("#case-hospital")).to_have_text("吉林市中心医院")
    panel = page.locator("#referral")
    expect(panel.locator("h2")).to_have_text("Referral and transfer")

    injured = (datetime.now(LOCAL) - timedelta(hours=2, minutes=15)).replace(second=0,
                                                                            microsecond=0)
    panel.locator("#referral-age").fill("34")
    panel.locator("#referral-sex").select_option("male")
    panel.locator("#referral-injury-input").fill("Right index finger amputated by a circular saw")
    panel.locator("#referral-injured-at-input").fill(injured.strftime("%Y-%m-%dT%H:%M"))
    panel.locator("#referral-create-note").fill("Part kept on ice; ambulance ready")
    panel.locator("#referral-create").click()

    expect(page).to_have_url(re.compile(rf"/cases/{re.escape(case.case_id)}#referral$"))
    expect(page.locator("#referral-status")).to_have_text("requested")
    expect(page.locator("#referral-hospital")).to_have_text("吉林市中心医院")
    expect(page.locator("#referral-patient")).to_have_text("male · 34 y")
    expect(page.locator("#referral-injured-at")).to_have_text(injured.strftime("%Y-%m-%d %H:%M"))
    since = page.locator("#referral-since")
    expect(since).to_have_text(re.compile(r"^2 h 1[4-7] min$"))
    expect(since).to_have_class(re.compile(r"\burgency-ok\b"))  # a digit: urgent from 6 h
    expect(page.locator("#referral-urgency")).to_contain_text("digit")
    expect(page.locator("#referral-urgency .urgency-word")).to_have_text("within the limit")
    expect(page.locator(".referral-buttons button")).to_have_text(
        ["Mark accepted", "Mark declined", "Mark cancelled"])

    # Four hours on, the counter has ticked by itself: past 6 h, urgent. (Once the
    # page has loaded: the script, deferred, sets its timer then.)
    page.wait_for_load_state("load")
    page.clock.fast_forward("04:00:00")
    expect(since).to_have_text(re.compile(r"^6 h 1[4-9] min$"))
    expect(since).to_have_class(re.compile(r"\burgency-urgent\b"))
    expect(page.locator("#referral-urgency .urgency-word")).to_have_text("urgent")

    for button, status in (("accepted", "accepted"), ("en_route", "patient en route"),
                           ("arrived", "arrived")):
        page.locator("#referral-note").fill(f"now {button}")
        page.locator(f"#referral-to-{button}").click()
        expect(page.locator("#referral-status")).to_have_text(status)
    expect(page.locator("#referral-surgeon")).to_have_text("戊 referral")  # accepted it: receiver
    expect(page.locator(".referral-buttons button")).to_have_text(["Mark admitted"])

    timeline = page.locator("#referral-events tbody tr")
    expect(timeline).to_have_count(4)
    expect(timeline.locator("td:nth-child(2)")).to_have_text(
        ["requested", "accepted", "patient en route", "arrived"])
    expect(timeline.locator("td:nth-child(3)")).to_have_text(["user:rf-surgeon5"] * 4)
    expect(timeline.nth(0)).to_contain_text("Part kept on ice; ambulance ready")
    expect(timeline.nth(3)).to_contain_text("now arrived")
    when = timeline.nth(3).locator("td").first.inner_text()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when), when
    page.screenshot(path=screenshot_path("referral-case"), full_page=True)


def test_the_list_shows_the_referral_to_staff_and_not_to_another_surgeon(referral_call: Case,
                                                                        browse, hotline: Hotline):
    case = referral_call
    _ensure_referral(hotline, case)
    page = browse("supervisor")
    page.goto("/referrals/")
    expect(page.get_by_role("heading", name="Referrals and transfers")).to_be_visible()
    row = page.locator("#referrals tr.referral").filter(
        has=page.locator(f'a.case-link:text-is("{case.case_id}")'))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("吉林市中心医院")
    expect(row).to_contain_text("Right index finger amputated")
    expect(row.locator(".since-injury")).to_have_text(re.compile(r"^\d+ h \d\d min$"))
    page.screenshot(path=screenshot_path("referrals"), full_page=True)
    row.locator("a.case-link").click()
    expect(page).to_have_url(re.compile(rf"/cases/{re.escape(case.case_id)}#referral$"))
    expect(page.locator("#referral-assign-form")).to_have_count(1)  # staff assign

    other = browse("other")
    other.goto("/referrals/")
    expect(other.locator("#only-yours")).to_be_visible()
    expect(other.locator("#referrals a.case-link", has_text=case.case_id)).to_have_count(0)
    response = other.goto(f"/cases/{case.case_id}")
    assert response is not None and response.status == 403


def _ensure_referral(hotline: Hotline, case: Case) -> None:
    """The first test makes the referral in the browser; run alone, this one makes it here."""
    from db.referrals import ReferralStore
    from db.session import make_engine
    from network.referrals import patient

    engine = make_engine(hotline.config.db_url)
    try:
        store = ReferralStore(engine)
        if store.get_by_case(case.case_id) is None:
            now = datetime.now(LOCAL)
            store.create(case.case_id, actor="test:setup", patient=patient(
                injury="Right index finger amputated by a circular saw",
                injured_at=now - timedelta(hours=2), now=now))
    finally:
        engine.dispose()
