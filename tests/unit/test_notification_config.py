"""Notification channels from the configuration: secrets from env or files, never the config file."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from hotline.config import load_config
from hotline.notifiers.channels import build_notifier
from tests.support.outbox import MemoryOutbox

DESK_KEY = "desk-key-0001"
TEAM_KEY = "facial_key_0002"
TOKEN = "twilio-token-0003"


def config(tmp_path: Path, **env: str):
    return load_config(env={"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_INSTANCE": "t", **env})


def test_keys_and_token_come_from_the_environment(tmp_path: Path):
    c = config(tmp_path, HOTLINE_WECHAT_KEY_DESK=DESK_KEY, HOTLINE_WECHAT_KEY_MAXILLO_FACIAL=TEAM_KEY,
               HOTLINE_TWILIO_AUTH_TOKEN=TOKEN, HOTLINE_TWILIO_ACCOUNT_SID="AC1",
               HOTLINE_TWILIO_FROM="+8610695500000")
    assert c.wechat_key("desk") == DESK_KEY
    assert c.wechat_key("maxillo-facial") == TEAM_KEY  # '-' and '.' are '_' in a variable name
    assert c.wechat_key("replant") is None
    assert c.twilio_token() == TOKEN and c.twilio_account_sid == "AC1"
    assert all(secret not in repr(c) for secret in (DESK_KEY, TEAM_KEY, TOKEN))


def test_keys_and_token_come_from_files_in_the_instance_dir(tmp_path: Path):
    c = config(tmp_path)
    c.instance_dir.mkdir(parents=True)
    (c.instance_dir / "wechat-replant.key").write_text(f"{TEAM_KEY}\n")
    (c.instance_dir / "twilio.token").write_text(f"  {TOKEN}\n")
    (c.instance_dir / "wechat-desk.key").write_text("\n")  # empty: not configured
    assert c.wechat_key("replant") == TEAM_KEY and c.twilio_token() == TOKEN
    assert c.wechat_key("desk") is None


def test_the_config_file_may_not_hold_secrets(tmp_path: Path):
    for line in (f'twilio_auth_token = "{TOKEN}"', 'wechat_keys = [["desk", "k"]]'):
        file = tmp_path / "hotline.toml"
        file.write_text(line + "\n")
        with pytest.raises(ValueError, match="secrets are read from HOTLINE_"):
            load_config(file, env={})
    file.write_text('twilio_account_sid = "AC9"\nwechat_webhook_base = "http://127.0.0.1:9/send"\n')
    c = load_config(file, env={})
    assert c.twilio_account_sid == "AC9" and c.wechat_webhook_base == "http://127.0.0.1:9/send"


def test_build_notifier_logs_the_configured_channels_without_secrets(tmp_path: Path, caplog):
    c = config(tmp_path, HOTLINE_WECHAT_KEY_DESK=DESK_KEY, HOTLINE_WECHAT_KEY_FACIAL=TEAM_KEY,
               HOTLINE_TWILIO_AUTH_TOKEN=TOKEN, HOTLINE_TWILIO_ACCOUNT_SID="AC1",
               HOTLINE_TWILIO_FROM="+8610695500000")
    with caplog.at_level(logging.INFO, logger="hotline.notifiers"):
        notifier = build_notifier(c, ["facial", "replant"], MemoryOutbox())
    assert notifier.describe() == ["sms", "wechat:desk", "wechat:team:facial"]
    text = caplog.text
    assert "notification channels: sms, wechat:desk, wechat:team:facial" in text
    assert all(secret not in text for secret in (DESK_KEY, TEAM_KEY, TOKEN))


def test_nothing_configured_is_said_and_the_log_stands_in(tmp_path: Path, caplog):
    with caplog.at_level(logging.INFO, logger="hotline.notifiers"):
        notifier = build_notifier(config(tmp_path), ["facial"], MemoryOutbox())
    assert notifier.describe() == []
    assert "none configured (notices are only logged)" in caplog.text


def test_a_bad_channel_is_left_out_and_the_others_stay(tmp_path: Path, caplog):
    c = config(tmp_path, HOTLINE_WECHAT_KEY_DESK="bad key&x=1", HOTLINE_WECHAT_KEY_FACIAL=TEAM_KEY,
               HOTLINE_TWILIO_AUTH_TOKEN=TOKEN, HOTLINE_TWILIO_ACCOUNT_SID="AC1",
               HOTLINE_TWILIO_FROM="96608")
    with caplog.at_level(logging.INFO, logger="hotline.notifiers"):
        notifier = build_notifier(c, ["facial"], MemoryOutbox())
    assert notifier.describe() == ["wechat:team:facial"]
    assert "wechat:desk left out" in caplog.text and "SMS left out" in caplog.text
    assert "bad key" not in caplog.text and TOKEN not in caplog.text
    half = config(tmp_path, HOTLINE_TWILIO_ACCOUNT_SID="AC1")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hotline.notifiers"):
        assert build_notifier(half, [], MemoryOutbox()).describe() == []
    assert "needs both a Twilio account SID and an auth token" in caplog.text
