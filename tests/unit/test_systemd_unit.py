"""examples/ftplb.service: a ``Type=notify`` unit that reloads with SIGHUP and stops gracefully."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftplb.config.general import Defaults
from ftplb.example_files import example_path
from ftplb.supervisor import STOP_TIMEOUT

UNIT = Path(__file__).resolve().parents[2] / "examples" / "ftplb.service"


def service() -> configparser.SectionProxy:
    # systemd units repeat keys and allow what configparser's strict mode refuses.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(s|min)?", value)
    assert match, value
    return int(match[1]) * (60 if match[2] == "min" else 1)


def test_the_unit_is_type_notify_and_runs_ftplb_on_the_etc_config() -> None:
    unit = service()
    assert unit["Type"] == "notify"
    assert unit["ExecStart"] == "/usr/local/bin/ftplb run -c /etc/ftplb/ftplb.toml"
    assert unit["Restart"] == "on-failure"
    assert int(unit["LimitNOFILE"]) >= 4096


def test_reload_sends_sighup_to_the_main_process() -> None:
    assert service()["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_stop_is_one_sigterm_to_the_master_with_time_for_the_drain() -> None:
    unit = service()
    assert unit["KillSignal"] == "SIGTERM"
    # A second SIGTERM stops at once: the workers must get theirs from the master only.
    assert unit["KillMode"] == "mixed"
    assert seconds(unit["TimeoutStopSec"]) > Defaults().timeout_shutdown + STOP_TIMEOUT


def test_hardening_leaves_what_binding_port_21_and_dropping_root_need() -> None:
    unit = service()
    bounding = set(unit["CapabilityBoundingSet"].split())
    assert {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"} <= bounding
    assert "CAP_SYS_ADMIN" not in bounding
    assert unit["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert set(unit["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    for key in ("NoNewPrivileges", "ProtectHome", "PrivateTmp"):
        assert unit[key] == "yes", key
    assert unit["ProtectSystem"] == "strict"
    # ftplb itself drops to [defaults] user; a User= would forbid binding as root.
    assert "User" not in unit


def test_the_unit_is_the_one_ftplb_prints() -> None:
    path = example_path("systemd")
    assert path is not None
    assert path.read_text() == UNIT.read_text()


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this ftplb.
    ftplb = Path(sys.executable).parent / "ftplb"
    if not ftplb.exists():
        pytest.skip(f"no ftplb script next to {sys.executable}")
    unit = tmp_path / "ftplb.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/ftplb", str(ftplb)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "ftplb.service" not in result.stderr, result.stderr  # no warning about the unit
