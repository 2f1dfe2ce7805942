#!/usr/bin/env bash
# Sets up everything the tests need, then runs the linters, the type checker and every test.
# Arguments go to pytest and run only what they name, without the coverage check.
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
if [[ $# -eq 0 ]]; then
    # The whole suite: first the unit tests, measuring the branch coverage of the
    # protocol core and the balancing, each of which must stay at 95 % or more;
    # then the rest, so that no test runs twice.
    echo "[test] pytest tests/unit, with branch coverage of ftplb.proto and ftplb.balancing"
    .venv/bin/python -m pytest -q -p no:cacheprovider \
        --cov=ftplb.proto --cov=ftplb.balancing --cov-report= tests/unit
    covered=true
    for package in proto balancing; do
        echo "[test] branch coverage of ftplb.$package"
        .venv/bin/coverage report --include="src/ftplb/$package/*" --fail-under=95 || covered=false
    done
    if [[ "$covered" != true ]]; then
        echo "[test] the branch coverage of the core is below 95 %" >&2
        exit 1
    fi
    set -- tests/integration
fi
echo "[test] pytest $*"
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
