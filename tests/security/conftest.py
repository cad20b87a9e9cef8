"""Fixtures for the attack suite: one sandboxed Asterisk + service of its own.

The integration suite's session instance (tests/integration/conftest.py) sits
on HOTLINE_TEST_PORT_BASE + 38..73; this one takes + 538..573, RTP + 600..799
and SIPp + 900..949, so both can run in one pytest session without meeting.
The pieces (seeding, the `Hotline` handle, the test menu) are the integration
suite's, imported from conftest_support.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

_INTEGRATION = Path(__file__).resolve().parent.parent / "integration"
if str(_INTEGRATION) not in sys.path:
    sys.path.insert(0, str(_INTEGRATION))

from conftest_support import Hotline, running_hotline  # noqa: E402

from attack_support import PORTS  # noqa: E402
from demo_support import running_demo  # noqa: E402


@pytest.fixture(scope="session")
def hotline() -> Iterator[Hotline]:
    """The real thing, as `hotline up` runs it: sandboxed Asterisk 22, the service, SQLite."""
    with running_hotline("sec", PORTS, what="the attack suite",
                         unset=("HOTLINE_AGI_ALLOWED_HOSTS",)) as line:
        yield line


@pytest.fixture
def line(hotline: Hotline) -> Iterator[Hotline]:
    """The hotline, checked after the test: no channel may be left in Asterisk."""
    hotline.workdir.mkdir(parents=True, exist_ok=True)
    yield hotline
    assert hotline.wait_no_channels() == 0, "channels left in Asterisk after the attack"


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Iterator[Hotline]:
    """The demo as `hotline up` runs it, with production's logging (demo_support.py)."""
    with running_demo(tmp_path_factory.mktemp("demo-phones")) as line:
        yield line
