"""Each process's report in the metrics directory: who it is, and its running transfers.

Counters and gauges sum well in prometheus_client's files, but a list of
transfers (with paths and users) does not fit them. So every process that
records metrics also writes ``process_<pid>.json`` there, at least once a
second, replacing it atomically (``os.replace``): a reader never sees half a
file. The process removes it when it stops, and the supervisor when a worker
has died (:func:`remove_report`). The admin server reads them all: transfers
in progress for the stats, and which pid is which worker for process metrics.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ProcessReport", "read_reports", "remove_report", "report_path", "write_report"]

_PREFIX = "process_"


@dataclass(frozen=True, slots=True)
class ProcessReport:
    pid: int
    worker: int | None
    """The worker index; None for a lone process."""
    started: float
    """Wall-clock start of the process (seconds since the epoch)."""
    transfers: tuple[dict[str, Any], ...] = ()
    """Running transfers, as the fields of ``ftplb.admin.snapshot.TransferInProgress``."""
    checks: tuple[dict[str, Any], ...] = ()
    """The last health check of each server: backend, server, ok, layer, detail."""


def report_path(directory: str, pid: int) -> Path:
    return Path(directory) / f"{_PREFIX}{pid}.json"


def write_report(directory: str, report: ProcessReport) -> None:
    """Replace this process's report (an OSError, say a full disk, is the caller's)."""
    path = report_path(directory, report.pid)
    temporary = path.with_suffix(".tmp")
    document = {
        "pid": report.pid,
        "worker": report.worker,
        "started": report.started,
        "transfers": list(report.transfers),
        "checks": list(report.checks),
    }
    temporary.write_text(json.dumps(document), encoding="utf-8")
    os.replace(temporary, path)


def remove_report(directory: str, pid: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        report_path(directory, pid).unlink()


def read_reports(directory: str) -> list[ProcessReport]:
    """Every readable report in ``directory``; one being replaced or malformed is skipped."""
    reports: list[ProcessReport] = []
    for path in sorted(Path(directory).glob(f"{_PREFIX}*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            worker = document["worker"]
            reports.append(
                ProcessReport(
                    pid=int(document["pid"]),
                    worker=None if worker is None else int(worker),
                    started=float(document["started"]),
                    transfers=tuple(t for t in document["transfers"] if isinstance(t, dict)),
                    checks=tuple(c for c in document.get("checks", ()) if isinstance(c, dict)),
                )
            )
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return reports
