"""Issue 11 end to end on phones: a live call, the photo link by SMS, the caller's upload,
the photo on the surgeon's phone view without a reload.

A real call goes through the sandboxed Asterisk (baresip caller, presses 2: the
replantation primary accepts and they talk) in a background thread. While it is
bridged, on two phone-sized chromium contexts (Debian's /usr/bin/chromium under
Playwright, 390x844, touch): the surgeon opens the case's phone view and presses
"send the photo link to the caller"; the console texts the link through Twilio
(here a local stand-in with real sockets); the caller opens the link from that SMS,
uploads a JPEG made by Pillow, and the photo appears on the surgeon's page, which
was never reloaded; the surgeon records the disposition there. The call is still
live when the photo arrives.
"""
from __future__ import annotations

import io
import re
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import Browser, expect

from browser_support import (artifacts_dir, create_account, failed, headless_chromium,
                             register_reports, screenshot_path, start_console)
from cases.lifecycle import Case
from conftest_support import PORTS, Hotline
from db.calls_query import case_notes
from db.repo import CaseRepository
from db.session import make_engine
from tests.support.notify_server import Answer, StubServer

pytestmark = pytest.mark.integration

TIMEOUT_MS = 30_000  # shared, noisy machines: generous, never asserted on
expect.set_options(timeout=TIMEOUT_MS)
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3,
         "is_mobile": True, "has_touch": True, "locale": "zh-CN",
         "user_agent": ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 "
                        "(KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36")}
CALLER = "13611195501"  # this module's caller (each integration module has its own)
SURGEON_PHONE = "13700000201"  # 丙, replantation primary: accepts the call
TALK_S = 90.0  # bridged this long: room for two browsers on a busy machine (the join waits it out)
TWILIO_SID = "AC" + "4" * 32
TWILIO_TOKEN = "phone-view-twilio-token"
# A console port of this engineer's range: base + 850..899 (HOTLINE_TEST_PORT_BASE).
CONSOLE_PORT = PORTS["sip"] - 60 + 851


@pytest.fixture(scope="module")
def twilio() -> Iterator[StubServer]:
    stub = StubServer([Answer.json({"sid": "SM" + "c" * 32, "status": "queued"}, status=201)])
    try:
        yield stub
    finally:
        stub.close()


@pytest.fixture(scope="module")
def console(hotline: Hotline, twilio: StubServer):
    """`hotline console` with SMS through the Twilio stand-in and its public URL set."""
    base = f"http://127.0.0.1:{CONSOLE_PORT}"
    env = {**hotline.env, "HOTLINE_CONSOLE_INSECURE_COOKIES": "1",
           "HOTLINE_CONSOLE_PUBLIC_URL": base, "HOTLINE_TWILIO_ACCOUNT_SID": TWILIO_SID,
           "HOTLINE_TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "HOTLINE_TWILIO_FROM": "+8610695500000",
           "HOTLINE_TWILIO_BASE_URL": twilio.url}
    account = create_account(env, "ph-surgeon-3", "surgeon", 3)
    running = start_console(env, CONSOLE_PORT, artifacts_dir() / "phone-view-console.log")
    running.accounts = {"surgeon": account}
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def browser(pytestconfig: pytest.Config) -> Iterator[Browser]:
    register_reports(pytestconfig)
    with headless_chromium() as chromium:
        yield chromium


def wound_jpeg(folder: Path) -> Path:
    """A real JPEG made by Pillow (a phone-photo-sized 1600x1200), with a pattern in it."""
    image = Image.new("RGB", (1600, 1200), (200, 160, 140))
    image.paste((150, 30, 30), (600, 400, 1000, 800))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    path = folder / "IMG_20261201_0001.jpg"
    path.write_bytes(out.getvalue())
    return path


def live_case(line: Hotline, since: datetime, timeout_s: float = 90.0) -> Case:
    """The caller's case once a surgeon is connected and the call has not ended."""
    engine = make_engine(line.config.db_url)
    try:
        repo = CaseRepository(engine)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for case in repo.recent(50):
                if case.caller.raw_safe == CALLER and case.started_at >= since - timedelta(seconds=2) \
                        and case.connected_at is not None and case.ended_at is None:
                    return case
            time.sleep(0.5)
        raise AssertionError(f"no bridged, live case for {CALLER}")
    finally:
        engine.dispose()


def case_now(line: Hotline, case_id: str) -> Case:
    engine = make_engine(line.config.db_url)
    try:
        found = CaseRepository(engine).get(case_id)
        assert found is not None
        return found
    finally:
        engine.dispose()


