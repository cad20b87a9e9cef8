"""Issue 18 items 6 and 7 without Asterisk: the key ring's home and its one move,
log masking, making an old runtime dir private, the demo's fail2ban config."""
from __future__ import annotations

import base64
import os
import stat

import pytest

from hotline import fail2ban
from hotline.config import load_config
from hotline.instance import make_private
from hotline.reconcile import mask_numbers
from vault import load_keyring, move_keyring


def _config(tmp_path, **env):
    return load_config(env={"HOTLINE_VAR_DIR": str(tmp_path / "var"), "HOTLINE_INSTANCE": "demo", **env})


def test_the_default_key_ring_lives_beside_the_runtime_dir_not_in_it(tmp_path):
    config = _config(tmp_path)
    assert config.data_key_path == tmp_path / "var-keys" / "demo" / "data.key"
    assert not config.data_key_path.is_relative_to(config.var_dir)
    config.vault()
    assert stat.S_IMODE(config.data_key_path.stat().st_mode) == 0o600
    for directory in (config.data_key_path.parent, config.data_key_path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_an_old_demo_ring_is_moved_once_and_still_opens_what_it_sealed(tmp_path):
    config = _config(tmp_path)
    old = config.legacy_data_key_path
    old_keys = load_keyring(old)  # an instance from before: its ring in the data tree
    sealed = __import__("vault").Vault(old_keys).seal(b"RIFF...", b"recording")
    vault = config.vault()
    assert not old.exists() and config.data_key_path.is_file()
    assert vault.open(sealed, b"recording") == b"RIFF..."
    assert load_keyring(config.data_key_path) == old_keys
    # Once: a ring appearing at the old place later is not moved over the new one.
    load_keyring(old)
    assert move_keyring(old, config.data_key_path) is False
    assert load_keyring(config.data_key_path) == old_keys


def test_an_explicit_key_file_is_used_and_nothing_is_moved(tmp_path):
    config = _config(tmp_path, HOTLINE_DATA_KEY_FILE=str(tmp_path / "elsewhere" / "ring"))
    load_keyring(config.legacy_data_key_path)
    config.vault()
    assert config.legacy_data_key_path.exists() and (tmp_path / "elsewhere" / "ring").exists()


@pytest.mark.parametrize("line, numbers, expected", [
    ("caller 13912345678 [public]", (), "caller 139****5678 [public]"),
    ("attempt #1 nurse 13900000000", ("13900000000",), "attempt #1 nurse 139****0000"),
    ("dialled +8613912345678", (), "dialled +861******5678"),
    ("caller <0431-8888888>", ("0431-8888888",), "caller <043*-***8888>"),
    ("new case r-1764061512.42 20261125-190512-3fa9c1", (), "new case r-1764061512.42 20261125-190512-3fa9c1"),
    ("ended 2026-12-08T03:29:56Z (4s)", (), "ended 2026-12-08T03:29:56Z (4s)"),
])
def test_log_lines_hold_no_whole_number(line, numbers, expected):
    assert mask_numbers(line, numbers) == expected


def test_an_old_runtime_dir_is_made_private(tmp_path):
    root = tmp_path / "var"
    (root / "recordings").mkdir(parents=True)
    (root / "demo.db").write_text("x")
    (root / "recordings" / "a.wav").write_text("x")
    os.chmod(root / "demo.db", 0o644)
    os.chmod(root / "recordings", 0o755)
    os.symlink("/etc/hostname", root / "link")
    assert make_private(root) >= 2
    for path in (root, root / "demo.db", root / "recordings", root / "recordings" / "a.wav"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert stat.S_IMODE(os.stat("/etc/hostname").st_mode) & 0o044  # a symlink's target untouched
    assert make_private(root) == 0


def test_the_demos_jail_never_ignores_more_or_less_than_its_own_addresses(tmp_path):
    config = _config(tmp_path)
    root = fail2ban.render(config, ignore=("10.0.0.5",))
    jail = (root / "jail.conf").read_text()
    assert "ignoreip = 127.0.0.1 ::1 10.0.0.5\n" in jail and "127.0.0.0/8" not in jail
    assert f"logpath = {config.instance_dir / 'log' / 'security.log'}\n" in jail
    assert "action = hotline-blackhole\n" in jail
    action = (root / "action.d" / "hotline-blackhole.conf").read_text()
    assert "127.0.0.1|::1" in action  # refused by the action itself, too
    for path in (root, root / "jail.conf", config.instance_dir / "log" / "security.log"):
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


@pytest.mark.parametrize("bad", ["", "1.2.3.4 5.6.7.8", "1.2.3.4\nenabled = false", "%(x)s"])
def test_the_demos_jail_refuses_an_ignore_entry_that_is_not_one_address(tmp_path, bad):
    with pytest.raises(ValueError):
        fail2ban.render(_config(tmp_path), ignore=(bad,))


def test_the_key_ring_file_is_base64_keys(tmp_path):
    ring = tmp_path / "k" / "data.key"
    [key] = load_keyring(ring)
    assert base64.b64encode(key).decode() in ring.read_text()
