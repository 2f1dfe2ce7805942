"""Summaries and Markdown tables of the workers, small-range and idle sections.

Pure functions over the plain dicts the sections write into the JSON, so the
arithmetic (medians, ratios, per-session memory) is tested without running
anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.stats import fmt, fmt_ratio, median, ratio

KiB = 1024
MiB = 1024**2


def size_label(size: int) -> str:
    """``size`` bytes as "1 MiB", "256 KiB" when whole, else in bytes."""
    for unit, name in ((MiB, "MiB"), (KiB, "KiB")):
        if size >= unit and size % unit == 0:
            return f"{size // unit} {name}"
    return f"{size} B"


def _median_of(samples: Sequence[Mapping[str, Any]], name: str) -> float | None:
    return median([float(s[name]) for s in samples if s.get(name) is not None])


def workers_summary(
    samples: Mapping[str, Mapping[str, Sequence[Mapping[str, Any]]]],
) -> dict[str, dict[str, float | int | None]]:
    """Per count: both balancers' median sessions/s and CPU ms per session, the ratios
    ftplb/HAProxy, and ftplb's CPU per session at N workers over that at 1 worker."""
    ftplb = samples.get("ftplb", {})
    haproxy = samples.get("haproxy", {})
    counts = sorted({int(c) for c in (*ftplb, *haproxy)})
    ftplb_cpu_at_1 = _median_of(ftplb.get("1", []), "cpu_ms_per_session")
    summary: dict[str, dict[str, float | int | None]] = {}
    for count in counts:
        ours = ftplb.get(str(count), [])
        theirs = haproxy.get(str(count), [])
        rate = _median_of(ours, "sessions_per_s")
        ref_rate = _median_of(theirs, "sessions_per_s")
        cpu = _median_of(ours, "cpu_ms_per_session")
        ref_cpu = _median_of(theirs, "cpu_ms_per_session")
        summary[str(count)] = {
            "ftplb_sessions_per_s": rate,
            "haproxy_sessions_per_s": ref_rate,
            "sessions_per_s_ratio": ratio(rate, ref_rate),
            "ftplb_cpu_ms_per_session": cpu,
            "haproxy_cpu_ms_per_session": ref_cpu,
            "cpu_ratio": ratio(cpu, ref_cpu),
            "ftplb_cpu_vs_1_worker": ratio(cpu, ftplb_cpu_at_1),
            "ftplb_failed": sum(int(s.get("failed", 0)) for s in ours),
            "haproxy_failed": sum(int(s.get("failed", 0)) for s in theirs),
            "runs": len(ours),
        }
    return summary


def per_session_kib(entry: Mapping[str, Any], level: int) -> float | None:
    """RSS per held session at ``level`` in KiB, or None when the level was not held."""
    at = entry.get("levels", {}).get(str(level))
    return None if at is None else float(at["per_session_bytes"]) / KiB


