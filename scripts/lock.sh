#!/usr/bin/env bash
# Regenerate requirements.lock: the project and its test extras installed into a
# fresh venv, every resulting package pinned. Review the diff, run the suite,
# commit. (pip-audit is pinned too: scripts/audit_deps.py runs it.)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check -e '.[test]'
{
  echo "# Every Python package the hotline and its tests install, pinned (issue 9: dependencies)."
  echo "# scripts/setup.sh installs with these as constraints; scripts/audit_deps.py checks them"
  echo "# against known vulnerabilities (pip-audit). Regenerate: bash scripts/lock.sh"
  "$tmp/venv/bin/pip" freeze --exclude-editable
} > requirements.lock
echo "requirements.lock: $(grep -vc '^#' requirements.lock) packages pinned"
