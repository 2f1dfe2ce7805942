"""The directory of this run's metric files, chosen before prometheus_client is imported.

prometheus_client decides how it stores every value once, when it is first
imported: in memory, or in files under ``PROMETHEUS_MULTIPROC_DIR`` (its
documented multiprocess mode). So the command line creates the directory and
names it in the environment before it imports anything that imports
prometheus_client, and this module imports nothing of it. Worker processes
inherit the variable from their master.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["ENV_VAR", "metrics_home"]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"


@contextlib.contextmanager
def metrics_home(wanted: bool) -> Iterator[str | None]:
    """A fresh directory for this run's metric files (None if not ``wanted``); removed at the end.

    Raises RuntimeError when prometheus_client was imported already: its
    values would then stay in memory, where no admin listener sees them.
    """
    if not wanted:
        yield None
        return
    if "prometheus_client" in sys.modules and os.environ.get(ENV_VAR) is None:
        raise RuntimeError("the metrics directory must be chosen before prometheus_client loads")
    directory = tempfile.mkdtemp(prefix="ftplb-metrics-")
    os.environ[ENV_VAR] = directory
    try:
        yield directory
    finally:
        os.environ.pop(ENV_VAR, None)
        shutil.rmtree(directory, ignore_errors=True)
