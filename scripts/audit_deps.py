"""Check requirements.lock for known-vulnerable pins with pip-audit (run by scripts/test.sh).

Exit 1 when pip-audit reports a vulnerability in any pin (or cannot parse the
lock file): the suite, and so CI, fails. pip-audit asks PyPI's JSON API per
release; where that is unreachable it *skips* each package and would exit 0,
a check that cannot fail. So skips are counted: if every pin was skipped the
audit did not happen, which is said loudly (exit 0, since the machine cannot
do better), or is an error with HOTLINE_AUDIT_REQUIRED=1 -- set that wherever
the vulnerability service is reachable.

    .venv/bin/python scripts/audit_deps.py [requirements.lock]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

LOCK = Path(__file__).resolve().parent.parent / "requirements.lock"


@dataclass
class Verdict:
    vulnerable: list[str] = field(default_factory=list)  # "name==version: ID (fix: x)"
    audited: int = 0
    skipped: int = 0

    @property
    def exit_code(self) -> int:
        return 1 if self.vulnerable else 0


def judge(report: dict) -> Verdict:
    """What pip-audit's JSON report (`--format json`) says about the pins.

    >>> judge({"dependencies": [{"name": "jinja2", "version": "3.1.2", "vulns": [
    ...     {"id": "GHSA-h5c8-rqwp-cp95", "fix_versions": ["3.1.3"]}]}]}).vulnerable
    ['jinja2==3.1.2: GHSA-h5c8-rqwp-cp95 (fixed in 3.1.3)']
    """
    verdict = Verdict()
    for dep in report.get("dependencies", []):
        if dep.get("skip_reason"):
            verdict.skipped += 1
            continue
        verdict.audited += 1
        for vuln in dep.get("vulns", []):
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            verdict.vulnerable.append(f"{dep['name']}=={dep['version']}: {vuln['id']} "
                                      f"(fixed in {fixes})")
    return verdict


def run_pip_audit(lock: Path) -> dict:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    result = subprocess.run(
        [str(pip_audit), "-r", str(lock), "--no-deps", "--disable-pip", "--format", "json",
         "--progress-spinner", "off"],
        capture_output=True, text=True, timeout=900)
    try:
        return json.loads(result.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"audit_deps: pip-audit gave no report (exit {result.returncode}): "
                         f"{result.stderr.strip()[-500:]}") from None


def main(argv: list[str]) -> int:
    lock = Path(argv[0]) if argv else LOCK
    verdict = judge(run_pip_audit(lock))
    for line in verdict.vulnerable:
        print(f"audit_deps: VULNERABLE {line}", file=sys.stderr)
    if verdict.vulnerable:
        print(f"audit_deps: {len(verdict.vulnerable)} known vulnerabilities in {lock.name}: "
              "raise the pins (scripts/lock.sh) and run the suite", file=sys.stderr)
        return 1
    if verdict.audited == 0:
        message = (f"audit_deps: NOT AUDITED -- all {verdict.skipped} pins were skipped: "
                   "pip-audit's vulnerability service (PyPI's per-release JSON API) is not "
                   "reachable from this machine")
        print(message, file=sys.stderr)
        return 1 if os.environ.get("HOTLINE_AUDIT_REQUIRED") == "1" else 0
    print(f"audit_deps: {verdict.audited} pins audited, no known vulnerabilities"
          + (f" ({verdict.skipped} could not be checked)" if verdict.skipped else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
