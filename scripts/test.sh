#!/usr/bin/env bash
# Sets up everything the tests need, then runs the linters, the type checker and every test.
# As root it also installs the FTP servers and clients the integration tests drive.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh test
if [[ "$(id -u)" == 0 ]]; then
    scripts/install-test-deps.sh
else
    scripts/install-test-deps.sh || echo "[test] some test dependencies are missing (run as root to install them)"
fi
echo "[test] ruff"
.venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "[test] mypy --strict"
.venv/bin/mypy
echo "[test] pytest"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
