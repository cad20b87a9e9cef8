"""Asterisk's logs hold no callers' numbers in production: the dialplan trace (full.log) is
rendered only when asked for (tests, debugging); the security log always is (fail2ban)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dialplans.render import render_all
from hotline.config import PROJECT_DIR, Ports, load_config
from ivr.menu import load_menu


def logger_conf(tmp_path: Path, **options) -> str:
    files = render_all(
        menu=load_menu(PROJECT_DIR / "ivr" / "menu.toml"), menu_source="m", instance="t",
        instance_dir=tmp_path / "i", prompts_dir=tmp_path / "p", recordings_dir=tmp_path / "r",
        ports=Ports(), agi_host="127.0.0.1", ami_secret="a", sip_secret="s",
        console_ami_secret="c", **options)
    return files["logger.conf"]


def test_production_logs_carry_no_dialplan_trace(tmp_path):
    text = logger_conf(tmp_path)
    assert "full.log" not in text and "verbose" not in text and "dtmf" not in text
    assert "security.log => security" in text and "messages.log => notice,warning,error" in text


def test_the_trace_is_there_when_asked_for(tmp_path):
    assert "full.log => notice,warning,error,verbose(3),dtmf" in logger_conf(tmp_path, full_log=True)


@pytest.mark.parametrize("raw, expected", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_switch_comes_from_the_environment(raw, expected):
    env = {"HOTLINE_ASTERISK_FULL_LOG": raw} if raw else {}
    assert load_config(env=env).asterisk_full_log is expected


def test_a_bad_switch_is_refused():
    with pytest.raises(ValueError, match="asterisk_full_log"):
        load_config(env={"HOTLINE_ASTERISK_FULL_LOG": "maybe"})