def test_a_photo_sent_during_a_live_call_appears_on_the_surgeons_phone(
        line: Hotline, console, twilio: StubServer, browser: Browser, request, tmp_path):
    outcome: dict = {}
    since = datetime.now(timezone.utc)
    call = threading.Thread(target=lambda: outcome.update(result=line.call(
        CALLER, press="2", surgeons="accept", talk_s=TALK_S)[0]), daemon=True)
    contexts = []
    try:
        call.start()
        case = live_case(line, since)
        assert case.team == "replant" and case.connected_surgeon_id == 3

        # The surgeon's phone: sign in, straight to the case's phone view.
        surgeon_ctx = browser.new_context(base_url=console.base_url, **PHONE)
        contexts.append(("surgeon", surgeon_ctx))
        surgeon_ctx.set_default_timeout(TIMEOUT_MS)
        surgeon = surgeon_ctx.new_page()
        account = console.accounts["surgeon"]
        surgeon.goto(f"/login?next=/cases/{case.case_id}/phone")
        form = surgeon.locator("#sign-in-form")
        form.locator("input[name=username]").fill(account.username)
        form.locator("input[name=password]").fill(account.password)
        form.get_by_role("button").click()
        expect(surgeon).to_have_url(re.compile(rf"/cases/{case.case_id}/phone$"))
        expect(surgeon.locator("#case-id")).to_have_text(case.case_id)
        expect(surgeon.locator("#phone-caller")).to_have_text("136****5501")  # masked for a surgeon
        expect(surgeon.locator("#phone-team")).to_contain_text("Replantation")
        expect(surgeon.locator("#phone-no-photos")).to_be_visible()
        assert surgeon.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll

        # "Send the photo link to the caller": one SMS through Twilio's stand-in.
        surgeon.locator("#send-link button").tap()
        expect(surgeon.locator("#link-state")).to_have_class(re.compile(r"\bok\b"))
        [sms] = twilio.wait_for(1, timeout_s=30)
        assert sms.form()["To"] == ["+86" + CALLER]
        body = sms.form()["Body"][0]
        assert body.startswith("【96608急诊热线】")
        link = re.search(rf"{re.escape(console.base_url)}/u/[A-Za-z0-9_-]{{24}}", body).group(0)
        # From here the page must never load again: a marker that a reload would wipe.
        surgeon.evaluate("window.__notReloaded = 'yes'")
        surgeon.screenshot(path=str(screenshot_path("phone-view-before", "phone")))

        # The caller's phone: the link from the SMS, a photo from the "camera", sent.
        caller_ctx = browser.new_context(**PHONE)
        contexts.append(("caller", caller_ctx))
        caller_ctx.set_default_timeout(TIMEOUT_MS)
        caller = caller_ctx.new_page()
        caller.goto(link)
        expect(caller.locator("h1")).to_contain_text("上传伤情照片")
        caller.locator("#photos").set_input_files(str(wound_jpeg(tmp_path)))
        expect(caller.locator("#picked")).to_contain_text("已选择 1 张")
        caller.locator("#note").fill("右手掌撕脱伤 right palm degloving")
        caller.locator("#send").tap()
        expect(caller.locator("#upload-ok")).to_contain_text("已收到 1 张照片")
        caller.screenshot(path=str(screenshot_path("caller-upload-done", "phone")))

        # It appears on the surgeon's page by itself (polling), thumbnail loaded.
        photo = surgeon.locator("#phone-photos li.phone-photo")
        expect(photo).to_have_count(1)
        expect(photo.locator(".photo-note")).to_have_text("右手掌撕脱伤 right palm degloving")
        expect(surgeon.locator("#phone-no-photos")).to_be_hidden()
        surgeon.wait_for_function(
            "() => { const i = document.querySelector('#phone-photos img');"
            " return i && i.complete && i.naturalWidth === 320; }")
        assert surgeon.evaluate("window.__notReloaded") == "yes"
        assert call.is_alive() and case_now(line, case.case_id).ended_at is None  # still live
        surgeon.screenshot(path=str(screenshot_path("phone-view-photo-arrived", "phone")))

        # The disposition, recorded on the phone: the case's own notes.
        surgeon.locator("#disposition-consultation").tap()
        surgeon.locator("#phone-note-text").fill("建议冰袋包裹断指，立即来院 advised, coming in")
        surgeon.locator("#phone-note-submit").tap()
        expect(surgeon.locator("#note-saved")).to_be_visible()
        expect(surgeon.locator("#phone-disposition")).not_to_have_text("—")
        engine = make_engine(line.config.db_url)
        try:
            notes = case_notes(engine, case.case_id, line.config.vault())
        finally:
            engine.dispose()
        assert [(n.disposition, n.surgeon_id) for n in notes] == [("consultation", 3)]
    finally:
        if failed(request.node):
            for who, context in contexts:
                for n, page in enumerate(context.pages):
                    try:
                        page.screenshot(path=str(screenshot_path(f"failed-phone-{who}-{n}", "failures")))
                    except Exception:
                        pass
        for _, context in contexts:
            context.close()
        call.join(TALK_S + 60)
    assert outcome["result"].bridged_to == SURGEON_PHONE
    assert len(twilio.requests) == 1  # the button's SMS, and nothing else
