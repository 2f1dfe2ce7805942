"""Numbers as people read them: bytes in KiB/MiB, durations as "2h3m", rates.

Shared by the stats page and the terminal views (``ftplb status`` and
``ftplb top``), so that both show a value in the same words.
"""

from __future__ import annotations

import math

__all__ = ["count", "human_bytes", "human_duration", "human_rate", "sessions_rate"]

_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def count(value: int) -> str:
    """An exact count with thousands separators: ``1,234``."""
    return f"{value:,}"


def human_bytes(value: float) -> str:
    """``512 B``, ``1.5 KiB``, ``230 MiB``: three significant figures at most."""
    if not math.isfinite(value) or value < 1024:
        return f"{max(0, int(value)) if math.isfinite(value) else 0} B"
    scaled = float(value)
    for unit in _BYTE_UNITS:
        scaled /= 1024
        if scaled < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{scaled:.1f} {unit}" if scaled < 100 else f"{scaled:.0f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def human_rate(bytes_per_second: float) -> str:
    """A transfer rate: ``1.2 MiB/s``."""
    return f"{human_bytes(bytes_per_second)}/s"


def human_duration(seconds: float | None) -> str:
    """``42s``, ``3m12s``, ``2h3m``, ``4d7h``; ``-`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours}h"


def sessions_rate(per_second: float) -> str:
    """New sessions per second: whole numbers from 10 up, one decimal below."""
    if not math.isfinite(per_second) or per_second <= 0:
        return "0"
    return f"{per_second:.0f}" if per_second >= 10 else f"{per_second:.1f}"
