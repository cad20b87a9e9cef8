"""`hotline notify channels|test` against a local HTTP server standing in for the robot and Twilio."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hotline.cli import main
from tests.support.notify_server import Answer, StubServer

KEY = "cli-test-key-0001"
TOKEN = "cli-token-0002"
SID = "AC" + "1" * 32


@pytest.fixture
def stub() -> Iterator[StubServer]:
    server = StubServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def configured(monkeypatch, tmp_path: Path, stub: StubServer) -> StubServer:
    for name, value in {"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_INSTANCE": "clitest",
                        "HOTLINE_WECHAT_WEBHOOK_BASE": f"{stub.url}/cgi-bin/webhook/send",
                        "HOTLINE_WECHAT_KEY_FACIAL": KEY, "HOTLINE_TWILIO_ACCOUNT_SID": SID,
                        "HOTLINE_TWILIO_AUTH_TOKEN": TOKEN, "HOTLINE_TWILIO_FROM": "+8610695500000",
                        "HOTLINE_TWILIO_BASE_URL": stub.url}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HOTLINE_CONFIG", raising=False)
    return stub


def test_channels_lists_what_is_configured_without_secrets(configured, capsys):
    assert main(["notify", "channels"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split(maxsplit=1)[1] for line in out.splitlines()}
    assert lines["sms"] == "from +8610695500000"
    assert lines["wechat:team:facial"] == "configured"
    assert lines["wechat:desk"] == "-" and lines["wechat:team:replant"] == "-"
    assert KEY not in out and TOKEN not in out


def test_a_test_message_to_a_team_group(configured: StubServer, capsys):
    assert main(["notify", "test", "--to", "team:facial"]) == 0
    [request] = configured.requests
    assert request.query == {"key": [KEY]}
    assert request.json()["text"]["content"].startswith("【96608测试】通知渠道测试")
    assert "sent to team:facial" in capsys.readouterr().out


def test_a_test_sms(configured: StubServer, capsys):
    configured.script(Answer.json({"sid": "SM1", "status": "queued"}, status=201))
    assert main(["notify", "test", "--to", "sms:+8613700000101"]) == 0
    [request] = configured.requests
    assert request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.form()["To"] == ["+8613700000101"]


def test_a_failed_test_says_why_and_not_the_key(configured: StubServer, capsys):
    configured.script(Answer.json({"errcode": 93000, "errmsg": f"invalid key={KEY}"}))
    assert main(["notify", "test", "--to", "team:facial"]) == 1
    err = capsys.readouterr().err
    assert "not delivered" in err and "93000" in err and KEY not in err


def test_unconfigured_and_malformed_targets(configured: StubServer, capsys):
    assert main(["notify", "test", "--to", "desk"]) == 1
    assert "no WeChat group configured for desk" in capsys.readouterr().err
    assert main(["notify", "test", "--to", "sms:13700000101;rm"]) == 2
    assert configured.requests == []
