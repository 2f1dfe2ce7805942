"""The pure helpers of the benchmark's workers, small-range and idle sections.

No sockets, no processes: counts, shares, source addresses, ratios, the
sha256 check of uploads and the tables, from made-up samples.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from types import SimpleNamespace
from typing import Any, cast

import pytest
from benchmarks import ftp_bench, holders, report_sections, sections, setups, small_range
from benchmarks.loadgen import Credentials, source_address
from hypothesis import given
from hypothesis import strategies as st

from tests.integration.servers import FtpServer

# --------------------------------------------------------------------------- workers


def test_counts_within_keeps_the_counts_the_cores_allow() -> None:
    assert sections.counts_within((1, 2, 4), 2) == [1, 2]
    assert sections.counts_within((4, 2, 1, 2), 8) == [1, 2, 4]
    assert sections.counts_within((1, 2, 4), 1) == [1]
    assert sections.counts_within((0, 3), 2) == []


def _sample(rate: float, cpu: float | None, failed: int = 0) -> dict[str, Any]:
    return {"sessions_per_s": rate, "cpu_ms_per_session": cpu, "failed": failed}


def test_workers_summary_divides_medians_and_scales_cpu_by_one_worker() -> None:
    samples = {
        "ftplb": {
            "1": [_sample(100, 2.0), _sample(300, 4.0), _sample(200, 3.0)],
            "2": [_sample(400, 3.3, failed=2)],
        },
        "haproxy": {"1": [_sample(400, 1.0)], "2": [_sample(500, 1.1)]},
    }
    summary = report_sections.workers_summary(samples)
    one, two = summary["1"], summary["2"]
    assert one["ftplb_sessions_per_s"] == 200
    assert one["sessions_per_s_ratio"] == pytest.approx(0.5)
    assert one["cpu_ratio"] == pytest.approx(3.0)
    assert one["ftplb_cpu_vs_1_worker"] == pytest.approx(1.0)
    assert two["sessions_per_s_ratio"] == pytest.approx(0.8)
    assert two["ftplb_cpu_vs_1_worker"] == pytest.approx(1.1)
    assert two["cpu_ratio"] == pytest.approx(3.0)
    assert (two["ftplb_failed"], two["haproxy_failed"], one["runs"]) == (2, 0, 3)


def test_workers_summary_has_no_ratio_without_a_reference() -> None:
    summary = report_sections.workers_summary({"ftplb": {"2": [_sample(100, None)]}})
    row = summary["2"]
    assert row["haproxy_sessions_per_s"] is None
    assert row["sessions_per_s_ratio"] is None
    assert row["ftplb_cpu_ms_per_session"] is None
    assert row["ftplb_cpu_vs_1_worker"] is None


# --------------------------------------------------------------------------- small range


def test_distinct_sources_are_one_address_per_session_from_127_0_1_1() -> None:
    assert small_range.distinct_source(0) == "127.0.1.1"
    assert small_range.distinct_source(254) == "127.0.1.255"
    assert small_range.distinct_source(499) == "127.0.2.244"
    assert len({small_range.distinct_source(i) for i in range(500)}) == 500
    assert small_range.source_span(500) == "127.0.1.1 .. 127.0.2.244"


def test_distinct_source_refuses_to_leave_loopback() -> None:
    with pytest.raises(ValueError, match="no source address left"):
        small_range.distinct_source(2**24)


def test_half_the_sessions_retr_and_half_stor() -> None:
    ops = [small_range.op_of(i) for i in range(500)]
    assert ops.count("retr") == ops.count("stor") == 250


@given(st.integers(0, 10_000), st.integers(0, 10_000))
def test_every_upload_has_its_own_bytes(first: int, second: int) -> None:
    base = bytes(64)
    one = small_range.upload_payload(first, base)
    other = small_range.upload_payload(second, base)
    assert len(one) == len(base)
    assert (one == other) == (first == second)


def test_check_uploads_counts_matches_missing_and_different_files() -> None:
    files = {
        small_range.upload_name(1): b"one",
        small_range.upload_name(3): b"tampered",
    }
    uploads = {
        1: hashlib.sha256(b"one").hexdigest(),
        3: hashlib.sha256(b"three").hexdigest(),
        5: hashlib.sha256(b"five").hexdigest(),
    }
    good, problems = small_range.check_uploads(uploads, files.get)
    assert good == 1
    assert problems == {
        "STOR: sha256 on the server differs": 1,
        "STOR: file missing on the servers": 1,
    }


def test_range_result_rate_and_failures() -> None:
    result = small_range.RangeResult(sessions=500, completed=10, bytes_moved=10_000_000)
    result.transfer_seconds = 2.0
    assert result.failed == 490
    assert result.mb_per_s == pytest.approx(5.0)
    assert small_range.RangeResult(sessions=1).mb_per_s == 0.0


# --------------------------------------------------------------------------- idle


@pytest.mark.parametrize(
    ("level", "processes", "expected"),
    [(10_000, 4, [2500] * 4), (10, 4, [3, 3, 2, 2]), (3, 4, [1, 1, 1, 0]), (0, 2, [0, 0])],
)
def test_shares_split_a_level_evenly(level: int, processes: int, expected: list[int]) -> None:
    assert holders.shares(level, processes) == expected


def test_shares_needs_a_process() -> None:
    with pytest.raises(ValueError, match="at least one"):
        holders.shares(10, 0)


@given(st.integers(1, 8), st.integers(0, 3000))
def test_global_indexes_of_the_children_never_collide(processes: int, level: int) -> None:
    indexes = [
        holders.global_index(child, local, processes)
        for child, count in enumerate(holders.shares(level, processes))
        for local in range(count)
    ]
    assert sorted(indexes) == list(range(level))


def test_merge_errors_adds_up_by_kind() -> None:
    merged = holders.merge_errors([{"login: timeout": 2}, {}, {"login: timeout": 1, "x": 4}])
    assert merged == {"login: timeout": 3, "x": 4}


def test_fits_keeps_two_fds_per_session_and_a_reserve_under_the_limit() -> None:
    assert sections.fits(9_750, 20_000)
    assert not sections.fits(9_751, 20_000)
    assert not sections.fits(10_000, 20_000)
    assert sections.stand_in_level(20_000) == 9_500
    assert sections.fits(sections.stand_in_level(20_000), 20_000)
    assert sections.stand_in_level(600) == 500


def test_busiest_share_counts_the_sessions_of_the_fullest_worker() -> None:
    def by_last_octet(ip: str, workers: int) -> int:
        return int(ip.rsplit(".", 1)[1]) % workers

    # Sources 127.0.0.100-163 in turn: 64 addresses, 32 even and 32 odd.
    assert sections.busiest_share(128, 2, by_last_octet) == 64
    assert sections.busiest_share(3, 2, by_last_octet) == 2
    assert sections.busiest_share(0, 2, by_last_octet) == 0
    assert source_address(64) == source_address(0)


def test_the_rss_recorder_records_the_growth_per_held_session(
    capsys: pytest.CaptureFixture[str],
) -> None:
    pid = os.getpid()
    entry: dict[str, Any] = {"levels": {}}
    sections.rss_recorder("RSS ftplb", pid, 0, entry)(1000, 500)
    plain = entry["levels"]["1000"]
    assert plain["held"] == 500
    assert plain["per_session_bytes"] == round(plain["rss_bytes"] / 500, 1)
    assert "processes" not in plain
    sections.rss_recorder("idle ftplb", pid, 0, entry, per_process=True)(2000, 0)
    none_held = entry["levels"]["2000"]
    assert none_held["per_session_bytes"] == 0.0
    assert none_held["processes"][0]["pid"] == pid
    assert "  RSS ftplb    500 of   1000 held: RSS " in capsys.readouterr().out


def _idle_entry(per_session: dict[int, float]) -> dict[str, Any]:
    return {
        "levels": {
            str(level): {"held": level, "per_session_bytes": kib * 1024}
            for level, kib in per_session.items()
        }
    }


def test_idle_summary_divides_by_haproxy_at_the_same_level_or_the_highest_below() -> None:
    paths = {
        "ftplb": _idle_entry({1000: 6.0, 10_000: 8.0}),
        "haproxy": _idle_entry({1000: 3.0, 9500: 4.0}),
    }
    summary = report_sections.idle_summary(paths)
    assert summary["1000"]["ratio"] == pytest.approx(2.0)
    assert summary["1000"]["haproxy_reference_level"] == 1000
    assert summary["10000"]["ratio"] == pytest.approx(2.0)
    assert summary["10000"]["haproxy_reference_level"] == 9500
    assert summary["10000"]["haproxy_held"] is None
    assert summary["9500"]["ftplb_kib_per_session"] is None
    assert summary["9500"]["ratio"] is None


def test_idle_summary_without_haproxy_has_no_ratio() -> None:
    summary = report_sections.idle_summary({"ftplb": _idle_entry({10_000: 8.0})})
    assert summary["10000"]["ratio"] is None
    assert summary["10000"]["ftplb_held"] == 10_000


# --------------------------------------------------------------------------- report and setup


def test_size_label() -> None:
    assert report_sections.size_label(1024**2) == "1 MiB"
    assert report_sections.size_label(256 * 1024) == "256 KiB"
    assert report_sections.size_label(1000) == "1000 B"


def test_markdown_has_a_table_for_each_section_present() -> None:
    raw: dict[str, Any] = {
        "workers": {
            "nproc": 2,
            "counts": [1, 2],
            "skipped_counts": [4],
            "summary": report_sections.workers_summary(
                {"ftplb": {"1": [_sample(100, 2.0)]}, "haproxy": {"1": [_sample(200, 1.0)]}}
            ),
        },
        "small_range": {
            "sessions": 500,
            "passive_ports": 10,
            "size": 1024**2,
            "completed": 10,
            "failed": 490,
            "errors": {"EPSV: 425": 490},
        },
        "idle": {
            "paths": {"ftplb": _idle_entry({10_000: 8.0}), "haproxy": _idle_entry({9500: 4.0})},
        },
    }
    raw["idle"]["summary"] = report_sections.idle_summary(raw["idle"]["paths"])
    text = "\n".join(report_sections.markdown_lines(raw))
    assert "| 1 | 100 | 200 | 0.50 | 2.00 | 1.00 | 2.00 | 1.00 | 0, 0 |" in text
    assert "left out [4]" in text
    assert "| 500 | - | 10 | 490 | - | - | - |" in text
    assert "EPSV: 425: 490" in text
    assert "| 10,000 | 8.0 | 10000 | - | - | 2.00 (HAProxy at 9,500) |" in text
    assert report_sections.markdown_lines({}) == []


def test_the_idle_table_tells_how_ftplb_processes_shared_the_top_level() -> None:
    entry = _idle_entry({2000: 5.0, 10_000: 6.5})
    entry["levels"]["10000"]["processes"] = [
        {"pid": 1, "rss_bytes": 56 * 1024**2, "fds": 6},
        {"pid": 2, "rss_bytes": 90 * 1024**2, "fds": 9701},
        {"pid": 3, "rss_bytes": 92 * 1024**2, "fds": 10_329},
    ]
    raw = {"idle": {"paths": {"ftplb": entry}, "summary": {}}}
    text = "\n".join(report_sections.markdown_lines(raw))
    assert (
        "- ftplb's processes at 10,000: master 56 MiB, 6 fds; worker 0 90 MiB, 9,701 fds; "
        "worker 1 92 MiB, 10,329 fds"
    ) in text


def _servers() -> list[FtpServer]:
    hosts = ("127.0.0.21", "127.0.0.22")
    return [cast("FtpServer", SimpleNamespace(host=h, port=2121)) for h in hosts]


def test_configs_of_the_new_sections() -> None:
    small = setups.small_range_config(_servers())
    assert 'passive_ports = "45000-45009"' in small
    assert 'timeout_data = "120s"' in small
    assert 'passive_ports = "45000-45099"' in setups.small_range_config(_servers(), ports=100)
    tuned = setups.haproxy_config("127.0.0.13", _servers(), tuned=True, nbthread=2)
    assert "    nbthread 2\n" in tuned
    assert "option splice-request" in tuned
    assert "bind 127.0.0.13:50000-50499" in tuned
    idle = setups.haproxy_config("127.0.0.16", _servers(), tuned=False, maxconn=9600, passive=False)
    assert "maxconn 9600" in idle
    assert "nbthread" not in idle
    assert "ftp_passive" not in idle


def test_quick_sizes_and_skippable_sections() -> None:
    quick = ftp_bench.parse_args(["--quick", "--skip", "workers,small_range,idle"])
    assert quick.skip == {"workers", "small_range", "idle"}
    assert (quick.workers_sessions, quick.workers_runs) == (500, 1)
    assert quick.range_sessions == 200
    assert quick.idle_levels == [2000, 10_000]
    full = ftp_bench.parse_args([])
    assert (full.workers_sessions, full.workers_runs, full.range_sessions) == (2000, 3, 500)
    assert full.idle_levels == [1000, 5000, 10_000]
    assert full.workers_counts == [1, 2, 4]
    assert full.range_size == 1024**2


def test_an_unknown_section_in_skip_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ftp_bench.parse_args(["--skip", "workrs"])
    assert "unknown phases in --skip: workrs" in capsys.readouterr().err


def test_each_new_section_runs_unless_skipped_and_is_timed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def stand_in(name: str) -> Any:
        def run(*_args: object, **_kwargs: object) -> dict[str, Any]:
            ran.append(name)
            return {"ran": name}

        return run

    for name in ("run_workers_phase", "run_small_range_phase", "run_idle_phase"):
        monkeypatch.setattr(sections, name, stand_in(name))
    args = ftp_bench.parse_args(["--skip", "small_range"])
    args.fd_limit = 20_000
    raw: dict[str, Any] = {"meta": {}}
    workspace = cast("ftp_bench.Workspace", SimpleNamespace(roots=[]))
    runner = cast("asyncio.Runner", None)
    ftp_bench.run_new_sections(raw, args, runner, [], workspace, Credentials("u", "p"))
    assert ran == ["run_workers_phase", "run_idle_phase"]
    assert raw["workers"] == {"ran": "run_workers_phase"}
    assert "small_range" not in raw
    assert set(raw["meta"]) == {"workers_seconds", "idle_seconds"}
    out = capsys.readouterr().out
    assert out.startswith("workers: ftplb workers / HAProxy nbthread [1, 2, 4]")
    assert "\nidle: RSS per idle session at [1000, 5000, 10000]" in out
