#!/usr/bin/env bash
# Install everything the hotline and its tests need on a fresh Debian machine
# (as root): Debian packages, a Python virtualenv with the project, and the
# sandboxed Asterisk 22 (Debian sid root, cached in /var/cache/hotline).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# chromium: the browser the console's end-to-end tests drive (Playwright, never a
# downloaded browser); fonts-noto-cjk so its screenshots show Chinese, not boxes.
# kamailio: the SIP front door of a cluster (cluster/kamailio.py), started by us.
APT_PACKAGES=(debootstrap baresip-core sip-tester espeak-ng sox util-linux postgresql-client chromium
              fonts-noto-cjk fail2ban kamailio)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh: run as root (apt-get, debootstrap, chroot)" >&2
  exit 1
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# Debian enables its own kamailio service on 5060 with the sample config; the
# front door is started by the hotline on its own config, so keep that one off.
if [ -d /run/systemd/system ] && { systemctl is-enabled --quiet kamailio.service ||
                                    systemctl is-active --quiet kamailio.service; } 2>/dev/null; then
  systemctl disable --now kamailio.service
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "scripts/setup.sh: Python 3.11 or newer is needed ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "== python: creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "== python: installing the project into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
# Constrained by requirements.lock: every package at its pinned, audited version.
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'

echo "== asterisk: sandbox root"
.venv/bin/hotline sandbox
