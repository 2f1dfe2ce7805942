"""The benchmark's pure helpers: /proc parsing, percentiles, ratios, EPSV, reports,
configs.

No sockets, no processes: these only check the arithmetic and parsing that turn
measurements into the published figures.
"""

from __future__ import annotations

import os
from types import SimpleNamespace
from typing import Any, cast

import pytest
from benchmarks import procstat, report, session_cost, stats, transfers
from benchmarks.loadgen import FtpReplyError, parse_epsv_port, source_address
from hypothesis import given
from hypothesis import strategies as st

from ftplb.config.load import load_config_text
from tests.integration.servers import FtpServer

# A real /proc/<pid>/stat line, with a command name holding a space and a ")".
STAT_LINE = (
    "4242 (ftp lb) x) S 4000 4242 4242 0 -1 4194560 2500 0 0 0 "
    "150 75 30 12 20 0 1 0 12345 300000000 5120 18446744073709551615 "
    "1 1 0 0 0 0 0 16781312 0 0 0 0 17 1 0 0 0 0 0"
)


def test_parse_stat_counts_fields_after_the_last_parenthesis() -> None:
    fields = procstat.parse_stat(STAT_LINE)
    assert fields.pid == 4242
    assert fields.ppid == 4000
    assert (fields.utime, fields.stime, fields.cutime, fields.cstime) == (150, 75, 30, 12)
    assert fields.rss_pages == 5120


def _stat(pid: int, ppid: int, utime: int = 0, stime: int = 0) -> procstat.StatFields:
    return procstat.StatFields(pid, ppid, utime, stime, 0, 0, 1)


def test_descendants_walks_the_whole_tree_and_nothing_else() -> None:
    table = [_stat(1, 0), _stat(10, 1), _stat(11, 10), _stat(12, 11), _stat(20, 1), _stat(30, 99)]
    assert sorted(s.pid for s in procstat.descendants(10, table)) == [11, 12]
    assert procstat.descendants(12, table) == []


def test_tree_cpu_counts_reaped_children_once() -> None:
    root = procstat.StatFields(1, 0, utime=10, stime=5, cutime=7, cstime=3, rss_pages=0)
    live = [_stat(2, 1, utime=4, stime=1)]
    assert procstat.tree_cpu_ticks(root, live) == 10 + 5 + 7 + 3 + 4 + 1


def test_own_process_is_readable() -> None:
    assert procstat.cpu_seconds(os.getpid(), with_children=False) >= 0
    assert procstat.rss_bytes(os.getpid(), with_children=False) > 0


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert stats.percentile(values, 0.5) == 50.0
    assert stats.percentile(values, 0.99) == 99.0
    assert stats.percentile(values, 1.0) == 100.0
    assert stats.percentile(values, 0.0) == 1.0
    assert stats.percentile([], 0.5) is None
    with pytest.raises(ValueError):
        stats.percentile(values, 1.5)


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=200), st.floats(0.0, 1.0))
def test_percentile_returns_an_observed_value_within_range(
    values: list[float], fraction: float
) -> None:
    result = stats.percentile(values, fraction)
    assert result in values
    assert min(values) <= result <= max(values)


def test_ratio_and_formats() -> None:
    assert stats.ratio(3.0, 2.0) == 1.5
    assert stats.ratio(None, 2.0) is None
    assert stats.ratio(1.0, 0.0) is None
    assert stats.fmt(None) == "-"
    assert stats.fmt(2488.4) == "2,488"
    assert stats.fmt_ratio(0.853) == "0.85"


def test_parse_epsv_port() -> None:
    assert parse_epsv_port(b"229 Entering Extended Passive Mode (|||50395|)\r\n") == 50395
    assert parse_epsv_port(b"229 EPSV ok (!!!2121!)") == 2121
    for bad in (b"227 (1,2,3,4,5,6)", b"229 no parens", b"229 (|||x|)", b"229 (|||70000|)"):
        with pytest.raises(FtpReplyError):
            parse_epsv_port(bad)


def test_source_addresses_cycle_over_64_loopback_addresses() -> None:
    assert source_address(0) == "127.0.0.100"
    assert source_address(63) == "127.0.0.163"
    assert source_address(64) == "127.0.0.100"
    assert len({source_address(i) for i in range(1000)}) == 64


