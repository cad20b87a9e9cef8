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

from db.repo import CaseRepository
from db.seed import DEMO_PARTNER_NUMBER, demo_chain_phones, seed_demo
from db.session import make_engine, migrate
from tests.support.notify_server import Answer, StubServer

REPO = Path(__file__).resolve().parents[2]
PUBLIC = "https://hotline.example.org"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _env(var_dir: Path, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env.update(HOTLINE_VAR_DIR=str(var_dir), HOTLINE_INSTANCE="tw",
               HOTLINE_TWILIO_PUBLIC_URL=PUBLIC, **extra)
    if token:
        env["HOTLINE_TWILIO_AUTH_TOKEN"] = token
    return env


def _serve(var_dir: Path, port: int, token: str | None, *args: str,
           **extra: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "hotline", "twilio", "--port", str(port),
                                *args],
                               env=_env(var_dir, token, **extra), cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
    # The default key ring lives beside the runtime dir (hotline/config.py data_key_path).
    shutil.rmtree(path.parent / (path.name + "-keys"), ignore_errors=True)


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


def _wav() -> bytes:
    import io
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 16000)
    return buffer.getvalue()


def test_recordings_are_fetched_home_and_deleted_at_twilio(var_dir: Path):
    """The running service downloads a call's recording from (a local stand-in for)
    Twilio's API, points the case at the file and deletes Twilio's copy; the
    one-shot `--fetch-recordings` does the same for what is left."""
    token, port = secrets.token_hex(16), _free_port()
    account = "AC" + secrets.token_hex(16)
    media = _wav()

    def respond(request):
        if request.method == "GET" and request.path.endswith(".wav"):
            return Answer(200, media, "audio/x-wav")
        if request.method == "DELETE":
            return Answer(204, b"", "text/plain")
        return Answer(404, b"{}")
    api = StubServer(respond=respond)
    cases = CaseRepository(make_engine(f"sqlite:///{var_dir}/tw.db"))
    recordings = var_dir / "recordings" / "tw"

    def signed_post(path: str, params: dict[str, str]):
        signature = RequestValidator(token).compute_signature(PUBLIC + path, params)
        status, body = _post(port, path, params, signature)
        assert status in (200, 204), body

    def call_with_recording() -> tuple[str, str]:
        call_sid, rec_sid = "CA" + secrets.token_hex(16), "RE" + secrets.token_hex(16)
        signed_post("/twilio/voice", {"CallSid": call_sid, "From": "+8613912345678"})
        url = f"https://api.twilio.com/2010-04-01/Accounts/{account}/Recordings/{rec_sid}"
        signed_post("/twilio/recording?kind=call",
                    {"CallSid": call_sid, "RecordingSid": rec_sid, "RecordingUrl": url,
                     "RecordingStatus": "completed", "RecordingDuration": "2"})
        return call_sid, rec_sid

    process = _serve(var_dir, port, token, "--fetch-every", "0.5",
                     HOTLINE_TWILIO_ACCOUNT_SID=account, HOTLINE_TWILIO_BASE_URL=api.url)
    try:
        call_sid, rec_sid = call_with_recording()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            case = cases.get_by_linkedid(call_sid)
            if not case.recording_path.startswith("https://"):
                break
            time.sleep(0.2)
        local = Path(case.recording_path)
        assert local.parent == recordings.resolve()
        # Sealed at rest with the instance's key ring (vault/), the audio unchanged.
        from hotline.config import load_config
        from vault import MAGIC, read_recording

        config = load_config(env=_env(var_dir, token))
        assert local.read_bytes()[:4] == MAGIC
        assert read_recording(local, config.vault(create=False)) == media
        assert api.wait_for(2)[-1].method == "DELETE"
        assert [(r.method, r.path.rsplit("/", 1)[1]) for r in api.requests] == [
            ("GET", rec_sid + ".wav"), ("DELETE", rec_sid + ".json")]
    finally:
        process.terminate()
        process.communicate(timeout=15)

    # With the service down, the one-shot sweep fetches what arrived meanwhile.
    process = _serve(var_dir, port, token, "--fetch-every", "3600",
                     HOTLINE_TWILIO_ACCOUNT_SID=account, HOTLINE_TWILIO_BASE_URL="http://127.0.0.1:9")
    try:
        later_sid, _ = call_with_recording()
    finally:
        process.terminate()
        process.communicate(timeout=15)
    swept = subprocess.run(
        [sys.executable, "-m", "hotline", "twilio", "--fetch-recordings", "--keep-at-twilio"],
        env=_env(var_dir, token, HOTLINE_TWILIO_ACCOUNT_SID=account,
                 HOTLINE_TWILIO_BASE_URL=api.url),
        cwd=REPO, capture_output=True, text=True, timeout=60)
    api.close()
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "fetched 1, failed 0" in swept.stdout
    assert Path(cases.get_by_linkedid(later_sid).recording_path).is_file()
    assert [r.method for r in api.requests] == ["GET", "DELETE", "GET"]  # kept at Twilio
