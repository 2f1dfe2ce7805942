"""Metrics that are not in the shared files: the build, each process's resources, the bans.

``ftplb_build_info`` is 1, with the version and the Python version as labels.
The ``process_*`` metrics of prometheus_client's ``ProcessCollector`` are read
from ``/proc/<pid>`` for every process: the one serving /metrics (the master,
or the lone process: ``worker="main"``) and each worker that reports in the
metrics directory (``worker="0"``, ``"1"`` ...). A process that has just exited
is left out (its ``/proc`` entry is gone). ``ftplb_defender_bans`` is read
from the login defender's shared record when /metrics is served.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import ProcessCollector
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from ftplb.runtime.process_report import ProcessReport, read_reports

__all__ = ["MAIN", "BuildInfo", "DefenderBans", "Processes", "labelled_pids", "start_time"]

MAIN = "main"
"""The ``worker`` label of the process that serves the admin listener."""


class BuildInfo:
    """``ftplb_build_info{version, python} 1``."""

    def __init__(self, version: str) -> None:
        self.version = version

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "ftplb_build_info",
            "The running ftplb: 1, with its version.",
            labels=["version", "python"],
        )
        family.add_metric([self.version, platform.python_version()], 1)
        yield family


class DefenderBans:
    """``ftplb_defender_bans``: the client addresses banned now, read from the shared record."""

    def __init__(self, bans: int) -> None:
        self.bans = bans

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "ftplb_defender_bans",
            "Client addresses the login defender bans now.",
            value=self.bans,
        )


def labelled_pids(reports: Iterable[ProcessReport], own_pid: int) -> dict[int, str]:
    """pid -> worker label: workers by index, this process (and a lone one) as "main"."""
    pids = {own_pid: MAIN}
    for report in reports:
        if report.pid != own_pid:
            pids[report.pid] = MAIN if report.worker is None else str(report.worker)
    return pids


def start_time(pid: int) -> float | None:
    """When process ``pid`` started (Unix time), from ``/proc``; None if unknown."""
    for family in ProcessCollector(pid=_constant(pid), registry=None).collect():
        if family.name == "process_start_time_seconds" and family.samples:
            return float(family.samples[0].value)
    return None


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class Processes:
    """The ``process_*`` metrics of every known process, with a ``worker`` label."""

    def __init__(self, directory: str) -> None:
        self.directory = directory

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        pids = labelled_pids(read_reports(self.directory), os.getpid())
        for pid, worker in sorted(pids.items(), key=lambda item: item[1]):
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():
                into = merged.get(family.name)
                if into is None:
                    into = merged[family.name] = Metric(
                        family.name, family.documentation, family.type
                    )
                for sample in family.samples:
                    into.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        yield from merged.values()
