"""Support for the console's browser tests: the console process, its users, artifacts.

`register_reports` adds a small pytest plugin at run time: it keeps each
phase's report on the test item, so a fixture's teardown knows whether the
test failed and keeps a screenshot.

Artifacts (screenshots of each main page, failure screenshots, the console's
log) go to $HOTLINE_ARTIFACTS_DIR if set, else <repo>/test-artifacts/<UTC
timestamp>/ (git-ignored); the path is printed at the end of the run.
"""
from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Iterator

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"  # Debian's; never a browser Playwright downloads
# CI runs as root, where chromium refuses its own sandbox.
CHROMIUM_ARGS = ["--no-sandbox"]

_artifacts: Path | None = None


def artifacts_dir() -> Path:
    """This run's artifacts folder, made on first use (one per test process)."""
    global _artifacts
    if _artifacts is None:
        chosen = os.environ.get("HOTLINE_ARTIFACTS_DIR")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        _artifacts = Path(chosen) if chosen else REPO / "test-artifacts" / stamp
        _artifacts.mkdir(parents=True, exist_ok=True)
    return _artifacts


def screenshot_path(name: str, folder: str = "pages") -> Path:
    where = artifacts_dir() / folder
    where.mkdir(parents=True, exist_ok=True)
    return where / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:120] + ".png")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hotline_cli(env: dict[str, str], *args: str, stdin: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess:
    """`hotline ARGS` as its own process, with the test instance's environment."""
    done = subprocess.run([sys.executable, "-m", "hotline", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)
    if check:
        assert done.returncode == 0, f"hotline {' '.join(args)}: {done.stderr or done.stdout}"
    return done


@dataclass(frozen=True)
class Account:
    username: str
    password: str
    role: str
    surgeon_id: int | None = None


def create_account(env: dict[str, str], username: str, role: str,
                   surgeon_id: int | None = None) -> Account:
    """A console user made by `hotline user create --password-stdin` (English pages)."""
    account = Account(username, "pw-" + secrets.token_urlsafe(12), role, surgeon_id)
    args = ["user", "create", username, "--role", role, "--lang", "en", "--password-stdin"]
    if surgeon_id is not None:
        args += ["--surgeon", str(surgeon_id)]
    hotline_cli(env, *args, stdin=account.password + "\n")
    return account


@dataclass
class Console:
    """`hotline console` running as a subprocess; its output goes to `log_path`."""

    process: subprocess.Popen
    base_url: str
    log_path: Path
    accounts: dict[str, Account] = field(default_factory=dict)
    _log: IO[bytes] | None = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        if self._log is not None:
            self._log.close()


def start_console(env: dict[str, str], port: int, log_path: Path,
                  timeout_s: float = 60.0) -> Console:
    """Start `hotline console --port PORT` and wait until it answers the sign-in page."""
    log = open(log_path, "ab")
    process = subprocess.Popen([sys.executable, "-m", "hotline", "console", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    console = Console(process, f"http://127.0.0.1:{port}", log_path, _log=log)
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            console.stop()
            raise AssertionError(
                f"hotline console exited ({process.returncode}):\n{console.log_tail()}")
        try:
            with urllib.request.urlopen(console.base_url + "/login", timeout=5) as response:
                if response.status == 200:
                    return console
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            console.stop()
            raise AssertionError(f"hotline console never answered on {port}:\n{console.log_tail()}")
        time.sleep(0.3)


@contextmanager
def running_console(hotline_env: dict[str, str], accounts: dict[str, tuple[str, str, int | None]],
                    log_name: str) -> Iterator[Console]:
    """A `hotline console` over plain HTTP on a free port, with `accounts`
    ({key: (username, role, surgeon id)}) created first; stopped on exit."""
    env = {**hotline_env, "HOTLINE_CONSOLE_INSECURE_COOKIES": "1"}
    created = {key: create_account(env, name, role, surgeon)
               for key, (name, role, surgeon) in accounts.items()}
    running = start_console(env, free_port(), artifacts_dir() / log_name)
    running.accounts = created
    try:
        yield running
    finally:
        running.stop()


@contextmanager
def headless_chromium() -> Iterator["Browser"]:
    """Debian's chromium under Playwright, closed on exit.

    Use it from a module-scoped fixture, not a session one: while Playwright's
    sync API is open, its event loop counts as running in the main thread, and
    `asyncio.run()` in any later test module (the AMI tests) would fail.
    """
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# -- which test failed; where the artifacts went ----------------------------------

class _BrowserTestReports:
    """A pytest plugin: keeps each phase's report on its test item; prints the artifacts path."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call) -> Iterator[None]:
        report = yield
        setattr(item, f"rep_{report.when}", report)
        return report

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if _artifacts is not None:
            terminalreporter.write_line(
                f"console browser tests: screenshots and the console log in {_artifacts}")


def register_reports(config: pytest.Config) -> None:
    """Register the plugin once (from a session fixture: a test module's `pytest_plugins`
    would import this module a second time for assertion rewriting)."""
    if config.pluginmanager.get_plugin("hotline-browser-reports") is None:
        config.pluginmanager.register(_BrowserTestReports(), "hotline-browser-reports")


def failed(item: pytest.Item) -> bool:
    """Whether the test's setup or body failed (needs `register_reports`)."""
    return any(getattr(getattr(item, f"rep_{when}", None), "failed", False)
               for when in ("setup", "call"))
