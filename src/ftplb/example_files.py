"""The example files that ship with ftplb: a configuration and a systemd unit.

pip installs them under ``<prefix>/share/ftplb`` (``[tool.setuptools.data-files]``);
in a source checkout they are in ``examples/``. ``ftplb example config|systemd``
prints them.
"""

from __future__ import annotations

import site
import sysconfig
from pathlib import Path

__all__ = ["EXAMPLES", "example_path"]

EXAMPLES = {"config": "ftplb.toml", "systemd": "ftplb.service"}
"""What ``ftplb example KIND`` prints: kind -> file name."""


def _places() -> list[Path]:
    places = [Path(sysconfig.get_path("data")) / "share" / "ftplb"]
    if site.USER_BASE:  # pip install --user
        places.append(Path(site.USER_BASE) / "share" / "ftplb")
    places.append(Path(__file__).resolve().parents[2] / "examples")  # a source checkout
    return places


def example_path(kind: str) -> Path | None:
    """Where the example file of ``kind`` is, or None if it is not installed."""
    name = EXAMPLES[kind]
    for place in _places():
        if (place / name).is_file():
            return place / name
    return None
