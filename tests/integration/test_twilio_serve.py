"""`hotline twilio` as a real process over real HTTP (waitress), signed as Twilio signs.

No Twilio and no network: the requests come from this test, signed with the
twilio package's RequestValidator over the public URL the service is told.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from twilio.request_validator import RequestValidator

from db.seed import DEMO_PARTNER_NUMBER, demo_chain_phones, seed_demo
from db.session import make_engine, migrate

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "https://hotline.example.org"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _serve(var_dir: Path, port: int, token: str | None) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_VAR_DIR=str(var_dir), HOTLINE_INSTANCE="tw",
               HOTLINE_TWILIO_PUBLIC_URL=PUBLIC)
    if token:
        env["HOTLINE_TWILIO_AUTH_TOKEN"] = token
    process = subprocess.Popen([sys.executable, "-m", "hotline", "twilio", "--port", str(port)],
                               env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"hotline twilio exited: {process.stdout.read().decode()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError("hotline twilio never listened")


@pytest.fixture(scope="module")
def var_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="hl-twilio-", dir="/tmp"))
    url = f"sqlite:///{path}/tw.db"
    migrate(url)
    engine = make_engine(url)
    try:
        seed_demo(engine, datetime.now(timezone.utc))
    finally:
        engine.dispose()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _post(port: int, path: str, params: dict[str, str], signature: str | None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=urllib.parse.urlencode(params).encode(),
        headers={"X-Twilio-Signature": signature} if signature else {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_signed_call_gets_the_menu_and_a_partner_the_referral_surgeon(var_dir: Path):
    token, port = secrets.token_hex(16), _free_port()
    process = _serve(var_dir, port, token)
    try:
        params = {"CallSid": "CA" + secrets.token_hex(16), "From": "+8613912345678",
                  "To": "+8696608", "CallStatus": "ringing"}
        signature = RequestValidator(token).compute_signature(PUBLIC + "/twilio/voice", params)
        status, body = _post(port, "/twilio/voice", params, signature)
        assert status == 200, body
        root = ET.fromstring(body)
        gather = root.find("Gather")
        assert gather is not None and gather.get("numDigits") == "1"
        assert "96608" in "".join(gather.itertext())

        partner = {**params, "CallSid": "CA" + secrets.token_hex(16), "From": DEMO_PARTNER_NUMBER}
        signature = RequestValidator(token).compute_signature(PUBLIC + "/twilio/voice", partner)
        status, body = _post(port, "/twilio/voice", partner, signature)
        assert status == 200, body
        root = ET.fromstring(body)
        assert root.find("Gather") is None  # no menu: straight to the referral surgeon
        first = demo_chain_phones(datetime.now(timezone.utc))["referral"][0]
        assert root.find("Dial/Number").text == "+86" + first

        # The same request signed for another host is refused.
        forged = RequestValidator(token).compute_signature("https://evil.example/twilio/voice",
                                                            params)
        assert _post(port, "/twilio/voice", params, forged)[0] == 403
        assert _post(port, "/twilio/voice", params, None)[0] == 403
    finally:
        process.terminate()
        process.communicate(timeout=15)


def test_without_a_token_every_webhook_fails_closed(var_dir: Path):
    port = _free_port()
    process = _serve(var_dir, port, None)
    try:
        params = {"CallSid": "CA" + secrets.token_hex(16), "From": "+8613912345678"}
        signature = RequestValidator("guess").compute_signature(PUBLIC + "/twilio/voice", params)
        status, _ = _post(port, "/twilio/voice", params, signature)
        assert status == 503
    finally:
        process.terminate()
        output = process.communicate(timeout=15)[0].decode()
    assert "Twilio auth token missing" in output
