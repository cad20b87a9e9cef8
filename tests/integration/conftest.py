"""Fixtures for the integration tests; the pieces they use are in conftest_support.py."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from conftest_support import HERE, PORTS, Hotline, seed_test_network
from hotline import instance
from hotline.config import load_config


def _require_tools() -> None:
    missing = [t for t in ("baresip", "debootstrap", "espeak-ng", "sox", "unshare") if shutil.which(t) is None]
    if os.geteuid() != 0 or missing:
        reason = f"integration tests need root and {', '.join(missing) or 'nothing else'}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI must run them: scripts/setup.sh installs everything)")
        pytest.skip(reason)


def _ports_taken() -> list[str]:
    """The instance's TCP ports something else already listens on (a leftover run)."""
    import socket

    taken = []
    for name in ("sip", "ami", "agi", "surgeon_phones"):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", PORTS[name]))
            except OSError:
                taken.append(f"{name} {PORTS[name]}")
    return taken


@pytest.fixture(scope="session")
def hotline() -> Iterator[Hotline]:
    _require_tools()
    taken = _ports_taken()
    if taken:
        # Another Asterisk or service on these ports would answer in place of
        # ours (wrong secrets, wrong database): say so instead of failing oddly.
        pytest.fail(f"ports already in use: {', '.join(taken)} -- a leftover run? "
                    "(set HOTLINE_TEST_PORT_BASE to move them)", pytrace=False)
    var_dir = Path(tempfile.mkdtemp(prefix="hl-", dir="/tmp"))
    env = {
        **os.environ,
        "HOTLINE_VAR_DIR": str(var_dir),
        "HOTLINE_INSTANCE": "it",
        "HOTLINE_MENU_FILE": str(HERE / "menu-test.toml"),
        **{f"HOTLINE_PORT_{k.upper()}": str(v) for k, v in PORTS.items()},
    }
    env.pop("HOTLINE_DATABASE_URL", None)
    env.pop("HOTLINE_CONFIG", None)
    config = load_config(env=env)
    try:
        instance.prepare(config, log=lambda line: None)
        seed_test_network(config.db_url)
        instance.start_asterisk(config)
        instance.start_service(config, env=env)
        yield Hotline(config, env, var_dir / "calls")
    finally:
        # Whatever failed on the way up, nothing of this session stays running.
        instance.stop_service(config)
        instance.stop_asterisk(config)
        if not os.environ.get("HOTLINE_KEEP_TEST_DIR"):
            shutil.rmtree(var_dir, ignore_errors=True)


@pytest.fixture
def line(hotline: Hotline) -> Iterator[Hotline]:
    """The hotline, checked after the test: no channel may be left in Asterisk."""
    (hotline.workdir).mkdir(parents=True, exist_ok=True)
    yield hotline
    assert hotline.wait_no_channels() == 0, "channels left in Asterisk after the call"