def test_curl_write_out_and_epsv_trace() -> None:
    assert transfers.parse_write_out("0 1073741824 0.012 0.512") == (0, 1073741824, 0.012, 0.512)
    with pytest.raises(transfers.TransferError):
        transfers.parse_write_out("garbage")
    assert transfers.used_epsv("> EPSV\n< 229 Entering Extended Passive Mode (|||5|)\n")
    assert not transfers.used_epsv("> EPSV\n< 500 no\n> PASV\n< 227 (127,0,0,1,1,1)\n")


def _raw() -> dict[str, Any]:
    def runs(*values: float) -> list[dict[str, float]]:
        return [{"mb_per_s": v, "cpu_s_per_gib": v / 1000} for v in values]

    return {
        "params": {"size_text": "1 GiB"},
        "throughput": {
            "retr": {
                "direct": [{"mb_per_s": 2000.0, "cpu_s_per_gib": None}] * 3,
                "ftplb": runs(1700, 1800, 1900),
                "haproxy": runs(800, 1000, 900),
                "haproxy_tuned": runs(1950, 2050, 2150),
            },
            "stor": {
                "direct": [{"mb_per_s": 500.0, "cpu_s_per_gib": None}],
                "ftplb": runs(400),
                "haproxy": runs(450),
                "haproxy_tuned": runs(480),
            },
        },
        "sessions": {
            "list": {
                "ftplb": [{"sessions_per_s": 100, "cpu_ms_per_session": 0.8, "failed": 0}],
                "haproxy": [{"sessions_per_s": 120, "cpu_ms_per_session": 0.4, "failed": 0}],
            }
        },
        "rss": {
            "ftplb": {"levels": {"5000": {"held": 5000, "per_session_bytes": 8192}}, "failed": 0}
        },
    }


def test_figures_take_medians_and_divide_medians() -> None:
    figures = {f.key: f for f in report.build_figures(_raw())}
    retr = figures["retr_mb_s"]
    assert retr.values["ftplb"] == 1800
    assert retr.spread["haproxy"] == (800, 1000)
    assert retr.ratios["ftplb"]["direct"] == pytest.approx(0.9)
    assert retr.ratios["ftplb"]["haproxy"] == pytest.approx(2.0)
    # The direct path has no balancer, so no balancer CPU.
    assert "direct" not in figures["retr_cpu_s_per_gib"].values
    assert "direct" not in figures["list_cpu_ms_per_session"].values


def test_targets_are_judged_from_the_same_run() -> None:
    raw = _raw()
    checks = {c.target: c for c in report.check_targets(raw, report.build_figures(raw))}
    assert checks["RETR ≥ 0.85 x direct"].met is True
    assert checks["RETR ≥ 1.5 x HAProxy (seed config)"].met is True
    assert checks["RETR ≥ 0.9 x HAProxy tuned (splice)"].met is False  # 1800 / 2050
    assert checks["STOR ≥ 0.9 x direct"].met is False  # 400 / 500
    assert checks["CPU per session (login, EPSV, LIST, QUIT) ≤ 1.0 ms"].met is True
    rss = next(c for c in checks.values() if c.target.startswith("RSS"))
    assert rss.met is True
    tls = next(c for c in checks.values() if c.target.startswith("TLS"))
    assert tls.met is None


def test_rss_target_fails_when_a_session_failed() -> None:
    raw = _raw()
    raw["rss"]["ftplb"]["failed"] = 1
    checks = report.check_targets(raw, report.build_figures(raw))
    assert next(c for c in checks if c.target.startswith("RSS")).met is False


def test_markdown_has_every_figure_and_target() -> None:
    raw = _raw()
    figures = report.build_figures(raw)
    checks = report.check_targets(raw, figures)
    text = report.markdown(raw, figures, checks)
    for figure in figures:
        assert figure.title in text
    for check in checks:
        assert check.target in text


def test_the_session_cost_config_has_its_workers_and_an_admin_listener_when_asked() -> None:
    backends = [
        cast("FtpServer", SimpleNamespace(host=host, port=2121))
        for host in session_cost.SERVER_HOSTS
    ]
    plain = load_config_text(session_cost.ftplb_config(backends, 2))
    assert plain.defaults.workers == 2
    assert plain.admin is None
    frontend = plain.frontends[0]
    assert [str(bind) for bind in frontend.bind] == [f"{session_cost.FTPLB_HOST}:2121"]
    assert len(plain.backends[0].servers) == 2
    with_admin = load_config_text(session_cost.ftplb_config(backends, 1, admin=True))
    assert with_admin.admin is not None
    assert with_admin.admin.user == "admin"
