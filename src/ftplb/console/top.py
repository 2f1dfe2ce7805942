"""``ftplb top``: the tables, read again every ``--interval``, until q or Ctrl-C.

The screen is redrawn in place (rich's ``Live`` on the alternate screen). On
a terminal, keys are read without waiting for Enter (cbreak mode; Ctrl-C
still interrupts), and the terminal is put back as it was on the way out.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ftplb.admin.snapshot import Snapshot
from ftplb.admin_client import AdminClientError
from ftplb.console.connect import StatsSource
from ftplb.console.reading import StatsFormatError
from ftplb.console.status import connect_or_report
from ftplb.console.view import snapshot_view

__all__ = ["run_top"]

_QUIT_KEYS = {"q", "Q"}


@contextlib.contextmanager
def _keys() -> Iterator[int | None]:
    """The terminal's fd in cbreak mode, or None when stdin is not a terminal."""
    fd = sys.stdin.fileno() if sys.stdin is not None and sys.stdin.isatty() else None
    if fd is None:
        yield None
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_quit(fd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds``; True when q was pressed."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(left)
            return False
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            key = os.read(fd, 32).decode(errors="replace")
            if not key:  # end of input: nothing more will come
                fd = None
            elif _QUIT_KEYS & set(key):
                return True
    return False


def _footer(source: StatsSource, interval: float) -> str:
    return f"\n{source.url} · every {interval:g} s · q or Ctrl-C to quit"


def run_top(config_path: str | None, url: str | None, user: str | None, interval: float) -> int:
    """Show the tables live: 0 on q or Ctrl-C; 1 when the first reading fails."""
    if not interval > 0:
        print("ftplb top: --interval must be above 0", file=sys.stderr)
        return 2
    source = connect_or_report("top", config_path, url, user)
    if source is None:
        return 1
    try:
        snapshot: Snapshot = source.read()
    except (AdminClientError, StatsFormatError) as error:
        print(f"ftplb top: {error}", file=sys.stderr)
        return 1
    console = Console()
    try:
        with (
            _keys() as fd,
            Live(console=console, screen=True, auto_refresh=False) as live,
        ):
            problem = ""
            while True:
                live.update(
                    _screen(snapshot, problem, _footer(source, interval), console.width),
                    refresh=True,
                )
                if _wait_for_quit(fd, interval):
                    return 0
                try:
                    snapshot, problem = source.read(), ""
                except (AdminClientError, StatsFormatError) as error:
                    # Keep the last reading on screen, and say why it is old.
                    problem = f"{error} (showing the reading of {snapshot.generated})"
    except KeyboardInterrupt:
        return 0


def _screen(snapshot: Snapshot, problem: str, footer: str, width: int) -> RenderableType:
    return Group(snapshot_view(snapshot, problem, width), Text(footer, style="dim"))
