"""PNG bar charts of one run (matplotlib, no display needed): the throughput ratios,
and (OUT-workers.png) sessions/s and CPU per session by worker count.

python -m benchmarks.plot RESULTS.json [OUT.png]
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.report import PATH_LABELS, PATH_ORDER

# Each panel: the reference the ratios divide by, and ftplb's targets against it.
PANELS = (
    ("direct", "x direct (vsftpd without a balancer)", {"retr_mb_s": 0.85, "stor_mb_s": 0.9}),
    ("haproxy", "x HAProxy 2.6 tcp, seed config", {"retr_mb_s": 1.5}),
    ("haproxy_tuned", "x HAProxy 2.6 tcp + splice", {"retr_mb_s": 0.9}),
)
OPS = (("retr_mb_s", "RETR"), ("stor_mb_s", "STOR"))
COLORS = {
    "direct": "#9e9e9e",
    "ftplb": "#1f77b4",
    "ftplb_limited": "#9467bd",
    "haproxy": "#ff7f0e",
    "haproxy_tuned": "#d62728",
    "proftpd": "#2ca02c",
}


def _ratios(figures: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, float | None]]:
    for figure in figures:
        if figure["key"] == key:
            ratios: dict[str, dict[str, float | None]] = figure["ratios"]
            return ratios
    return {}


def plot(results: Mapping[str, Any], out: Path) -> Path:
    """Write the chart for ``results`` (the benchmark's JSON) to ``out``."""
    import matplotlib  # noqa: PLC0415 - only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figures = results.get("figures", [])
    fig, axes = plt.subplots(1, len(PANELS), figsize=(15, 4.8), sharey=False)
    paths = [p for p in PATH_ORDER if any(p in _ratios(figures, k) for k, _ in OPS)]
    width = 0.8 / max(1, len(paths))
    for ax, (ref, title, targets) in zip(axes, PANELS, strict=True):
        for index, path in enumerate(paths):
            heights = []
            for key, _ in OPS:
                value = _ratios(figures, key).get(path, {}).get(ref)
                heights.append(value if value is not None else 0.0)
            xs = [op + (index - (len(paths) - 1) / 2) * width for op in range(len(OPS))]
            bars = ax.bar(
                xs, heights, width, label=PATH_LABELS.get(path, path), color=COLORS.get(path)
            )
            ax.bar_label(bars, fmt="%.2f", fontsize=7, padding=1)
        for op, (key, _) in enumerate(OPS):
            if key in targets:
                ax.hlines(
                    targets[key], op - 0.45, op + 0.45, colors="black", linestyles="dashed", lw=1
                )
                ax.annotate(
                    f"ftplb target {targets[key]}",
                    (op - 0.45, targets[key]),
                    xytext=(0, -9),
                    textcoords="offset points",
                    fontsize=7,
                    ha="left",
                    bbox={"boxstyle": "square,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8},
                )
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_xticks(range(len(OPS)), [label for _, label in OPS])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("throughput ratio (higher is better)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(paths), fontsize=8, frameon=False)
    meta = results.get("meta", {})
    params = results.get("params", {})
    fig.suptitle(
        f"ftplb throughput ratios: {params.get('size_text', '?')} over loopback, "
        f"median of {params.get('runs', '?')} interleaved runs "
        f"({meta.get('cpus', '?')} CPUs, {meta.get('started', '?')})",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_workers(results: Mapping[str, Any], out: Path) -> Path:
    """Sessions/s and CPU ms per session against the worker (thread) count, both balancers."""
    import matplotlib  # noqa: PLC0415 - only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    section = results.get("workers", {})
    summary: Mapping[str, Mapping[str, float | None]] = section.get("summary", {})
    counts = sorted(int(c) for c in summary)
    panels = (
        ("sessions_per_s", "sessions/s (higher is better)"),
        ("cpu_ms_per_session", "CPU ms per session (lower is better)"),
    )
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 4.2))
    for ax, (name, title) in zip(axes, panels, strict=True):
        for key, label in (("ftplb", "ftplb, workers = N"), ("haproxy", "HAProxy, nbthread N")):
            heights = [summary[str(c)].get(f"{key}_{name}") or 0.0 for c in counts]
            offset = -0.2 if key == "ftplb" else 0.2
            bars = ax.bar(
                [i + offset for i in range(len(counts))],
                heights,
                0.4,
                label=label,
                color=COLORS.get(key),
            )
            ax.bar_label(bars, fmt="%.2f" if "cpu" in name else "%.0f", fontsize=7, padding=1)
        ax.set_xticks(range(len(counts)), [f"N = {c}" for c in counts])
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"login, EPSV, LIST, QUIT: nproc = {section.get('nproc', '?')}, "
        f"{section.get('sessions', '?')} sessions x {section.get('runs', '?')} runs",
        fontsize=11,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(args[0])
    out = Path(args[1]) if len(args) > 1 else source.with_suffix(".png")
    results = json.loads(source.read_text())
    if "throughput" in results:
        plot(results, out)
        print(out)
    if "workers" in results:
        workers_out = out.with_name(out.stem + "-workers.png")
        plot_workers(results, workers_out)
        print(workers_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
