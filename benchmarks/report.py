"""From the raw samples of one run to figures, ratios, target checks and a Markdown report.

Pure functions over plain dicts (the JSON the benchmark writes), so they can be
tested without running anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from benchmarks import report_sections
from benchmarks.stats import fmt, fmt_ratio, median, ratio

PATH_ORDER = (
    "direct",
    "ftplb",
    "ftplb_limited",
    "haproxy",
    "haproxy_tuned",
    "proftpd",
    "ftplb_tls",
    "haproxy_tls",
)
PATH_LABELS = {
    "direct": "direct (client → vsftpd)",
    "ftplb": "ftplb (mode ftp)",
    "ftplb_limited": "ftplb, rate limits far above the link",
    "haproxy": "HAProxy 2.6 tcp (seed config)",
    "haproxy_tuned": "HAProxy 2.6 tcp + splice",
    "proftpd": "ProFTPD mod_proxy (reverse)",
    "ftplb_tls": "ftplb, explicit FTPS terminated",
    "haproxy_tls": "HAProxy 2.6 tcp + ssl crt (implicit FTPS)",
}
# The TLS paths compare with HAProxy terminating TLS only.
TLS_REFERENCES = ("haproxy_tls",)
TLS_REFERENCE_LABELS = {"haproxy_tls": "x HAProxy TLS"}
REFERENCES = ("direct", "haproxy", "haproxy_tuned")
REFERENCE_LABELS = {
    "direct": "x direct",
    "haproxy": "x HAProxy",
    "haproxy_tuned": "x HAProxy tuned",
}

Better = Literal["higher", "lower"]


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured quantity over the paths: medians, spreads and ratios."""

    key: str
    section: str
    title: str
    unit: str
    better: Better
    digits: int
    values: dict[str, float | None]
    spread: dict[str, tuple[float, float] | None]
    samples: dict[str, int]
    ratios: dict[str, dict[str, float | None]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetCheck:
    """One target of the performance issue against its measurement."""

    target: str
    measured: str
    met: bool | None  # None: could not be measured


def _spread(values: Sequence[float]) -> tuple[float, float] | None:
    return (min(values), max(values)) if values else None


def _figure(
    key: str,
    *,
    section: str,
    title: str,
    unit: str,
    better: Better,
    digits: int,
    per_path: Mapping[str, Sequence[float]],
) -> Figure:
    values = {path: median(list(v)) for path, v in per_path.items()}
    figure = Figure(
        key,
        section,
        title,
        unit,
        better,
        digits,
        values,
        {path: _spread(list(v)) for path, v in per_path.items()},
        {path: len(v) for path, v in per_path.items()},
    )
    references = TLS_REFERENCES if section == "tls" else REFERENCES
    for path, value in values.items():
        figure.ratios[path] = {ref: ratio(value, values.get(ref)) for ref in references}
    return figure


def _collect(
    samples: Mapping[str, Sequence[Mapping[str, Any]]], name: str
) -> dict[str, list[float]]:
    """For each path, the non-missing values of ``name`` over its samples."""
    return {
        path: [float(s[name]) for s in runs if s.get(name) is not None]
        for path, runs in samples.items()
    }


def _without_direct(per_path: dict[str, list[float]]) -> dict[str, list[float]]:
    """The balancer's own cost has no meaning for the direct path."""
    return {path: values for path, values in per_path.items() if path != "direct"}


def build_figures(raw: Mapping[str, Any]) -> list[Figure]:
    """Every figure of a run, from the raw samples the benchmark recorded."""
    figures: list[Figure] = []
    throughput = raw.get("throughput", {})
    size_text = raw.get("params", {}).get("size_text", "")
    ops = [(op, op.upper()) for op in ("retr", "stor") if op in throughput]
    for op, verb in ops:
        figures.append(
            _figure(
                f"{op}_mb_s",
                section="throughput",
                title=f"{verb} {size_text}, MB/s",
                unit="MB/s",
                better="higher",
                digits=0,
                per_path=_collect(throughput[op], "mb_per_s"),
            )
        )
    for op, verb in ops:
        figures.append(
            _figure(
                f"{op}_cpu_s_per_gib",
                section="throughput",
                title=f"balancer CPU s/GiB, {verb}",
                unit="s/GiB",
                better="lower",
                digits=2,
                per_path=_without_direct(_collect(throughput[op], "cpu_s_per_gib")),
            )
        )
    sessions = raw.get("sessions", {})
    workloads = (
        ("list", "login, EPSV, LIST, QUIT"),
        ("retr", "login, EPSV, RETR 1 KiB, QUIT"),
    )
    for action, label in workloads:
        if action not in sessions:
            continue
        runs = sessions[action]
        section = f"sessions_{action}"
        # (name in the samples, title, unit, better, digits, balancer-only)
        specs: list[tuple[str, str, str, Better, int, bool]] = [
            ("sessions_per_s", f"sessions/s ({label})", "1/s", "higher", 0, False),
            ("p50_ms", "latency p50, ms", "ms", "lower", 1, False),
            ("p99_ms", "latency p99, ms", "ms", "lower", 1, False),
            ("cpu_ms_per_session", "balancer CPU ms/session", "ms", "lower", 2, True),
            ("failed", "failed sessions (per run, median)", "", "lower", 0, False),
        ]
        for name, title, unit, better, digits, balancer_only in specs:
            per_path = _collect(runs, name)
            figures.append(
                _figure(
                    f"{action}_{name}",
                    section=section,
                    title=title,
                    unit=unit,
                    better=better,
                    digits=digits,
                    per_path=_without_direct(per_path) if balancer_only else per_path,
                )
            )
    tls = raw.get("tls_throughput", {})
    for op, verb in [(op, op.upper()) for op in ("retr", "stor") if tls.get(op)]:
        figures.append(
            _figure(
                f"tls_{op}_mb_s",
                section="tls",
                title=f"FTPS {verb} {size_text}, MB/s",
                unit="MB/s",
                better="higher",
                digits=0,
                per_path=_collect(tls[op], "mb_per_s"),
            )
        )
        figures.append(
            _figure(
                f"tls_{op}_cpu_s_per_gib",
                section="tls",
                title=f"balancer CPU s/GiB, FTPS {verb}",
                unit="s/GiB",
                better="lower",
                digits=2,
                per_path=_collect(tls[op], "cpu_s_per_gib"),
            )
        )
    rss = raw.get("rss", {})
    levels = sorted({int(level) for r in rss.values() for level in r.get("levels", {})})
    for level in levels:
        per_session = {
            path: [r["levels"][str(level)]["per_session_bytes"] / 1024]
            for path, r in rss.items()
            if str(level) in r.get("levels", {})
        }
        figures.append(
            _figure(
                f"rss_kib_per_session_{level}",
                section="rss",
                title=f"RSS per idle logged-in session at {level:,} sessions, KiB",
                unit="KiB",
                better="lower",
                digits=1,
                per_path=per_session,
            )
        )
    return figures


def _value(figures: Sequence[Figure], key: str, path: str) -> float | None:
    for figure in figures:
        if figure.key == key:
            return figure.values.get(path)
    return None


def _ratio(figures: Sequence[Figure], key: str, path: str, ref: str) -> float | None:
    for figure in figures:
        if figure.key == key:
            return figure.ratios.get(path, {}).get(ref)
    return None


def _at_least(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _at_most(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def check_targets(raw: Mapping[str, Any], figures: Sequence[Figure]) -> list[TargetCheck]:
    """The targets of the performance issue, each with the ratio or value measured."""
    checks: list[TargetCheck] = []

    def ratio_check(text: str, key: str, ref: str, bound: float) -> None:
        value = _ratio(figures, key, "ftplb", ref)
        checks.append(TargetCheck(text, fmt_ratio(value), _at_least(value, bound)))

    ratio_check("RETR ≥ 0.85 x direct", "retr_mb_s", "direct", 0.85)
    ratio_check("RETR ≥ 1.5 x HAProxy (seed config)", "retr_mb_s", "haproxy", 1.5)
    ratio_check("RETR ≥ 0.9 x HAProxy tuned (splice)", "retr_mb_s", "haproxy_tuned", 0.9)
    ratio_check("STOR ≥ 0.9 x direct", "stor_mb_s", "direct", 0.9)
    for op in ("retr", "stor"):
        for ref, label in (
            ("haproxy", "HAProxy (seed config)"),
            ("haproxy_tuned", "HAProxy tuned"),
        ):
            value = _ratio(figures, f"{op}_cpu_s_per_gib", "ftplb", ref)
            checks.append(
                TargetCheck(
                    f"CPU/GiB ({op.upper()}) ≤ {label}'s",
                    f"{fmt_ratio(value)} x",
                    _at_most(value, 1.0),
                )
            )
    cpu = _value(figures, "list_cpu_ms_per_session", "ftplb")
    checks.append(
        TargetCheck(
            "CPU per session (login, EPSV, LIST, QUIT) ≤ 1.0 ms",
            f"{fmt(cpu, 2)} ms",
            _at_most(cpu, 1.0),
        )
    )
    rss = raw.get("rss", {}).get("ftplb", {})
    top = max((int(level) for level in rss.get("levels", {})), default=None)
    if top is None:
        checks.append(TargetCheck("RSS ≤ 16 KiB per idle session at 5,000", "not measured", None))
    else:
        entry = rss["levels"][str(top)]
        per_kib = entry["per_session_bytes"] / 1024
        failed = int(rss.get("failed", 0))
        complete = top >= 5000 and entry["held"] == top and failed == 0
        met = per_kib <= 16 and complete
        checks.append(
            TargetCheck(
                "RSS ≤ 16 KiB per idle logged-in session, 5,000 held, none failing",
                f"{per_kib:.1f} KiB at {entry['held']:,} held of {top:,}, {failed} failed",
                met,
            )
        )
    for key, op in (("retr_mb_s", "RETR"), ("stor_mb_s", "STOR")):
        limited = _ratio(figures, key, "ftplb_limited", "direct")
        unlimited = _ratio(figures, key, "ftplb", "direct")
        # Both as ratios to direct in the same run, so machine noise cancels out.
        share = ratio(limited, unlimited) if limited is not None else None
        checks.append(
            TargetCheck(
                f"{op} with rate limits far above the link ≥ 0.95 x without",
                "not measured" if share is None else f"{fmt_ratio(share)} x",
                _at_least(share, 0.95),
            )
        )
    tls_ratio = _ratio(figures, "tls_retr_mb_s", "ftplb_tls", "haproxy_tls")
    checks.append(
        TargetCheck(
            "TLS-terminated RETR ≥ HAProxy's TLS-terminated throughput",
            "not measured" if tls_ratio is None else f"{fmt_ratio(tls_ratio)} x",
            _at_least(tls_ratio, 1.0),
        )
    )
    return checks


# --------------------------------------------------------------------------- Markdown


def _paths_in(figure: Figure) -> list[str]:
    return [p for p in PATH_ORDER if p in figure.values] + [
        p for p in figure.values if p not in PATH_ORDER
    ]


def _figure_rows(figure: Figure, references: Sequence[str] = REFERENCES) -> list[str]:
    rows = []
    for path in _paths_in(figure):
        value = figure.values[path]
        spread = figure.spread.get(path)
        spread_text = (
            f"{fmt(spread[0], figure.digits)}-{fmt(spread[1], figure.digits)}"
            if spread and figure.samples.get(path, 0) > 1
            else ""
        )
        ratios = figure.ratios.get(path, {})
        cells = [
            figure.title,
            PATH_LABELS.get(path, path),
            fmt(value, figure.digits),
            *(fmt_ratio(ratios.get(ref)) for ref in references),
            str(figure.samples.get(path, 0)),
            spread_text,
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


SECTION_TITLES = {
    "throughput": "Throughput and balancer CPU per GiB",
    "sessions_list": "Short sessions: login, EPSV, LIST, QUIT",
    "sessions_retr": "Short sessions: login, EPSV, RETR of 1 KiB, QUIT",
    "rss": "Memory per idle logged-in session",
    "tls": "FTPS: ftplb terminating explicit FTPS, HAProxy terminating implicit FTPS",
}


def markdown(
    raw: Mapping[str, Any], figures: Sequence[Figure], checks: Sequence[TargetCheck]
) -> str:
    """The whole report as Markdown: parameters, one table per section, TLS, targets."""
    meta = raw.get("meta", {})
    params = raw.get("params", {})
    lines = [
        f"# ftplb benchmark, {meta.get('started', '?')}",
        "",
        f"- machine: {meta.get('cpus', '?')} CPUs, Linux {meta.get('kernel', '?')}, "
        f"Python {meta.get('python', '?')}; load average at start {meta.get('loadavg_start', '?')},"
        f" at end {meta.get('loadavg_end', '?')}",
        f"- ftplb {meta.get('ftplb_commit', '?')}; {meta.get('haproxy', '?')}; "
        f"{meta.get('proftpd', '?')}; {meta.get('vsftpd', '?')}; {meta.get('curl', '?')}",
        f"- servers: two vsftpd, roots on {params.get('roots_on', '?')}; "
        f"transfers: {params.get('size_text', '?')} x {params.get('runs', '?')} interleaved runs "
        f"(curl, EPSV, RETR to /dev/null, STOR from {params.get('upload_from', '?')}); "
        f"sessions: {params.get('sessions', '?')} at concurrency {params.get('concurrency', '?')}"
        f" x {params.get('session_runs', '?')} runs; "
        f"RSS: {params.get('rss_backend', '?')} backends, levels {params.get('rss_levels', '?')}",
        "- each value is the median over its runs; ratios divide medians "
        "(for MB/s and sessions/s higher is better, for CPU, latency and RSS lower is better)",
        "",
    ]
    sections: dict[str, list[Figure]] = {}
    for figure in figures:
        sections.setdefault(figure.section, []).append(figure)
    header = (
        "| figure | path | median | "
        + " | ".join(REFERENCE_LABELS[r] for r in REFERENCES)
        + " | runs | min-max |"
    )
    rule = "|" + "---|" * 8
    tls_header = (
        "| figure | path | median | "
        + " | ".join(TLS_REFERENCE_LABELS[r] for r in TLS_REFERENCES)
        + " | runs | min-max |"
    )
    tls_rule = "|" + "---|" * (5 + len(TLS_REFERENCES))
    for section, members in sections.items():
        is_tls = section == "tls"
        lines += [
            f"## {SECTION_TITLES.get(section, section)}",
            "",
            tls_header if is_tls else header,
            tls_rule if is_tls else rule,
        ]
        for figure in members:
            lines += _figure_rows(figure, TLS_REFERENCES if is_tls else REFERENCES)
        lines.append("")
    lines += report_sections.markdown_lines(raw)
    errors = _error_summary(raw)
    if errors:
        lines += ["## Failures", "", *errors, ""]
    tls = raw.get("tls", {})
    if tls.get("status") == "measured":
        tls_line = (
            f"- FTPS, TLS data connections, vsftpd plain behind both; client: {tls.get('client')}"
        )
    else:
        tls_line = f"- FTPS: {tls.get('status', 'not measured')} ({tls.get('reason', '')})"
    lines += [
        "## TLS",
        "",
        tls_line,
        "",
        "## Targets (issue 3)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for check in checks:
        met = "n/a" if check.met is None else ("yes" if check.met else "**no**")
        lines.append(f"| {check.target} | {check.measured} | {met} |")
    lines.append("")
    return "\n".join(lines)


def _error_summary(raw: Mapping[str, Any]) -> list[str]:
    lines = []
    for action, runs in raw.get("sessions", {}).items():
        for path, samples in runs.items():
            totals: dict[str, int] = {}
            for sample in samples:
                for kind, count in sample.get("errors", {}).items():
                    totals[kind] = totals.get(kind, 0) + int(count)
            if totals:
                text = ", ".join(f"{kind}: {count}" for kind, count in sorted(totals.items()))
                lines.append(f"- sessions {action}, {PATH_LABELS.get(path, path)}: {text}")
    for path, entry in raw.get("rss", {}).items():
        if entry.get("errors"):
            text = ", ".join(f"{k}: {v}" for k, v in sorted(entry["errors"].items()))
            lines.append(f"- RSS hold, {PATH_LABELS.get(path, path)}: {text}")
    for kind in ("transfer_errors", "tls_transfer_errors"):
        for op, runs in raw.get(kind, {}).items():
            for path, messages in runs.items():
                label = PATH_LABELS.get(path, path)
                lines.append(f"- {op.upper()}, {label}: {len(messages)} failed")
    return lines


def figures_json(figures: Sequence[Figure]) -> list[dict[str, Any]]:
    return [asdict(figure) for figure in figures]


def checks_json(checks: Sequence[TargetCheck]) -> list[dict[str, Any]]:
    return [asdict(check) for check in checks]
