"""Who is asking: from a request's ``Authorization`` header to a :class:`Caller`.

Users come from ``[[admin.users]]`` (scrypt hashes) and from the legacy
``user``/``password`` pair (an admin). A listener without any user lets every
request in as an anonymous read-only caller: the pages work, actions do not.

Checking a scrypt hash takes tens of milliseconds and as much memory, on
purpose. It runs in a thread so that sessions never wait for it, a few at a
time so that a flood of bad passwords cannot take every thread, and each
user's successful password is remembered (as a SHA-256, in memory only) so
that the stats page's auto-refresh costs nothing after the first request.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from ftplb.admin.actions import Caller, Role
from ftplb.admin.passwords import verify_password
from ftplb.config.general import Admin
from ftplb.config.password_hash import PasswordHash, parse_password_hash

__all__ = ["ANONYMOUS", "CHALLENGE", "Authenticator", "basic_credentials"]

ANONYMOUS = Caller("", Role.READ_ONLY)
"""Every request of a listener without users."""

CHALLENGE = 'Basic realm="ftplb", charset="UTF-8"'
"""The ``WWW-Authenticate`` value of a 401."""

_CONCURRENT_VERIFICATIONS = 2


@dataclass(frozen=True, slots=True)
class _User:
    role: Role
    hashed: PasswordHash | None
    plain: bytes | None


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a ``Basic`` header (UTF-8); None when there is none or it is bad."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(":")
    if not colon:
        return None
    return user, password


class Authenticator:
    """The users of one ``[admin]`` section, and the passwords already checked."""

    def __init__(self, settings: Admin) -> None:
        self._users: dict[str, _User] = {}
        if settings.user is not None and settings.password is not None:
            self._users[settings.user] = _User(Role.ADMIN, None, settings.password.encode())
        for entry in settings.users:
            hashed = parse_password_hash(entry.password_hash)
            self._users[entry.name] = _User(Role(entry.role), hashed, None)
        # A hash to spend the same time on for an unknown name, so that the
        # answer's delay does not tell which names exist.
        self._decoy = next((user.hashed for user in self._users.values() if user.hashed), None)
        self._verified: set[tuple[str, bytes]] = set()
        self._slots = asyncio.Semaphore(_CONCURRENT_VERIFICATIONS)

    @property
    def open(self) -> bool:
        """True when there are no users: every request is :data:`ANONYMOUS`."""
        return not self._users

    async def caller(self, header: str | None) -> Caller | None:
        """The caller of a request with this ``Authorization`` header; None for a 401."""
        if self.open:
            return ANONYMOUS
        credentials = basic_credentials(header)
        if credentials is None:
            return None
        name, password = credentials
        user = self._users.get(name)
        if user is None:
            if self._decoy is not None:
                await self._verify(password, self._decoy)
            return None
        if user.plain is not None:
            matches = hmac.compare_digest(password.encode(), user.plain)
            return Caller(name, user.role) if matches else None
        assert user.hashed is not None  # one of the two is always set
        remembered = (name, hashlib.sha256(password.encode()).digest())
        if remembered in self._verified:
            return Caller(name, user.role)
        if not await self._verify(password, user.hashed):
            return None
        self._verified.add(remembered)
        return Caller(name, user.role)

    async def _verify(self, password: str, hashed: PasswordHash) -> bool:
        async with self._slots:
            return await asyncio.to_thread(verify_password, password, hashed)
