#!/usr/bin/env bash
# Runs the benchmark suite: ftplb against a direct path, HAProxy 2.6 (seed config and
# tuned with splice) and ProFTPD mod_proxy, over loopback; then ftplb's workers
# against HAProxy's threads, 500 transfers pending on 10 passive ports, and memory
# per idle session up to 10,000 sessions. Writes benchmarks/results/<timestamp>.json,
# .md and .png (and -workers.png), and prints the Markdown.
#
#   scripts/bench.sh            # full run: 1 GiB x 5 runs, 2,000 sessions x 3 runs (~13 min)
#   scripts/bench.sh --quick    # 256 MiB x 1 run, 1,000 sessions x 1 run, smaller
#                               # workers/small-range/idle sections (~4-5 min)
#   scripts/bench.sh --skip workers,small_range,idle   # the older phases alone
#
# Other arguments go to the benchmark (python -m benchmarks.ftp_bench --help).
# Needs root: vsftpd switches to the ftptest account, and as root this script
# installs HAProxy, ProFTPD's mod_proxy, the test servers, valgrind and strace first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '[bench] %s\n' "$*"; }

scripts/setup.sh test,bench
if [[ "$(id -u)" == 0 ]]; then
    scripts/install-test-deps.sh
    missing=()
    command -v haproxy >/dev/null || missing+=(haproxy)
    # For benchmarks/session_cost.py: instructions and system calls per session.
    command -v valgrind >/dev/null || missing+=(valgrind)
    command -v strace >/dev/null || missing+=(strace)
    [[ -e /usr/lib/proftpd/mod_proxy.so ]] || missing+=(proftpd-mod-proxy)
    # Debian 12 ships mod_tls (which mod_proxy needs loaded first) in proftpd-mod-crypto.
    [[ -e /usr/lib/proftpd/mod_tls.so ]] || missing+=(proftpd-mod-crypto)
    if ((${#missing[@]})); then
        step "apt-get install ${missing[*]} (services blocked by policy-rc.d)"
        created_policy=0
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
            printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
            chmod 0755 /usr/sbin/policy-rc.d
            created_policy=1
            trap '[[ ${created_policy} == 1 ]] && rm -f /usr/sbin/policy-rc.d' EXIT
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" >/dev/null
        if ((created_policy)); then
            rm -f /usr/sbin/policy-rc.d
            created_policy=0
        fi
    fi
else
    step "not root: the benchmark needs root (vsftpd switches to the ftptest account)" >&2
    exit 1
fi


step "running the benchmark"
exec .venv/bin/python -m benchmarks.ftp_bench "$@"
