"""Make the test process record metrics in files, as one process of several.

ftplb never swaps prometheus_client's value class: its command line names the
metrics directory before prometheus_client is first imported, the library's
documented multiprocess mode. The test process imported it long before, and
some tests act as two processes in turn (each with a pid of its own), so here,
and only here, the class is replaced; ``monkeypatch`` puts it back after the test.
"""

from __future__ import annotations

import os

import pytest
from prometheus_client import values

from ftplb.runtime import metrics


def act_as_process(monkeypatch: pytest.MonkeyPatch, directory: str, pid: int | None = None) -> None:
    """Record into ``directory`` from now on, as process ``pid`` (this one's by default)."""
    close_files = getattr(values.ValueClass, "close_all_files", None)
    if close_files is not None:
        close_files()  # the files of the process acted before
    process_id = (lambda: pid) if pid is not None else os.getpid
    monkeypatch.setenv(metrics.ENV_VAR, directory)
    # prometheus_client leaves MultiProcessValue unannotated.
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(process_id))  # type: ignore[no-untyped-call]
    # A new generation, so that recorders made before follow no stale files.
    fresh = metrics._Mode(generation=metrics._mode.generation, process_id=process_id)
    monkeypatch.setattr(metrics, "_mode", fresh)
    metrics.enable(directory)
