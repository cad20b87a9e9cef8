#!/usr/bin/env bash
# Run the hotline locally: install what is needed, provision the sandboxed
# Asterisk 22, create the SQLite database with the demo network, start Asterisk,
# the service, the console and the instance's fail2ban (AMI brute force is
# banned), and print how to place a call. Stop it with
# `.venv/bin/hotline down`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hotline up "$@"
