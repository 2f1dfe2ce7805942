"""Steer every connection from one client IP to one worker of a SO_REUSEPORT group.

Linux spreads the connections of a SO_REUSEPORT group over its sockets by a
hash of the whole 4-tuple, so two sessions of one client (or a tcp-mode
client's control and data connections) would land on different workers.
Stick tables live in each worker, and tcp mode needs a client's data
connection in the worker that holds its control connection, so ftplb attaches
a classic BPF program (``SO_ATTACH_REUSEPORT_CBPF``) that picks the socket by
a hash of the source address only.

The program sees the packet after the TCP header, so it reads the IP header
through the negative ``SKF_NET_OFF`` offset: the IPv4 source is 4 bytes at
12, the IPv6 source 16 bytes at 8, folded by xor into one word. The word is
hashed multiplicatively (Knuth's golden-ratio constant, upper 16 bits kept)
and taken modulo the worker count. The kernel numbers a group's sockets in
the order they started listening, so the result is a socket index; workers
start one after the other, so at first index ``i`` is worker ``i``.

:func:`steered_index` computes the same function in Python, for tests and
for operators who want to know where an address goes.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
from dataclasses import dataclass

__all__ = [
    "SO_ATTACH_REUSEPORT_CBPF",
    "Instruction",
    "SteeringError",
    "attach_steering",
    "source_word",
    "steered_index",
    "steering_program",
]

SO_ATTACH_REUSEPORT_CBPF = 51
"""Linux's socket option number (asm-generic/socket.h); Python's socket module lacks it."""

SKF_NET_OFF = -0x100000
"""Loads at this offset plus N read byte N of the network (IP) header."""

HASH_MULTIPLIER = 0x9E3779B1
HASH_SHIFT = 16

# Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
BPF_LD_W_ABS = 0x00 | 0x00 | 0x20  # BPF_LD | BPF_W | BPF_ABS: A = word at k
BPF_ALU_MUL_K = 0x04 | 0x20 | 0x00  # A *= k
BPF_ALU_RSH_K = 0x04 | 0x70 | 0x00  # A >>= k
BPF_ALU_MOD_K = 0x04 | 0x90 | 0x00  # A %= k
BPF_ALU_XOR_X = 0x04 | 0xA0 | 0x08  # A ^= X
BPF_MISC_TAX = 0x07 | 0x00  # X = A
BPF_RET_A = 0x06 | 0x10  # return A

_IPV4_SOURCE = 12
_IPV6_SOURCE = 8
_WORD = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Instruction:
    """One classic BPF instruction (``struct sock_filter``)."""

    code: int
    jt: int
    jf: int
    k: int


class SteeringError(Exception):
    """The kernel refused the steering program; connections spread by 4-tuple hash."""


def _op(code: int, k: int = 0) -> Instruction:
    return Instruction(code, 0, 0, k & _WORD)


def steering_program(family: int, workers: int) -> tuple[Instruction, ...]:
    """The program for a listener of ``family`` shared by ``workers`` sockets."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    if family == socket.AF_INET:
        load = [_op(BPF_LD_W_ABS, SKF_NET_OFF + _IPV4_SOURCE)]
    elif family == socket.AF_INET6:
        base = SKF_NET_OFF + _IPV6_SOURCE
        load = [_op(BPF_LD_W_ABS, base)]
        for word in range(1, 4):
            load += [_op(BPF_MISC_TAX), _op(BPF_LD_W_ABS, base + 4 * word), _op(BPF_ALU_XOR_X)]
    else:
        raise ValueError(f"no steering program for address family {family}")
    return (
        *load,
        _op(BPF_ALU_MUL_K, HASH_MULTIPLIER),
        _op(BPF_ALU_RSH_K, HASH_SHIFT),
        _op(BPF_ALU_MOD_K, workers),
        _op(BPF_RET_A),
    )


def source_word(ip: str) -> int:
    """The 32-bit word the program loads for source address ``ip``."""
    packed = ipaddress.ip_address(ip).packed
    word = 0
    for offset in range(0, len(packed), 4):
        word ^= int.from_bytes(packed[offset : offset + 4], "big")
    return word


def steered_index(ip: str, workers: int) -> int:
    """The socket index the program picks for a connection from ``ip``."""
    hashed = ((source_word(ip) * HASH_MULTIPLIER) & _WORD) >> HASH_SHIFT
    return hashed % workers


class _SockFilter(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def attach_steering(sock: socket.socket, workers: int) -> None:
    """Attach the program to the SO_REUSEPORT group of listening socket ``sock``.

    Raises :class:`SteeringError` when the kernel refuses it. The program
    belongs to the group: attaching it again (a restarted worker does) only
    replaces it with the same program.
    """
    program = steering_program(sock.family, workers)
    filters = (_SockFilter * len(program))(*(_SockFilter(i.code, i.jt, i.jf, i.k) for i in program))
    fprog = _SockFprog(len(program), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    # The kernel copies the program during setsockopt, through the pointer in
    # `fprog`: the local `filters` keeps the array alive until then.
    option = ctypes.string_at(ctypes.addressof(fprog), ctypes.sizeof(fprog))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, option)
    except OSError as error:
        raise SteeringError(
            f"the kernel refused the SO_REUSEPORT steering program: {error.strerror or error}"
        ) from error
