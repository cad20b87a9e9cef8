"""Secrets (issue 9 part 7): none in the repository, generated on first run, private, read
from files or the environment only, never echoed."""
from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import pytest

from hotline.config import load_config

REPO = Path(__file__).resolve().parents[2]
SECRET_FILE_NAMES = re.compile(r"(^|/)([^/]*\.secret|[^/]*\.token|data\.key|wechat-[^/]*\.key|"
                               r"[^/]*\.pem|id_rsa[^/]*|\.env)$")
# Things that look like real credentials: a private key, a Twilio account SID or a
# WeChat robot key with many distinct characters (test values are built at run time
# or are repetitive, like "AC" + "1" * 32).
CREDENTIAL = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|AC[0-9a-f]{32}|"
                        r"key=[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return out.splitlines()


def test_no_secret_file_is_tracked():
    assert [name for name in tracked_files() if SECRET_FILE_NAMES.search(name)] == []


def test_no_credential_is_written_into_a_tracked_file():
    found = []
    for name in tracked_files():
        path = REPO / name
        if not path.is_file() or path.stat().st_size > 2_000_000:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in CREDENTIAL.finditer(text):
            if len(set(match.group(0))) >= 14:  # not a repetitive test value
                found.append(f"{name}: {match.group(0)[:12]}…")
    assert found == []


def test_secrets_are_generated_once_private_and_per_instance(tmp_path):
    one = load_config(env={"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_INSTANCE": "one"})
    two = load_config(env={"HOTLINE_VAR_DIR": str(tmp_path), "HOTLINE_INSTANCE": "two"})
    for getter in ("ami_secret", "sip_secret", "console_secret", "console_ami_secret"):
        first = getattr(one, getter)()
        assert len(first) >= 24 and getattr(one, getter)() == first  # generated once
        assert getattr(two, getter)() != first  # never shared between instances
    one.vault()
    for path in one.instance_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


@pytest.mark.parametrize("key", ["twilio_auth_token", "wechat_keys"])
def test_a_secret_in_the_config_file_is_refused(tmp_path, key):
    config_file = tmp_path / "hotline.toml"
    config_file.write_text(f'{key} = "x"\n', encoding="utf-8")
    with pytest.raises(ValueError, match="secrets are read"):
        load_config(file=config_file, env={})


def test_the_config_repr_never_shows_the_twilio_token():
    config = load_config(env={"HOTLINE_TWILIO_AUTH_TOKEN": "tok-" + "9" * 28})
    assert "tok-" not in repr(config)
