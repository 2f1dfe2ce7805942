#!/usr/bin/env bash
# Installs what the integration tests need on Debian 12: FTP clients (curl, lftp),
# chromium (the stats page's browser test, driven by playwright without its own browsers),
# tmux (the terminal that `ftplb status` and `ftplb top` are tested in),
# Prometheus (a real scraper of the admin /metrics; run by the test in the foreground),
# rsyslog (the syslog test runs its own rsyslogd in the foreground),
# HAProxy (a PROXY-protocol peer on both sides of ftplb) and OpenSSH (SFTP behind a tcp
# frontend; the tests run haproxy and sshd -D in the foreground with their own configs),
# ProFTPD from apt, vsftpd and Pure-FTPd unpacked into <repo>/.deps/root (the three
# servers conflict with each other as packages, and the tests run them as plain
# foreground processes, never as services), a PAM service and a system test user.
#
# Idempotent and quick when everything is in place. Run as root to install;
# run as any other user to only check and list what is missing (exit status 1).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="${REPO}/.deps"
ROOTFS="${DEPS}/root"
DEB_CACHE="${DEPS}/debs"

# Runtime libraries of the unpacked vsftpd / pure-ftpd binaries: apt does not
# resolve their dependencies because they are never installed as packages.
APT_PACKAGES=(curl lftp proftpd-core proftpd-mod-crypto iproute2 libwrap0 libsodium23 libcap2 libpam0g libssl3
    libpam-modules passwd chromium tmux prometheus rsyslog haproxy openssh-server openssh-client)
UNPACKED_PACKAGES=(vsftpd pure-ftpd)
TEST_USER=ftptest
TEST_PASSWORD=ftptest
TEST_HOME=/srv/ftptest
TEST_SHELL=/bin/bash
PAM_SERVICE=/etc/pam.d/ftplb-test
POLICY_RC=/usr/sbin/policy-rc.d

step() { printf '[install-test-deps] %s\n' "$*"; }

IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1
MISSING=()

missing_apt_packages() {
    local pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null || true)"
        [[ "${status}" == "install ok installed" ]] || printf '%s\n' "${pkg}"
    done
}

binary_path() {
    case "$1" in
        vsftpd) printf '%s\n' "${ROOTFS}/usr/sbin/vsftpd" ;;
        pure-ftpd) printf '%s\n' "${ROOTFS}/usr/sbin/pure-ftpd" ;;
    esac
}

