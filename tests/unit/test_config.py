"""Configuration layers: defaults <- TOML file <- HOTLINE_* environment <- overrides."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from hotline.config import PROJECT_DIR, HotlineConfig, Ports, load_config


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "hotline.toml"
    path.write_text(
        'instance = "file"\n'
        f'var_dir = "{tmp_path / "file-var"}"\n'
        'log_level = "DEBUG"\n'
        'agi_host = "127.0.0.2"\n'
        "[ports]\n"
        "sip = 25060\n"
        "ami = 25038\n",
        encoding="utf-8",
    )
    return path


def test_defaults_with_no_file_and_an_empty_environment():
    config = load_config(env={})
    assert config == HotlineConfig()
    assert config.ports == Ports() and config.ports.sip == 5060 and config.ports.agi == 4573
    assert config.menu_file == PROJECT_DIR / "ivr" / "menu.toml"
    assert config.db_url == f"sqlite:///{PROJECT_DIR / 'var' / 'demo.db'}"


def test_the_file_overrides_defaults(config_file, tmp_path):
    config = load_config(config_file, env={})
    assert (config.instance, config.log_level, config.agi_host) == ("file", "DEBUG", "127.0.0.2")
    assert config.var_dir == tmp_path / "file-var"
    assert config.ports == Ports(sip=25060, ami=25038)  # the others keep their defaults


def test_the_environment_overrides_the_file(config_file, tmp_path):
    env = {
        "HOTLINE_INSTANCE": "env",
        "HOTLINE_VAR_DIR": str(tmp_path / "env-var"),
        "HOTLINE_PORT_SIP": "35060",
        "HOTLINE_PORT_SURGEON_PHONES": "35070",
        "HOTLINE_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/h",
    }
    config = load_config(config_file, env=env)
    assert (config.instance, config.var_dir, config.log_level) == ("env", tmp_path / "env-var", "DEBUG")
    assert config.ports == Ports(sip=35060, ami=25038, surgeon_phones=35070)
    assert config.db_url == "postgresql+psycopg://u@127.0.0.1/h"


def test_overrides_win_over_everything(config_file, tmp_path):
    config = load_config(config_file, env={"HOTLINE_INSTANCE": "env", "HOTLINE_PORT_SIP": "35060"},
                         instance="kw", ports={"sip": 45060})
    assert config.instance == "kw" and config.ports.sip == 45060 and config.ports.ami == 25038


def test_the_file_can_come_from_hotline_config(config_file):
    assert load_config(env={"HOTLINE_CONFIG": str(config_file)}).instance == "file"


def test_empty_environment_values_do_not_override(config_file):
    config = load_config(config_file, env={"HOTLINE_INSTANCE": "", "HOTLINE_LOG_LEVEL": ""})
    assert (config.instance, config.log_level) == ("file", "DEBUG")


def test_unrelated_environment_is_ignored():
    assert load_config(env={"HOME": "/x", "HOTLINE": "1", "HOTLINE_UNKNOWN": "x"}) == HotlineConfig()


def test_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(env={"HOTLINE_VAR_DIR": "rel/var", "HOTLINE_MENU_FILE": "~/m.toml"})
    assert config.var_dir == tmp_path / "rel" / "var"
    assert config.menu_file == Path("~/m.toml").expanduser().resolve()
    assert config.instance_dir == tmp_path / "rel" / "var" / "asterisk" / "demo"
    assert config.recordings_dir == tmp_path / "rel" / "var" / "recordings" / "demo"


def test_unknown_key_in_the_file_is_refused(tmp_path):
    path = tmp_path / "hotline.toml"
    path.write_text('instanse = "typo"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown configuration keys: instanse"):
        load_config(path, env={})


def test_unknown_port_is_refused(tmp_path):
    path = tmp_path / "hotline.toml"
    path.write_text("[ports]\nsipp = 1\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown ports: sipp"):
        load_config(path, env={})
    with pytest.raises(ValueError, match="unknown ports: foo"):
        load_config(env={"HOTLINE_PORT_FOO": "1"})


def test_unknown_override_is_refused():
    with pytest.raises(ValueError, match="unknown configuration keys: colour"):
        load_config(env={}, colour="blue")


def test_a_port_that_is_not_a_number_is_refused():
    with pytest.raises(ValueError):
        load_config(env={"HOTLINE_PORT_SIP": "50a"})


def test_config_is_frozen():
    with pytest.raises(AttributeError):
        load_config(env={}).instance = "x"  # type: ignore[misc]


def test_secrets_are_generated_once_private_and_stable(tmp_path):
    config = load_config(env={}, var_dir=tmp_path / "var", instance="t")
    secret = config.ami_secret()
    path = config.instance_dir / "ami.secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(secret) >= 32 and secret.strip() == secret
    assert config.ami_secret() == secret
    assert load_config(env={}, var_dir=tmp_path / "var", instance="t").ami_secret() == secret
    assert config.sip_secret() != secret  # one secret per purpose
    assert stat.S_IMODE((config.instance_dir / "sip.secret").stat().st_mode) == 0o600
    other = load_config(env={}, var_dir=tmp_path / "var", instance="u")
    assert other.ami_secret() != secret  # and per instance


def test_an_existing_secret_is_read_not_replaced(tmp_path):
    config = load_config(env={}, var_dir=tmp_path, instance="t")
    config.instance_dir.mkdir(parents=True)
    (config.instance_dir / "ami.secret").write_text("kept-secret\n")
    assert config.ami_secret() == "kept-secret"


def test_the_surgeons_host_is_an_ipv4_address():
    assert load_config(env={}).surgeon_host == "127.0.0.2"
    assert load_config(env={"HOTLINE_SURGEON_HOST": " 10.1.2.3 "}).surgeon_host == "10.1.2.3"
    for bad in ("trunk.example.org", "::1", "10.1.2.3:5070"):
        with pytest.raises(ValueError, match="surgeon_host"):
            load_config(env={"HOTLINE_SURGEON_HOST": bad})
