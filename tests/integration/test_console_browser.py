"""The supervisor console end to end, in a real headless browser.

Playwright drives Debian's chromium (/usr/bin/chromium, never a downloaded
browser) against `hotline console` running as its own process on the
integration instance's database, while real SIP calls run through the
sandboxed Asterisk. Each test asserts what a user sees on the page.

Screenshots of each main page, and of every page open when a test fails, go
to this run's artifacts (browser_support.artifacts_dir; printed at the end).
"""
from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, Error as PlaywrightError, Page, expect

from browser_support import (Account, Console, artifacts_dir, failed, headless_chromium,
                             hotline_cli, register_reports, running_console, screenshot_path)
from cases.lifecycle import Case
from conftest_support import Hotline
from oncall.model import HOTLINE_TZ

pytestmark = pytest.mark.integration

TIMEOUT_MS = 30_000  # shared, noisy machines: generous, and never asserted on
expect.set_options(timeout=TIMEOUT_MS)

LOCAL = ZoneInfo(HOTLINE_TZ)

# Console accounts: key -> (username, role, surgeon id). The department head is
# surgeon 4 (replant backup, a chief); the surgeon is 1 (facial primary); the
# second surgeon (2, facial backup) is the one surgeon 1 asks for a swap.
ACCOUNTS = {
    "admin": ("it-admin", "admin", None),
    "supervisor": ("it-supervisor", "supervisor", None),
    "head": ("it-head", "department_head", 4),
    "surgeon": ("it-surgeon", "surgeon", 1),
    "surgeon2": ("it-surgeon2", "surgeon", 2),
}

# Caller numbers of this module's calls (each test module of the session has its own).
FACIAL_CALLER = "13611190001"  # presses 1: surgeon 1 accepts, talks, recorded
REPLANT_CALLER = "13611190002"  # presses 2: surgeon 3 accepts; surgeon 1 is never rung
LIVE_CALLER = "13611190003"  # presses 1 and talks long, while the Live page watches


