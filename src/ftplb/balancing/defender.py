"""The login defender's rules: failed logins per client address, bans that double, lists.

A client address that fails ``max_failures`` logins within ``window`` seconds
is banned for ``ban_time``. Each ban of the same address while its previous
one is remembered lasts twice as long as that one, up to ``ban_time_max``. A
ban is remembered for ``ban_time_max`` after it ends: an address that stays
out of trouble that long starts again at ``ban_time``. An address in
``allow`` is never counted nor banned; one in ``deny`` is always refused
(``deny`` wins over ``allow``).

Everything here is pure. Times are wall-clock seconds passed in by the
caller, because a :class:`DefenderRecord` is shared by processes (its JSON
form sits in a file that every worker reads), and monotonic clocks differ
between processes. Addresses are canonical text (:func:`client_address`):
an IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "MAX_BANS",
    "MAX_TRACKED",
    "Ban",
    "DefenderPolicy",
    "DefenderRecord",
    "DefenderRecordError",
    "Network",
    "Verdict",
    "client_address",
    "record_from_json",
    "record_to_json",
]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_TRACKED = 10_000
"""Addresses with failures counted at once; past it the least recent are forgotten."""

MAX_BANS = 10_000
"""Bans kept at once (remembered ones included); past it the first to end go first."""

_MAX_DOUBLINGS = 64
"""Beyond this many doublings any ban is ``ban_time_max``: keeps the power finite."""


def client_address(text: str) -> str:
    """The canonical text of an IP address; IPv4-mapped IPv6 becomes IPv4 (ValueError if bad)."""
    return str(_ip(text))


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class Verdict(StrEnum):
    """What the defender says of an address at connect."""

    ADMIT = "admit"
    BANNED = "banned"
    """Banned for failed logins, until its ban ends or an operator lifts it."""
    DENIED = "denied"
    """In the ``deny`` list: always refused."""


@dataclass(frozen=True, slots=True)
class DefenderPolicy:
    """The ``[defender]`` section's rules (durations in seconds)."""

    max_failures: int
    window: float
    ban_time: float
    ban_time_max: float
    allow: tuple[Network, ...] = ()
    deny: tuple[Network, ...] = ()

    def listed(self, address: str) -> Verdict | None:
        """DENIED for a denied address, ADMIT for an allowed one, None for the others."""
        ip = _ip(address)
        if any(ip in network for network in self.deny):
            return Verdict.DENIED
        if any(ip in network for network in self.allow):
            return Verdict.ADMIT
        return None

    def ban_duration(self, offence: int) -> float:
        """How long the ``offence``-th ban in a row lasts: ban_time, doubled each time, capped."""
        doublings = min(offence - 1, _MAX_DOUBLINGS)
        return min(self.ban_time * float(2**doublings), self.ban_time_max)


@dataclass(frozen=True, slots=True)
class Ban:
    """One address's ban: in force from ``since`` until ``until``, then remembered."""

    address: str
    since: float
    until: float
    offence: int
    """1 for a first ban, 2 for a ban while the first was remembered, and so on."""

    def active(self, now: float) -> bool:
        return now < self.until


class DefenderRecordError(ValueError):
    """A stored record that cannot be read; the message says where."""


