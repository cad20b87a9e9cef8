"""scripts/audit_deps.py: a known-vulnerable pin fails the suite; an audit that could not run says so."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit_deps.py"
spec = importlib.util.spec_from_file_location("audit_deps", SCRIPT)
audit_deps = importlib.util.module_from_spec(spec)
sys.modules["audit_deps"] = audit_deps  # its dataclass looks itself up there
spec.loader.exec_module(audit_deps)

JINJA_CVE = {"name": "jinja2", "version": "3.1.2", "vulns": [
    {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"], "aliases": ["CVE-2024-22195"]}]}
CLEAN = {"name": "flask", "version": "3.1.3", "vulns": []}
SKIPPED = {"name": "waitress", "version": "3.0.2",
           "skip_reason": "Dependency not found on PyPI and could not be audited"}


@pytest.mark.parametrize("deps, rc, says", [
    ([JINJA_CVE, CLEAN], 1, "VULNERABLE jinja2==3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)"),
    ([CLEAN], 0, "1 pins audited, no known vulnerabilities"),
    ([CLEAN, SKIPPED], 0, "(1 could not be checked)"),
    ([SKIPPED, SKIPPED], 0, "NOT AUDITED -- all 2 pins were skipped"),
])
def test_the_verdict(monkeypatch, capsys, deps, rc, says):
    monkeypatch.setattr(audit_deps, "run_pip_audit", lambda lock: {"dependencies": deps})
    monkeypatch.delenv("HOTLINE_AUDIT_REQUIRED", raising=False)
    assert audit_deps.main([]) == rc
    captured = capsys.readouterr()
    assert says in captured.out + captured.err


def test_an_audit_that_could_not_run_fails_where_it_is_required(monkeypatch):
    monkeypatch.setattr(audit_deps, "run_pip_audit", lambda lock: {"dependencies": [SKIPPED]})
    monkeypatch.setenv("HOTLINE_AUDIT_REQUIRED", "1")
    assert audit_deps.main([]) == 1


def test_every_dependency_is_pinned_in_the_lock():
    """setup.cfg's ranges are resolved once into requirements.lock; nothing floats."""
    lock = SCRIPT.parent.parent / "requirements.lock"
    pins = [line for line in lock.read_text().splitlines() if line and not line.startswith("#")]
    assert pins and all("==" in line and ";" not in line for line in pins)
    names = {line.split("==")[0].lower().replace("_", "-") for line in pins}
    for needed in ("flask", "sqlalchemy", "twilio", "cryptography", "pip-audit", "playwright"):
        assert needed in names
