#!/usr/bin/env bash
# Creates .venv and installs ftplb into it (with EXTRAS, e.g. "test").
# On a fresh Debian 12, run as root, it first installs python3-venv if needed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
EXTRAS="${1:-}"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    if [[ "$(id -u)" == 0 ]]; then
        echo "[setup] installing python3-venv"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
        echo "[setup] $PYTHON cannot create virtual environments: install python3-venv (as root)" >&2
        exit 1
    fi
fi
if [[ ! -x .venv/bin/python ]]; then
    echo "[setup] creating .venv"
    "$PYTHON" -m venv .venv
fi
target="."
[[ -n "$EXTRAS" ]] && target=".[$EXTRAS]"
echo "[setup] installing ftplb${EXTRAS:+ with $EXTRAS extras} into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$target"