# ---- 1. apt packages -------------------------------------------------------
mapfile -t TO_INSTALL < <(missing_apt_packages)
if ((${#TO_INSTALL[@]} == 0)); then
    step "apt packages: all present (${APT_PACKAGES[*]})"
elif ((IS_ROOT)); then
    step "apt-get update"
    apt-get update -qq
    step "apt-get install ${TO_INSTALL[*]} (services blocked by ${POLICY_RC})"
    created_policy=0
    if [[ ! -e "${POLICY_RC}" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"${POLICY_RC}"
        chmod 0755 "${POLICY_RC}"
        created_policy=1
        trap '[[ ${created_policy} == 1 ]] && rm -f "${POLICY_RC}"' EXIT
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${TO_INSTALL[@]}" >/dev/null
    if ((created_policy)); then
        rm -f "${POLICY_RC}"
        created_policy=0
    fi
    step "removed temporary ${POLICY_RC}"
else
    step "MISSING apt packages: ${TO_INSTALL[*]}"
    MISSING+=("${TO_INSTALL[@]}")
fi

# ---- 2. vsftpd and pure-ftpd, unpacked (not installed) --------------------
for pkg in "${UNPACKED_PACKAGES[@]}"; do
    bin="$(binary_path "${pkg}")"
    if [[ -x "${bin}" ]]; then
        step "${pkg}: present at ${bin}"
        continue
    fi
    if ((!IS_ROOT)); then
        step "MISSING ${pkg}: ${bin} (run this script as root)"
        MISSING+=("${pkg}")
        continue
    fi
    mkdir -p "${DEB_CACHE}" "${ROOTFS}"
    # FTPLB_DEB_DIR may point at a folder of already downloaded .deb files.
    deb="$(find "${DEB_CACHE}" ${FTPLB_DEB_DIR:+"${FTPLB_DEB_DIR}"} -maxdepth 1 \
        -name "${pkg}_*.deb" -print -quit 2>/dev/null || true)"
    if [[ -z "${deb}" ]]; then
        step "${pkg}: apt-get download into ${DEB_CACHE}"
        # apt-get download needs package lists; refresh them when it finds nothing.
        (cd "${DEB_CACHE}" && apt-get download -qq "${pkg}" 2>/dev/null) ||
            { apt-get update -qq && (cd "${DEB_CACHE}" && apt-get download -qq "${pkg}"); }
        deb="$(find "${DEB_CACHE}" -maxdepth 1 -name "${pkg}_*.deb" -print -quit)"
    fi
    step "${pkg}: dpkg-deb -x $(basename "${deb}") ${ROOTFS}"
    dpkg-deb -x "${deb}" "${ROOTFS}"
    [[ -x "${bin}" ]] || { step "ERROR: ${bin} not found after unpacking ${deb}"; exit 1; }
done

# ---- 3. unpacked binaries find their shared libraries ---------------------
for pkg in "${UNPACKED_PACKAGES[@]}"; do
    bin="$(binary_path "${pkg}")"
    [[ -x "${bin}" ]] || continue
    unresolved="$(ldd "${bin}" 2>/dev/null | awk '/not found/ {print $1}' | tr '\n' ' ')"
    if [[ -n "${unresolved}" ]]; then
        step "MISSING shared libraries for ${pkg}: ${unresolved}"
        MISSING+=("libs-of-${pkg}")
    else
        step "${pkg}: shared libraries resolve"
    fi
done

# ---- 4. PAM service for vsftpd ---------------------------------------------
PAM_CONTENT='# Used only by the ftplb integration tests (vsftpd pam_service_name=ftplb-test).
auth    required pam_unix.so
account required pam_unix.so
session required pam_permit.so'
if [[ -f "${PAM_SERVICE}" ]] && [[ "$(cat "${PAM_SERVICE}")" == "${PAM_CONTENT}" ]]; then
    step "PAM service: ${PAM_SERVICE} present"
elif ((IS_ROOT)); then
    printf '%s\n' "${PAM_CONTENT}" >"${PAM_SERVICE}"
    chmod 0644 "${PAM_SERVICE}"
    step "PAM service: wrote ${PAM_SERVICE}"
else
    step "MISSING PAM service ${PAM_SERVICE}"
    MISSING+=("${PAM_SERVICE}")
fi

# ---- 5. system test user ---------------------------------------------------
if ! grep -qxF "${TEST_SHELL}" /etc/shells; then
    if ((IS_ROOT)); then
        printf '%s\n' "${TEST_SHELL}" >>/etc/shells
        step "added ${TEST_SHELL} to /etc/shells"
    else
        step "MISSING ${TEST_SHELL} in /etc/shells"
        MISSING+=("shell")
    fi
fi
if getent passwd "${TEST_USER}" >/dev/null; then
    step "user ${TEST_USER}: exists"
elif ((IS_ROOT)); then
    useradd --create-home --home-dir "${TEST_HOME}" --shell "${TEST_SHELL}" \
        --user-group "${TEST_USER}"
    step "user ${TEST_USER}: created (home ${TEST_HOME})"
else
    step "MISSING user ${TEST_USER}"
    MISSING+=("user ${TEST_USER}")
fi
if ((IS_ROOT)); then
    # SHA512 instead of Debian's default yescrypt: ~7 ms per PAM login instead of ~50 ms.
    printf '%s:%s\n' "${TEST_USER}" "${TEST_PASSWORD}" | chpasswd -c SHA512
    step "user ${TEST_USER}: password set (SHA512)"
fi

# ---- summary ---------------------------------------------------------------
if ((${#MISSING[@]})); then
    step "NOT READY, missing: ${MISSING[*]}"
    exit 1
fi
step "ready"
