"""FEAT replies: drop what the balancer cannot proxy, add what it always offers."""

from __future__ import annotations

from ftplb.proto.replies import Reply, format_multiline

# Security extensions terminate at the balancer (or are not offered at all),
# and the secure-FXP extensions would let a client aim the server's data
# connection somewhere the balancer does not control.
_HIDDEN = frozenset({b"AUTH", b"PBSZ", b"PROT", b"CCC", b"ADAT", b"SSCN", b"CPSV", b"HOST"})

# The balancer answers these itself, whatever the server supports.
_ALWAYS = (b"EPRT", b"EPSV")


def _feature_name(line: bytes) -> bytes:
    return line.strip().split(b" ", 1)[0].upper()


def filter_feat(reply: Reply, extra: tuple[bytes, ...] = ()) -> bytes:
    """Rewrite a server's 211 FEAT reply; anything else passes untouched."""
    if reply.code != 211 or len(reply.lines) < 2:
        return reply.raw
    middle = [line for line in reply.lines[1:-1] if _feature_name(line) not in _HIDDEN]
    present = {_feature_name(line) for line in middle}
    for name in (*_ALWAYS, *extra):
        if _feature_name(name) not in present:
            middle.append(b" " + name)
    return format_multiline(211, reply.lines[0][4:], middle, reply.lines[-1][4:])


def own_feat(extra: tuple[bytes, ...] = ()) -> bytes:
    """The balancer's FEAT reply before a server is chosen."""
    names = (*_ALWAYS, b"PASV", b"REST STREAM", *extra)
    return format_multiline(211, b"Features:", [b" " + name for name in names], b"End")
