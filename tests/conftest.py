"""One temporary area for the whole test run, removed when the run ends.

The tests, the FTP servers they start and ftplb itself all create files through
``tempfile`` (server roots, uploads, configs, logs, metrics).  A full run moves
several GB, so anything left behind would fill a machine's disk within a few
runs.  Pointing ``tempfile`` (and ``TMPDIR``, for child processes) at one
directory means that even a fixture that forgets to clean up leaks nothing past
the run.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

_RUN_AREA = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    area = tempfile.mkdtemp(prefix="ftplb-tests-")
    # vsftpd and ProFTPD reach server roots as an unprivileged account.
    os.chmod(area, 0o755)
    config.stash[_RUN_AREA] = area
    os.environ["TMPDIR"] = area
    tempfile.tempdir = area


def pytest_unconfigure(config: pytest.Config) -> None:
    area = config.stash.get(_RUN_AREA, None)
    if area is not None:
        tempfile.tempdir = None
        shutil.rmtree(area, ignore_errors=True)
