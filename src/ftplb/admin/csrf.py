"""Defence against cross-site request forgery for the stats page's buttons.

A browser that holds the admin listener's basic auth credentials sends them
with any request to it, including a form that another site submits. Two
independent checks stop such a request:

- a synchronizer token: the page embeds a per-user token that another site
  cannot read, and an action must carry it back;
- the request's origin: a browser names the page that sent a POST in
  ``Origin``, and ``Sec-Fetch-Site`` says whether it was another site.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["CsrfTokens", "cross_origin_reason"]


class CsrfTokens:
    """Tokens bound to a user name, valid while this process runs.

    A token is the HMAC-SHA256 of the user name under a random secret of this
    process: nothing to store, the same token for every page a user loads,
    and a token of one user is worthless for another.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret if secret is not None else secrets.token_bytes(32)

    def token(self, user: str) -> str:
        """The token ``user`` gets on the page."""
        return hmac.new(self._secret, user.encode("utf-8"), hashlib.sha256).hexdigest()

    def valid(self, user: str, given: str | None) -> bool:
        """True when ``given`` is ``user``'s token (compared in constant time)."""
        if not given:
            return False
        expected = self.token(user).encode("ascii")
        return hmac.compare_digest(expected, given.encode("utf-8", "replace"))


def cross_origin_reason(origin: str | None, fetch_site: str | None, own_origin: str) -> str | None:
    """Why a request is refused as coming from another site; None when it is not.

    ``origin`` and ``fetch_site`` are the request's ``Origin`` and
    ``Sec-Fetch-Site`` headers; ``own_origin`` is the origin the request was
    sent to (scheme and ``Host``). Clients that send neither header (curl, a
    script) are left to the token.
    """
    if fetch_site is not None and fetch_site.strip().lower() == "cross-site":
        return "Sec-Fetch-Site: cross-site"
    if origin is not None and origin.strip().lower() != own_origin.lower():
        return f"Origin {origin.strip()!r} is not {own_origin!r}"
    return None
