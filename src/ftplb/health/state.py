"""The rise/fall machine that turns single check results into an UP/DOWN verdict.

One failed check is not enough to take a server out, and one success is not
enough to bring it back: a flapping server would otherwise bounce sessions
around. As in HAProxy, ``fall`` consecutive failures take an UP server down
and ``rise`` consecutive successes bring a DOWN server up.
"""

from __future__ import annotations


class HealthState:
    """The health verdict of one server, fed one check result at a time."""

    __slots__ = (
        "consecutive_failed",
        "consecutive_ok",
        "fall",
        "last_detail",
        "last_ok",
        "rise",
        "up",
    )

    def __init__(self, rise: int, fall: int, up: bool = True) -> None:
        if rise < 1 or fall < 1:
            raise ValueError("rise and fall must both be at least 1")
        self.rise = rise
        self.fall = fall
        self.up = up
        self.last_ok: bool | None = None  # None until the first check
        self.last_detail = ""
        self.consecutive_ok = 0
        self.consecutive_failed = 0

    def record(self, ok: bool, detail: str = "") -> bool:
        """Account for one check result; True when ``up`` flipped."""
        self.last_ok = ok
        self.last_detail = detail
        if ok:
            self.consecutive_ok += 1
            self.consecutive_failed = 0
            if not self.up and self.consecutive_ok >= self.rise:
                self.up = True
                return True
        else:
            self.consecutive_failed += 1
            self.consecutive_ok = 0
            if self.up and self.consecutive_failed >= self.fall:
                self.up = False
                return True
        return False

    def __repr__(self) -> str:
        verdict = "UP" if self.up else "DOWN"
        return (
            f"HealthState({verdict}, rise={self.rise}, fall={self.fall}, "
            f"ok={self.consecutive_ok}, failed={self.consecutive_failed})"
        )
