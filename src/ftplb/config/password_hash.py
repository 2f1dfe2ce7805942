"""The text form of an admin user's password hash: ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>``.

The string names its own algorithm and cost, so a later change of cost (or
of algorithm) leaves existing hashes readable. Salt and hash are standard
base64 without padding, as in the PHC string format. Only the parsing lives
here, in the core, so that a configuration with a malformed hash is refused
at load time naming its key; hashing and verifying are in
:mod:`ftplb.admin.passwords`.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

__all__ = ["MAX_SCRYPT_MEMORY", "PasswordHash", "PasswordHashError", "parse_password_hash"]

MAX_SCRYPT_MEMORY = 256 * 1024 * 1024
"""The most memory one verification may take (128 * r * 2**ln bytes): a hash
with a larger cost would make each login a denial of service."""

_FORM = re.compile(
    r"\$scrypt\$ln=(?P<ln>\d{1,2}),r=(?P<r>\d{1,3}),p=(?P<p>\d{1,3})"
    r"\$(?P<salt>[A-Za-z0-9+/]+)\$(?P<hash>[A-Za-z0-9+/]+)"
)
_EXAMPLE = "$scrypt$ln=15,r=8,p=1$<salt>$<hash> (ftplb hash-password makes one)"


class PasswordHashError(ValueError):
    """Text that is not a usable password hash; the message says why."""


@dataclass(frozen=True, slots=True)
class PasswordHash:
    """The scrypt parameters, salt and derived key of one password."""

    log2_n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @property
    def n(self) -> int:
        return 1 << self.log2_n

    @property
    def memory(self) -> int:
        """Bytes that scrypt needs for these parameters."""
        return 128 * self.r * self.n

    def __str__(self) -> str:
        return (
            f"$scrypt$ln={self.log2_n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"
        )


def parse_password_hash(text: str) -> PasswordHash:
    """The hash written as ``text``; PasswordHashError saying what is wrong."""
    match = _FORM.fullmatch(text)
    if match is None:
        raise PasswordHashError(f"not a password hash: expected {_EXAMPLE}")
    log2_n, r, p = int(match["ln"]), int(match["r"]), int(match["p"])
    if not 1 <= log2_n <= 24 or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise PasswordHashError("scrypt parameters out of range: ln 1-24, r 1-64, p 1-16")
    salt = _unb64(match["salt"], "salt")
    digest = _unb64(match["hash"], "hash")
    if len(salt) < 8:
        raise PasswordHashError("salt too short: at least 8 bytes")
    if not 16 <= len(digest) <= 64:
        raise PasswordHashError("hash of the wrong size: 16 to 64 bytes")
    parsed = PasswordHash(log2_n, r, p, salt, digest)
    if parsed.memory > MAX_SCRYPT_MEMORY:
        raise PasswordHashError(
            f"scrypt cost too high: 128 * r * 2**ln must be at most {MAX_SCRYPT_MEMORY >> 20} MiB"
        )
    return parsed


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PasswordHashError(f"the {what} is not valid base64") from None
