"""Hashing and checking admin passwords with scrypt (hashlib: no extra dependency).

scrypt costs time and memory on purpose, so that a stolen configuration does
not give the passwords away cheaply. The cost is part of the stored string
(:mod:`ftplb.config.password_hash`): raising it later keeps old hashes valid.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from ftplb.config.password_hash import PasswordHash, parse_password_hash

__all__ = ["DEFAULT_LOG2_N", "DEFAULT_P", "DEFAULT_R", "hash_password", "verify_password"]

DEFAULT_LOG2_N = 15
"""N = 32768: about 50 ms and 32 MiB per verification on a current server."""
DEFAULT_R = 8
DEFAULT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32


def hash_password(
    password: str, *, log2_n: int = DEFAULT_LOG2_N, r: int = DEFAULT_R, p: int = DEFAULT_P
) -> str:
    """A new, salted hash of ``password`` in its text form, for ``password_hash``."""
    salt = os.urandom(_SALT_BYTES)
    unfinished = PasswordHash(log2_n, r, p, salt, b"")
    return str(PasswordHash(log2_n, r, p, salt, _derive(password, unfinished, _HASH_BYTES)))


def verify_password(password: str, stored: str | PasswordHash) -> bool:
    """True when ``password`` is the one ``stored`` was made from (slow: run it in a thread)."""
    known = parse_password_hash(stored) if isinstance(stored, str) else stored
    digest = _derive(password, known, len(known.digest))
    return hmac.compare_digest(digest, known.digest)


def _derive(password: str, parameters: PasswordHash, size: int) -> bytes:
    """scrypt of ``password`` with the salt and cost of ``parameters``."""
    # OpenSSL refuses anything above 32 MiB by default, which N = 2**15, r = 8 just exceeds.
    maxmem = 2 * parameters.memory + (1 << 20)
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=parameters.salt,
        n=parameters.n,
        r=parameters.r,
        p=parameters.p,
        maxmem=maxmem,
        dklen=size,
    )