# -- fixtures ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def console(hotline: Hotline) -> Iterator[Console]:
    """`hotline console` on a free port, over plain HTTP on loopback, with its accounts."""
    with running_console(hotline.env, ACCOUNTS, "console.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[Browser]:
    """One headless chromium for this module's tests (module-scoped: see
    `headless_chromium`)."""
    register_reports(pytestconfig)
    with headless_chromium() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def signed_in_states(console: Console) -> dict[str, dict]:
    """Each role's cookies after one real sign-in, shared by the tests.

    Sign-in is rate-limited per address (10 a minute); signing in once per
    role keeps a whole run under it.
    """
    return {}


@pytest.fixture
def browse(console: Console, browser: Browser, signed_in_states: dict[str, dict],
           request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """`browse("surgeon")`: a page in a fresh browser context signed in as that account;
    `browse()`: signed out. Every page still open when the test fails is screenshotted."""
    contexts = []

    def open_page(who: str | None = None) -> Page:
        state = None
        if who is not None:
            if who not in signed_in_states:
                signed_in_states[who] = _sign_in_state(browser, console, console.accounts[who])
            state = signed_in_states[who]
        context = browser.new_context(base_url=console.base_url, storage_state=state,
                                      viewport={"width": 1400, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        contexts.append((who or "anonymous", context))
        return context.new_page()

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


def _sign_in_state(browser: Browser, console: Console, account: Account) -> dict:
    context = browser.new_context(base_url=console.base_url)
    context.set_default_timeout(TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto("/login")
        fill_sign_in(page, account.username, account.password)
        expect(page).to_have_url(re.compile(r"/calls"))
        return context.storage_state()
    finally:
        context.close()


@dataclass(frozen=True)
class PlacedCalls:
    facial: Case
    replant: Case


@pytest.fixture(scope="module")
def placed(hotline: Hotline) -> PlacedCalls:
    """Two real calls through the sandboxed Asterisk, finished and written, for the pages."""
    hotline.workdir.mkdir(parents=True, exist_ok=True)
    hotline.wait_mirror("13700000101")
    result, since = hotline.call(FACIAL_CALLER, press="1", surgeons="accept", talk_s=4)
    assert result.bridged_to == "13700000101", result
    facial = hotline.case_for(FACIAL_CALLER, since)
    result, since = hotline.call(REPLANT_CALLER, press="2", surgeons="accept")
    assert [r.number for r in result.rings] == ["13700000201"], result
    replant = hotline.case_for(REPLANT_CALLER, since)
    assert hotline.wait_no_channels() == 0, "channels left in Asterisk after the calls"
    assert facial.recording_path and facial.connected_surgeon_id == 1
    assert all(a.surgeon_id != 1 for a in replant.attempts)
    return PlacedCalls(facial, replant)


# -- helpers ----------------------------------------------------------------------

def fill_sign_in(page: Page, username: str, password: str) -> None:
    form = page.locator("#sign-in-form")
    form.locator("input[name=username]").fill(username)
    form.locator("input[name=password]").fill(password)
    form.get_by_role("button").click()


def shot(page: Page, name: str) -> None:
    """A screenshot of a main page for the run's artifacts."""
    page.screenshot(path=screenshot_path(name), full_page=True)


# -- sign-in ----------------------------------------------------------------------

def test_sign_in_refuses_a_bad_password_lands_on_calls_and_signs_out(console: Console, browse):
    page = browse()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.get_by_role("heading", name="登录")).to_be_visible()  # zh-CN by default
    shot(page, "sign-in")

    supervisor = console.accounts["supervisor"]
    fill_sign_in(page, supervisor.username, supervisor.password + "-wrong")
    expect(page.get_by_role("alert")).to_have_text("用户名或密码错误")
    expect(page).to_have_url(re.compile(r"/login"))

    fill_sign_in(page, supervisor.username, supervisor.password)
    expect(page).to_have_url(re.compile(r"/calls"))
    expect(page.get_by_role("alert")).to_have_count(0)
    expect(page.locator("header.top .who")).to_contain_text(f"Signed in as: {supervisor.username}")
    expect(page.locator("header.top nav")).to_contain_text("Calls")

    page.locator("#sign-out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    expect(page.locator("#sign-out")).to_have_count(0)
    page.goto("/calls/")
    expect(page).to_have_url(re.compile(r"/login"))  # the old session is gone


# -- calls ------------------------------------------------------------------------

def call_row(page: Page, case: Case):
    return page.locator(f'#calls tr.call[data-case-id="{case.case_id}"]')


def test_the_call_list_filters_by_caller_number_and_by_team(placed: PlacedCalls, browse):
    page = browse("supervisor")
    page.goto("/calls/")
    expect(page.get_by_role("heading", name="Calls", exact=True)).to_be_visible()
    expect(call_row(page, placed.facial)).to_be_visible()  # both calls, unfiltered
    expect(call_row(page, placed.replant)).to_be_visible()

    page.locator("#filter-caller").fill(FACIAL_CALLER)
    page.locator("#filter-submit").click()
    expect(page).to_have_url(re.compile(rf"caller={FACIAL_CALLER}"))
    expect(page.locator("#filter-caller")).to_have_value(FACIAL_CALLER)
    expect(page.locator("#calls tr.call")).to_have_count(1)
    row = call_row(page, placed.facial)
    expect(row.locator("td.caller")).to_have_text(FACIAL_CALLER)
    expect(row).to_contain_text("Facial trauma")
    expect(row).to_contain_text("Connected")
    expect(row).to_contain_text("甲 primary facial")
    expect(row.get_by_label("Has a recording")).to_be_visible()
    expect(call_row(page, placed.replant)).to_have_count(0)
    expect(page.locator("#call-count")).to_have_text("Matching calls: 1")
    shot(page, "calls")

    page.locator("#filter-caller").fill("")
    page.locator("#filter-team").select_option("replant")
    page.locator("#filter-submit").click()
    expect(page).to_have_url(re.compile(r"team=replant"))
    expect(call_row(page, placed.replant)).to_be_visible()
    expect(call_row(page, placed.replant).locator("td.caller")).to_have_text(REPLANT_CALLER)
    expect(call_row(page, placed.facial)).to_have_count(0)
    teams = page.locator("#calls tr.call td:nth-child(5)").all_inner_texts()
    assert teams and set(teams) == {"Replantation"}, teams

    page.locator("#filter-caller").fill(FACIAL_CALLER)  # the facial caller in replant: nothing
    page.locator("#filter-submit").click()
    expect(page.locator("#calls tr.call")).to_have_count(0)
    expect(page.locator("#no-calls")).to_have_text("No calls match")


# -- a case -----------------------------------------------------------------------

def test_a_case_opened_from_the_list_shows_its_timeline(placed: PlacedCalls, browse):
    case = placed.facial
    page = browse("supervisor")
    page.goto(f"/calls/?caller={FACIAL_CALLER}")
    call_row(page, case).locator("a.case-link").click()
    expect(page).to_have_url(re.compile(rf"/cases/{re.escape(case.case_id)}$"))
    expect(page.locator("#case-id")).to_have_text(case.case_id)
    expect(page.locator("#case-caller")).to_contain_text(FACIAL_CALLER)
    expect(page.locator("#case-team")).to_have_text("Facial trauma")
    expect(page.locator("#case-outcome")).to_have_text("Connected")

    timeline = page.locator("#timeline")
    expect(timeline.locator("tr.event-started")).to_contain_text(FACIAL_CALLER)
    expect(timeline.locator("tr.event-menu")).to_contain_text("1")
    ring = timeline.locator("tr.event-ring")
    expect(ring).to_have_count(1)  # one ring attempt: the primary, who accepted
    expect(ring).to_contain_text("#1 甲 primary facial (primary)")
    expect(ring).to_contain_text("accepted")
    expect(ring).to_contain_text(re.compile(r"rang \(s\) \d+"))
    expect(timeline.locator("tr.event-accepted")).to_contain_text("Accepted")
    expect(timeline.locator("tr.event-accepted")).to_contain_text("甲 primary facial")
    expect(timeline.locator("tr.event-connected")).to_contain_text("Connected")
    expect(timeline.locator("tr.event-connected")).to_contain_text("甲 primary facial")
    expect(timeline.locator("tr.event-ended")).to_contain_text("Hung up by: caller")
    kinds = [k.removeprefix("event event-") for k in
             timeline.locator("tr.event").evaluate_all("rows => rows.map(r => r.className)")]
    assert sorted(kinds) == sorted(["started", "menu", "ring", "accepted", "connected",
                                    "ended"]), kinds
    assert kinds[:3] == ["started", "menu", "ring"] and kinds[-1] == "ended", kinds  # in time order
    shot(page, "case")


def test_the_recording_plays_in_the_browser_and_the_play_is_audited(placed: PlacedCalls, browse):
    case = placed.facial
    page = browse("supervisor")
    page.goto(f"/cases/{case.case_id}")
    audio = page.locator("audio#recording")
    expect(audio).to_be_visible()
    assert audio.evaluate("a => a.readyState") == 0  # preload="none": nothing fetched yet

    with page.expect_response(lambda r: f"/cases/{case.case_id}/recording" in r.url) as first:
        audio.evaluate("a => { a.muted = true; return a.play().then(() => true); }")
    assert first.value.status == 206, first.value.status  # a range request: the player seeks
    page.wait_for_function("a => a.readyState >= 1 && a.duration > 0", arg=audio.element_handle(),
                           timeout=TIMEOUT_MS)
    duration = audio.evaluate("a => a.duration")
    assert duration >= 1, duration  # seconds of a 4-second conversation
    audio.evaluate("a => a.pause()")

    admin = browse("admin")
    admin.goto("/audit/?action=play_recording")
    plays = admin.locator("#audit-console tr").filter(has_text=case.case_id)
    expect(plays.first).to_contain_text("play_recording")
    expect(plays.first).to_contain_text("user:it-supervisor")
    shot(admin, "audit")


def test_a_surgeon_sees_their_own_case_but_not_another_surgeons(placed: PlacedCalls, browse):
    page = browse("surgeon")  # surgeon 1: took the facial call, was never rung for the replant one
    page.goto("/calls/")
    expect(page.locator("#only-yours")).to_have_text("Only the calls you took part in")
    expect(call_row(page, placed.facial)).to_be_visible()
    expect(call_row(page, placed.replant)).to_have_count(0)

    page.goto(f"/cases/{placed.facial.case_id}")
    expect(page.locator("#case-id")).to_have_text(placed.facial.case_id)

    response = page.goto(f"/cases/{placed.replant.case_id}")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="403")).to_be_visible()
    expect(page.locator("main")).to_contain_text("Access denied")
    expect(page.locator("main")).not_to_contain_text(REPLANT_CALLER)
    response = page.goto(f"/cases/{placed.replant.case_id}/recording")
    assert response is not None and response.status == 403


# -- figures ----------------------------------------------------------------------

def figure(page: Page, label: str) -> int:
    """The leading number of a total on the Figures page ("1,234 <small>…</small>" -> 1234)."""
    cell = page.locator("#figures-totals > div").filter(
        has=page.locator("dt", has_text=re.compile(rf"^{re.escape(label)}$"))).locator("dd")
    text = cell.inner_text()
    found = re.match(r"\s*([\d,]+)", text)
    assert found, f"{label}: {text!r}"
    return int(found.group(1).replace(",", ""))


def test_figures_count_todays_calls_and_a_transfer_recorded_on_a_case(placed: PlacedCalls, browse):
    today = datetime.now(LOCAL).date().isoformat()
    head = browse("head")  # the department head reports the network's figures
    head.goto(f"/figures/?from={today}&to={today}")
    expect(head.get_by_role("heading", name="Figures", exact=True)).to_be_visible()
    calls, transfers = figure(head, "Calls"), figure(head, "Transfers")
    assert calls >= 2 and figure(head, "Answered") >= 2  # at least this module's two calls

    # The same day on the Calls page lists as many calls.
    head.goto(f"/calls/?from={today}&to={today}")
    expect(head.locator("#call-count")).to_have_text(f"Matching calls: {calls}")

    # Surgeon 1 records on their own case that a transfer was arranged ...
    surgeon = browse("surgeon")
    surgeon.goto(f"/cases/{placed.facial.case_id}")
    surgeon.locator("#note-disposition").select_option("transfer_arranged")
    surgeon.locator("#note-text").fill("Patient transferred by ambulance; replantation team told.")
    surgeon.locator("#note-submit").click()
    expect(surgeon.locator("#case-disposition")).to_contain_text("Transfer arranged")
    expect(surgeon.locator("#notes-list")).to_contain_text("Patient transferred by ambulance")

    # ... and the figures count it, with the summary the network publishes.
    head.goto(f"/figures/?from={today}&to={today}")
    assert figure(head, "Transfers") == transfers + 1
    assert figure(head, "Calls") == calls
    summary = head.locator('#figures-summary p[lang="en"]').inner_text()
    said = re.fullmatch(r"On .+: ([\d,]+) calls?, ([\d,]+) real-time consultations?, ([\d,]+) "
                        r"referrals?, from ([\d,]+) partner hospitals?", summary)
    assert said, summary
    assert [int(n.replace(",", "")) for n in said.groups()] == [
        calls, figure(head, "Real-time consultations"), figure(head, "Referrals"),
        figure(head, "Partner hospitals that called")], summary
    expect(head.locator("#chart-days rect.bar-calls")).to_have_count(1)  # one day, one bar
    answered = figure(head, "Answered")
    expect(head.locator("#chart-days g title")).to_have_text(f"{today}: {calls:,} / {answered:,}")
    expect(head.locator("#figures-teams tr").filter(has_text="Facial trauma")).to_have_count(1)
    expect(head.locator("#figures-teams tr").filter(has_text="Replantation")).to_have_count(1)
    surgeons = head.locator("#figures-surgeons tr")
    expect(surgeons.filter(has_text="甲 primary facial")).to_have_count(1)
    shot(head, "figures")


# -- live -------------------------------------------------------------------------

def test_a_real_call_appears_on_the_live_page_and_goes_when_it_ends(line: Hotline, browse):
    page = browse("supervisor")
    loads: list[str] = []
    page.on("load", lambda loaded: loads.append(loaded.url))
    page.goto("/live/")
    expect(page.locator("#ami-status")).to_have_attribute("data-status", "ok", timeout=60_000)
    chains = page.locator("#live-chains")
    expect(chains.locator('.chain[data-team="facial"]')).to_contain_text("甲 primary facial")
    expect(chains.locator('.chain[data-team="burns"]')).to_contain_text("Nobody on call")
    row = page.locator("#live-calls tr.call").filter(has_text=LIVE_CALLER)
    expect(row).to_have_count(0)

    outcome: dict[str, object] = {}

    def place() -> None:
        try:
            outcome["result"] = line.call(LIVE_CALLER, press="1", surgeons="accept", talk_s=20)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc

    caller = threading.Thread(target=place, name="live-call", daemon=True)
    caller.start()
    try:
        expect(row).to_be_visible(timeout=90_000)
        expect(row.locator("td.caller")).to_have_text(LIVE_CALLER)
        expect(row).to_contain_text("Talking", timeout=90_000)
        expect(row).to_contain_text("Facial trauma")
        expect(row).to_contain_text("13700000101")
        shot(page, "live")
    finally:
        caller.join(240)
    assert not caller.is_alive(), "the call never finished"
    assert "error" not in outcome, outcome.get("error")
    result, _ = outcome["result"]
    assert result.bridged_to == "13700000101"
    expect(row).to_have_count(0, timeout=60_000)
    expect(page.locator("#live-calls")).to_contain_text("No calls in progress")
    assert loads == [page.url], f"the page reloaded: {loads}"  # it updated by itself


# -- rosters ----------------------------------------------------------------------

@pytest.fixture
def facial_needs_approval(line: Hotline) -> Iterator[list[str]]:
    """Facial swaps need the department head's approval, and surgeon 4 is that head.

    The test network's teams need no approval (a taken swap would be approved at
    once); `hotline roster` has no verb for a team's policy, so this sets it with
    RosterStore.set_team_policy (audited) and puts the old one back afterwards.
    Yields a list for the ids of trades the test opens: any still open at the
    end is declined, so a failed run leaves no request behind (trades stay as
    records, as in real life).
    """
    from db.roster_store import RosterStore
    from db.session import make_engine

    engine = make_engine(line.config.db_url)
    store = RosterStore(engine)
    now = datetime.now(timezone.utc)
    before = store.load(now, now + timedelta(minutes=1)).teams["facial"]
    store.set_team_policy("facial", actor="test:console-browser", requires_approval=True,
                          department_head=4)
    opened: list[str] = []
    try:
        yield opened
    finally:
        open_now = hotline_cli(line.env, "roster", "trades", "--team", "facial").stdout
        for trade_id in opened:
            if re.search(rf"^\s*{trade_id}\s+\S+\s+(requested|taken)\s", open_now, re.M):
                hotline_cli(line.env, "roster", "decline", trade_id, "--by", "4", check=False)
        store.set_team_policy("facial", actor="test:console-browser",
                              requires_approval=before.requires_approval,
                              department_head=before.department_head)
        engine.dispose()


def swap_window(now: datetime) -> tuple[datetime, datetime]:
    """Half an hour, three hours ahead (inside the test roster's shifts), within one local day."""
    start = (now + timedelta(hours=3)).astimezone(LOCAL).replace(second=0, microsecond=0)
    end = start + timedelta(minutes=30)
    if end.date() != start.date():
        start = end.replace(hour=0, minute=0)
        end = start + timedelta(minutes=30)
    return start, end


def test_a_surgeon_requests_a_swap_and_the_department_head_approves_it(
        line: Hotline, facial_needs_approval: list[str], browse):
    # Facial: surgeon 1 is primary, surgeon 2 backup. Surgeon 1 asks to swap roles
    # with surgeon 2 for half an hour; surgeon 2 takes it; the department head
    # (surgeon 4) approves; the calendar then shows the swap.
    start, end = swap_window(datetime.now(timezone.utc))
    when = "%Y-%m-%dT%H:%M"  # datetime-local, the team's local time
    note = f"browser test {secrets.token_hex(3)}"
    url = f"/rosters/?team=facial&view=week&date={start.date().isoformat()}"

    surgeon = browse("surgeon")
    surgeon.goto(url)
    expect(surgeon.locator("#roster-acting")).to_contain_text(
        "You act as surgeon: 甲 primary facial")
    form = surgeon.locator("#swap-form")
    form.locator("select[name=role]").select_option("primary")
    form.locator("input[name=start]").fill(start.strftime(when))
    form.locator("input[name=end]").fill(end.strftime(when))
    form.locator("select[name=with_surgeon]").select_option("2")
    form.locator("select[name=their_role]").select_option("backup")
    form.locator("input[name=their_start]").fill(start.strftime(when))
    form.locator("input[name=their_end]").fill(end.strftime(when))
    form.locator("input[name=note]").fill(note)
    form.get_by_role("button", name="Request the swap").click()
    expect(surgeon.locator("#roster-done")).to_have_text("The swap is requested")
    row = surgeon.locator("#roster-trades tr.trade").filter(has_text=note)
    expect(row).to_contain_text("Swap · Requested")
    expect(row).to_contain_text("甲 primary facial")
    expect(row).to_contain_text("乙 backup facial: Backup")
    trade_id = row.get_attribute("data-trade")
    assert trade_id
    facial_needs_approval.append(trade_id)
    expect(row.locator("button")).to_have_count(0)  # the requester neither takes nor approves

    other = browse("surgeon2")
    other.goto(url)
    row = other.locator(f'#roster-trades tr.trade[data-trade="{trade_id}"]')
    row.get_by_role("button", name="Take").click()
    expect(other.locator("#roster-done")).to_have_text("Taken")
    expect(row).to_contain_text("Swap · Taken, awaiting approval")
    expect(row.get_by_role("button", name="Approve")).to_have_count(0)

    head = browse("head")
    head.goto(url)
    expect(head.locator("#roster-acting")).to_contain_text(
        "You are this team's department head")
    row = head.locator(f'#roster-trades tr.trade[data-trade="{trade_id}"]')
    expect(row).to_contain_text("Taken, awaiting approval")
    expect(row).to_contain_text("乙 backup facial")
    shot(head, "rosters")
    row.get_by_role("button", name="Approve").click()
    expect(head.locator("#roster-done")).to_have_text("Approved")
    expect(row).to_have_count(0)  # no longer open

    # The calendar shows the swap: surgeon 2 primary, surgeon 1 backup, that half hour.
    day = head.locator(f'#roster-week td.day[data-date="{start.date().isoformat()}"]')
    span = f"{start:%H:%M}–{end:%H:%M}"
    expect(day.locator('.shift[data-role="primary"][data-surgeon="2"]')).to_contain_text(span)
    expect(day.locator('.shift[data-role="backup"][data-surgeon="1"]')).to_contain_text(span)
    approved = hotline_cli(line.env, "roster", "trades", "--status", "approved",
                           "--team", "facial").stdout
    assert re.search(rf"^\s*{trade_id}\s+swap\s+approved\s+facial\s+primary .* by #1 with #2 "
                     r"taken by #2$", approved, re.M), approved
