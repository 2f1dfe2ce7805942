"""``ftplb status``: one reading of ``/stats.json``, printed as the page's tables."""

from __future__ import annotations

import sys

from rich.console import Console

from ftplb.admin_client import AdminClientError
from ftplb.console.connect import ConnectError, StatsSource, open_source
from ftplb.console.reading import StatsFormatError
from ftplb.console.view import snapshot_view

__all__ = ["connect_or_report", "run_status"]


def connect_or_report(
    command: str, config_path: str | None, url: str | None, user: str | None
) -> StatsSource | None:
    """The source, or None once the reason is printed on stderr."""
    try:
        return open_source(config_path, url, user)
    except (ConnectError, AdminClientError) as error:
        print(f"ftplb {command}: {error}", file=sys.stderr)
        return None


def run_status(config_path: str | None, url: str | None, user: str | None) -> int:
    """Print the tables once: 0, or 1 with one line on stderr when they cannot be read."""
    source = connect_or_report("status", config_path, url, user)
    if source is None:
        return 1
    try:
        snapshot = source.read()
    except (AdminClientError, StatsFormatError) as error:
        print(f"ftplb status: {error}", file=sys.stderr)
        return 1
    console = Console()
    console.print(snapshot_view(snapshot, width=console.width))
    return 0
