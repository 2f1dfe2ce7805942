"""``pip install`` of this repository gives a working ftplb, with its example files.

A fresh venv, a plain (non-editable) ``pip install`` of the repository's
source (a copy, since pip builds in the tree it gets) with its
dependencies, as pip is configured on this machine (PyPI or a mirror), then
the installed ``ftplb`` runs from outside the checkout: ``--help``, the
example configuration it installed passes ``ftplb check``, and the systemd
unit is there. Skipped, saying so, only when the install fails because no
package index can be reached.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.support import skip_or_fail

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
INSTALL_TIMEOUT = 900


def _index_reachable() -> bool:
    """True when pip's index (PIP_INDEX_URL, else PyPI) accepts a TCP connect."""
    url = urlparse(os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple"))
    if url.scheme == "file":
        return True
    try:
        with socket.create_connection((url.hostname or "pypi.org", url.port or 443), timeout=10):
            return True
    except OSError:
        return False


def _clean_env() -> dict[str, str]:
    # Nothing of this checkout or of the test's venv may leak into the new one.
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
    return {key: value for key, value in os.environ.items() if key not in drop}


def _source_copy(tmp_path: Path) -> Path:
    """What a source distribution holds, copied: pip builds in the tree it is given."""
    source = tmp_path / "source"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("src", "examples"):
        shutil.copytree(REPO / name, source / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    return source


@pytest.mark.timeout(INSTALL_TIMEOUT + 120)
def test_pip_install_gives_a_working_ftplb_with_its_examples(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = _clean_env()
    subprocess.run(
        [sys.executable, "-m", "venv", str(venv)], check=True, timeout=120, env=env, cwd=tmp_path
    )
    python, ftplb = venv / "bin" / "python", venv / "bin" / "ftplb"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(_source_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    if install.returncode != 0:
        if not _index_reachable():
            skip_or_fail(f"no network: pip cannot reach a package index\n{install.stderr[-2000:]}")
        pytest.fail(f"pip install failed:\n{install.stdout[-2000:]}\n{install.stderr[-4000:]}")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*args], capture_output=True, text=True, timeout=60, check=False, env=env, cwd=tmp_path
        )

    # The installed package, not the checkout.
    where = run(str(python), "-c", "import ftplb; print(ftplb.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout

    helped = run(str(ftplb), "--help")
    assert helped.returncode == 0, helped.stderr
    assert "run" in helped.stdout and "check" in helped.stdout

    located = run(str(ftplb), "example", "config", "--path")
    assert located.returncode == 0, located.stderr
    config = Path(located.stdout.strip())
    assert config == venv / "share" / "ftplb" / "ftplb.toml"
    assert config.read_text() == (REPO / "examples" / "ftplb.toml").read_text()
    checked = run(str(ftplb), "check", "-c", str(config))
    assert checked.returncode == 0, checked.stderr
    assert "configuration is valid" in checked.stdout

    unit = run(str(ftplb), "example", "systemd")
    assert unit.returncode == 0, unit.stderr
    assert unit.stdout == (REPO / "examples" / "ftplb.service").read_text()

    # The runtime imports work: the dependencies came with it.
    imported = run(str(python), "-c", "import ftplb.app, ftplb.supervisor, ftplb.demo")
    assert imported.returncode == 0, imported.stderr
