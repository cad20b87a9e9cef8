"""Fixtures for the integration tests; the pieces they use are in conftest_support.py."""
from __future__ import annotations

from typing import Iterator

import pytest

from conftest_support import PORTS, Hotline, running_hotline
from hotline import instance


@pytest.fixture(scope="session")
def hotline() -> Iterator[Hotline]:
    with running_hotline("it", PORTS) as line:
        yield line


@pytest.fixture
def line(hotline: Hotline) -> Iterator[Hotline]:
    """The hotline, checked after the test: no channel may be left in Asterisk."""
    (hotline.workdir).mkdir(parents=True, exist_ok=True)
    yield hotline
    assert hotline.wait_no_channels() == 0, "channels left in Asterisk after the call"


@pytest.fixture
def broken(line: Hotline) -> Iterator[Hotline]:
    """The hotline for a test that breaks the service; it is whole again afterwards."""
    line.wait_mirror()
    yield line
    instance.stop_service(line.config)
    instance.start_service(line.config, env=line.env)