@dataclass(slots=True)
class DefenderRecord:
    """Failures and bans by address: the state that every process of a balancer shares."""

    failures: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """The times of each address's failed logins within the window, oldest first."""
    bans: dict[str, Ban] = field(default_factory=dict)
    """Bans in force and bans remembered, by address."""

    def ban_of(self, address: str, now: float) -> Ban | None:
        """The ban in force on ``address`` at ``now``, if any."""
        ban = self.bans.get(address)
        return ban if ban is not None and ban.active(now) else None

    def verdict(self, policy: DefenderPolicy, address: str, now: float) -> Verdict:
        """Whether ``address`` may connect at ``now``."""
        listed = policy.listed(address)
        if listed is not None:
            return listed
        return Verdict.BANNED if self.ban_of(address, now) is not None else Verdict.ADMIT

    def fail(self, policy: DefenderPolicy, address: str, now: float) -> Ban | None:
        """Count a failed login of ``address`` at ``now``; the ban it earns, if it earns one.

        Allowed and denied addresses are not counted, nor an address that is
        banned already (a session it opened before its ban): the ban stands as it is.
        """
        self.forget(policy, now)
        if policy.listed(address) is not None or self.ban_of(address, now) is not None:
            return None
        since = now - policy.window
        recent = (*(t for t in self.failures.get(address, ()) if t > since), now)
        if len(recent) < policy.max_failures:
            self.failures[address] = recent
            self._bound_failures()
            return None
        self.failures.pop(address, None)
        previous = self.bans.get(address)
        offence = previous.offence + 1 if previous is not None else 1
        ban = Ban(address, now, now + policy.ban_duration(offence), offence)
        self.bans[address] = ban
        self._bound_bans()
        return ban

    def lift(self, address: str, now: float) -> Ban | None:
        """End the ban on ``address`` and forget its failures and offences; the ban that was
        in force, or None when there was none (a remembered one is forgotten all the same)."""
        self.failures.pop(address, None)
        ban = self.bans.pop(address, None)
        return ban if ban is not None and ban.active(now) else None

    def active_bans(self, now: float) -> list[Ban]:
        """The bans in force at ``now``, the most recent first."""
        active = [ban for ban in self.bans.values() if ban.active(now)]
        return sorted(active, key=lambda ban: (-ban.since, ban.address))

    def forget(self, policy: DefenderPolicy, now: float) -> None:
        """Drop failures older than the window and bans remembered past ``ban_time_max``."""
        since = now - policy.window
        self.failures = {
            address: times for address, times in self.failures.items() if times[-1] > since
        }
        self.bans = {
            address: ban
            for address, ban in self.bans.items()
            if now < ban.until + policy.ban_time_max
        }

    def _bound_failures(self) -> None:
        excess = len(self.failures) - MAX_TRACKED
        if excess > 0:
            stale = sorted(self.failures, key=lambda address: self.failures[address][-1])
            for address in stale[:excess]:
                del self.failures[address]

    def _bound_bans(self) -> None:
        excess = len(self.bans) - MAX_BANS
        if excess > 0:
            first = sorted(self.bans, key=lambda address: self.bans[address].until)
            for address in first[:excess]:
                del self.bans[address]


# --------------------------------------------------------------------------
# The JSON form of the shared record
# --------------------------------------------------------------------------


def record_to_json(record: DefenderRecord) -> dict[str, object]:
    """{"version": 1, "failures": {address: [times]}, "bans": {address: {...}}}."""
    return {
        "version": 1,
        "failures": {address: list(times) for address, times in sorted(record.failures.items())},
        "bans": {
            address: {"since": ban.since, "until": ban.until, "offence": ban.offence}
            for address, ban in sorted(record.bans.items())
        },
    }


def record_from_json(document: object) -> DefenderRecord:
    """The record in a document :func:`record_to_json` wrote; DefenderRecordError if bad."""
    if not isinstance(document, dict) or document.get("version") != 1:
        raise DefenderRecordError("not a version 1 defender record")
    failures = _object(document, "failures")
    bans = _object(document, "bans")
    record = DefenderRecord()
    for address, times in failures.items():
        where = f"failures.{address}"
        _check_address(where, address)
        if not isinstance(times, list) or not times:
            raise DefenderRecordError(f"{where} must be a list of times")
        record.failures[address] = tuple(_time(where, value) for value in times)
    for address, entry in bans.items():
        where = f"bans.{address}"
        _check_address(where, address)
        if not isinstance(entry, dict):
            raise DefenderRecordError(f"{where} must be an object")
        offence = entry.get("offence")
        if isinstance(offence, bool) or not isinstance(offence, int) or offence < 1:
            raise DefenderRecordError(f"{where}.offence must be a whole number from 1")
        record.bans[address] = Ban(
            address, _time(where, entry.get("since")), _time(where, entry.get("until")), offence
        )
    return record


def _object(document: Mapping[str, object], key: str) -> Mapping[str, object]:
    value = document.get(key)
    if not isinstance(value, dict):
        raise DefenderRecordError(f'"{key}" must be an object')
    return value


def _check_address(where: str, address: str) -> None:
    try:
        canonical = client_address(address) == address
    except ValueError:
        canonical = False
    if not canonical:
        raise DefenderRecordError(f"{where}: not a canonical IP address")


def _time(where: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DefenderRecordError(f"{where}: a time must be a number")
    return float(value)
