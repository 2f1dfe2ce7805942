"""The one check of the configuration that needs OpenSSL: is a cipher string usable?

OpenSSL is the only judge of its own cipher-string language (aliases such as
``HIGH`` or ``ECDHE+AESGCM``, exclusions, ``@SECLEVEL``), so the string is
handed to an :class:`ssl.SSLContext` that is thrown away at once. That opens
no connection and drives no event loop: the core stays sans-IO, and a bad
string is reported at load time with its file, line and key like any other
value.
"""

from __future__ import annotations

import ssl  # noqa: TID251 - only to parse a cipher string; see the module docstring

__all__ = ["cipher_string_problem"]


def cipher_string_problem(ciphers: str) -> str | None:
    """Why OpenSSL refuses ``ciphers`` for TLS 1.2 and below; None when it selects some."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.set_ciphers(ciphers)
    except ssl.SSLError:
        # OpenSSL says only "No cipher can be selected." whatever is wrong.
        return "OpenSSL selects no cipher from it (a misspelt name or alias?)"
    # set_ciphers also counts the TLS 1.3 suites, which it does not change:
    # a string that selects no TLS 1.2 cipher passes it without a word.
    if not any(cipher["protocol"] != "TLSv1.3" for cipher in context.get_ciphers()):
        return "it selects no cipher for TLS 1.2"
    return None
