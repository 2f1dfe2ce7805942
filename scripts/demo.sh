#!/usr/bin/env bash
# Sets up ftplb and runs its demo: two built-in FTP servers behind ftplb on 127.0.0.1:2121.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/ftplb demo "$@"