def idle_summary(paths: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per level: each path's KiB per session and sessions held, and ftplb/HAProxy.

    Where HAProxy did not run a level (one process cannot hold it), the ratio
    divides by HAProxy's figure at the highest level it held below, named in
    ``haproxy_reference_level``.
    """
    levels = sorted({int(level) for entry in paths.values() for level in entry.get("levels", {})})
    haproxy = paths.get("haproxy", {})
    haproxy_levels = sorted(int(level) for level in haproxy.get("levels", {}))
    summary: dict[str, dict[str, Any]] = {}
    for level in levels:
        row: dict[str, Any] = {}
        for key, entry in paths.items():
            row[f"{key}_kib_per_session"] = per_session_kib(entry, level)
            at = entry.get("levels", {}).get(str(level))
            row[f"{key}_held"] = None if at is None else int(at["held"])
        below = [lv for lv in haproxy_levels if lv <= level]
        reference = below[-1] if below else None
        row["haproxy_reference_level"] = reference
        reference_kib = None if reference is None else per_session_kib(haproxy, reference)
        row["ratio"] = ratio(row.get("ftplb_kib_per_session"), reference_kib)
        summary[str(level)] = row
    return summary


# --------------------------------------------------------------------------- Markdown


def _workers_lines(section: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Workers: ftplb `workers = N` against HAProxy `nbthread N`",
        "",
        f"- {section.get('workload', '?')}; {section.get('sessions', '?')} sessions at "
        f"concurrency {section.get('concurrency', '?')} x {section.get('runs', '?')} runs per "
        f"count; HAProxy {section.get('haproxy_config', '?')}",
        f"- nproc = {section.get('nproc', '?')}: counts run {section.get('counts', [])}"
        + (
            f", left out {section['skipped_counts']} (more than the cores)"
            if section.get("skipped_counts")
            else ""
        ),
        "- CPU per session: user + system time of all the balancer's processes "
        "(ftplb: master and workers; HAProxy: its threads), over the sessions completed",
        "",
        "| N | ftplb sessions/s | HAProxy sessions/s | x HAProxy | ftplb CPU ms/session "
        "| HAProxy CPU ms/session | x HAProxy | ftplb CPU N / 1 worker | failed (ftplb, HAProxy) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for count, row in section.get("summary", {}).items():
        cells = [
            count,
            fmt(row["ftplb_sessions_per_s"]),
            fmt(row["haproxy_sessions_per_s"]),
            fmt_ratio(row["sessions_per_s_ratio"]),
            fmt(row["ftplb_cpu_ms_per_session"], 2),
            fmt(row["haproxy_cpu_ms_per_session"], 2),
            fmt_ratio(row["cpu_ratio"]),
            fmt_ratio(row["ftplb_cpu_vs_1_worker"]),
            f"{row['ftplb_failed']}, {row['haproxy_failed']}",
        ]
        lines.append("| " + " | ".join(str(cell) for cell in cells) + " |")
    return [*lines, ""]


def _small_range_lines(section: Mapping[str, Any]) -> list[str]:
    size = int(section.get("size", 0))
    lines = [
        "## Small passive range: transfers pending at once on 10 ports",
        "",
        f"- ftplb, `passive_ports` of {section.get('passive_ports', '?')} ports; "
        f"{section.get('sessions', '?')} sessions ({section.get('retr', '?')} RETR, "
        f"{section.get('stor', '?')} STOR, {size_label(size)} each, sha256 of every file checked) "
        f"from {section.get('sources', '?')}, one address each",
        "- every session logs in and gets its EPSV reply before any connects (a barrier)",
        "",
        "| sessions | passive replies | completed | failed | logins + EPSV, s | transfers, s "
        "| MB/s |",
        "|---|---|---|---|---|---|---|",
        f"| {section.get('sessions', '-')} | {section.get('passive_replies', '-')} "
        f"| {section.get('completed', '-')} | {section.get('failed', '-')} "
        f"| {fmt(section.get('login_seconds'), 2)} | {fmt(section.get('transfer_seconds'), 2)} "
        f"| {fmt(section.get('mb_per_s'))} |",
        "",
    ]
    errors = section.get("errors", {})
    if errors:
        lines.append("Failures: " + ", ".join(f"{k}: {v}" for k, v in sorted(errors.items())) + ".")
        lines.append("")
    return lines


def _idle_ratio_text(row: Mapping[str, Any], level: int) -> str:
    text = fmt_ratio(row.get("ratio"))
    reference = row.get("haproxy_reference_level")
    if row.get("ratio") is not None and reference is not None and reference != level:
        text += f" (HAProxy at {reference:,})"
    return text


def _idle_lines(section: Mapping[str, Any]) -> list[str]:
    paths = section.get("paths", {})
    workers = section.get("ftplb_workers", "?")
    lines = [
        "## Idle sessions: RSS per idle logged-in session",
        "",
        f"- backends: {section.get('backend', '?')}; load generator in "
        f"{section.get('load_processes', '?')} processes; fd hard limit "
        f"{section.get('fd_limit', '?')} per process",
        f"- ftplb with `workers = {workers}` (each process holds 2 fds per session, so one "
        "process cannot hold 10,000 under the fd limit): RSS summed over master and workers; "
        "HAProxy (seed config, no passive ranges) is one process: it runs the levels it can "
        "hold under the same limit, and at a level it cannot, the ratio divides by its figure "
        "at the most it can hold",
        "",
        "| sessions | ftplb KiB/session | held | HAProxy KiB/session | held | x HAProxy |",
        "|---|---|---|---|---|---|",
    ]
    for level, row in section.get("summary", {}).items():
        lines.append(
            f"| {int(level):,} | {fmt(row.get('ftplb_kib_per_session'), 1)} "
            f"| {row.get('ftplb_held') if row.get('ftplb_held') is not None else '-'} "
            f"| {fmt(row.get('haproxy_kib_per_session'), 1)} "
            f"| {row.get('haproxy_held') if row.get('haproxy_held') is not None else '-'} "
            f"| {_idle_ratio_text(row, int(level))} |"
        )
    lines.append("")
    for key, entry in paths.items():
        notes = []
        if entry.get("skipped_levels"):
            notes.append(f"levels {entry['skipped_levels']} not run (fd limit)")
        notes.append(f"{entry.get('failed', 0)} failed")
        if entry.get("errors"):
            notes.append(", ".join(f"{k}: {v}" for k, v in sorted(entry["errors"].items())))
        lines.append(f"- {key}: " + "; ".join(notes))
    lines += _process_lines(paths.get("ftplb", {}))
    return [*lines, ""]


def _process_lines(entry: Mapping[str, Any]) -> list[str]:
    """How ftplb's processes shared the highest level: RSS and open files of each."""
    levels = entry.get("levels", {})
    if not levels:
        return []
    top = max(levels, key=int)
    processes = levels[top].get("processes", [])
    if not processes:
        return []
    parts = [
        f"{'master' if i == 0 else f'worker {i - 1}'} {p['rss_bytes'] / MiB:.0f} MiB, "
        f"{p['fds']:,} fds"
        for i, p in enumerate(processes)
    ]
    return [f"- ftplb's processes at {int(top):,}: " + "; ".join(parts)]


def markdown_lines(raw: Mapping[str, Any]) -> list[str]:
    """The tables of whichever of the three sections the run has."""
    lines: list[str] = []
    if "workers" in raw:
        lines += _workers_lines(raw["workers"])
    if "small_range" in raw:
        lines += _small_range_lines(raw["small_range"])
    if "idle" in raw:
        lines += _idle_lines(raw["idle"])
    return lines
