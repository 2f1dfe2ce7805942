"""The SO_REUSEPORT steering program, run by a small classic-BPF interpreter.

The interpreter follows the kernel's semantics for the instruction classes the
program may use (loads, ALU, TAX, RET), with the packet data starting after
the TCP header and ``SKF_NET_OFF`` loads reading the IP header, as in a
reuseport program. It shares no code with the builder, so a wrong opcode,
offset or operation shows up as a mismatch with :func:`steered_index`.
No socket is opened here; tests/integration/test_workers.py runs the
program in the kernel.
"""

from __future__ import annotations

import ipaddress
import socket
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ftplb.runtime.steering import Instruction, steered_index, steering_program

NET_OFF = -0x100000
MASK = 0xFFFFFFFF


def ip_header(source: str) -> bytes:
    """A bare IPv4 or IPv6 header with ``source`` and a fixed destination."""
    address = ipaddress.ip_address(source)
    if address.version == 4:
        return bytes([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]) + address.packed + bytes(4)
    return bytes([0x60, 0, 0, 0, 0, 0, 6, 64]) + address.packed + bytes(15) + b"\x01"


def run_cbpf(program: tuple[Instruction, ...], network_header: bytes, payload: bytes) -> int:
    """The value a classic BPF program returns for a packet."""
    a = x = 0
    memory = [0] * 16
    # No jumps: the steering program runs straight through.
    for insn in program:
        assert insn.jt == insn.jf == 0
        code, k = insn.code, insn.k
        cls = code & 0x07
        if cls == 0x00:  # BPF_LD
            assert code & 0x18 == 0x00, "only word loads are expected"
            assert code & 0xE0 == 0x20, "only absolute loads are expected"
            offset = k - (1 << 32) if k & 0x80000000 else k
            if offset >= NET_OFF and offset < 0:
                data, start = network_header, offset - NET_OFF
            else:
                data, start = payload, offset
            if start + 4 > len(data):
                return 0  # the kernel ends the program with 0 on a short packet
            a = int.from_bytes(data[start : start + 4], "big")
        elif cls == 0x02:  # BPF_ST
            memory[k] = a
        elif cls == 0x04:  # BPF_ALU
            operand = x if code & 0x08 else k
            op = code & 0xF0
            if op == 0x00:
                a = (a + operand) & MASK
            elif op == 0x20:
                a = (a * operand) & MASK
            elif op == 0x70:
                a = a >> operand
            elif op == 0x60:
                a = (a << operand) & MASK
            elif op == 0x90:
                assert operand != 0
                a = a % operand
            elif op == 0xA0:
                a ^= operand
            else:
                raise AssertionError(f"unexpected ALU op {op:#x}")
        elif cls == 0x07:  # BPF_MISC
            assert code & 0xF8 == 0x00, "only TAX is expected"
            x = a
        elif cls == 0x06:  # BPF_RET
            return a if code & 0x18 == 0x10 else k
        else:
            raise AssertionError(f"unexpected instruction class {cls:#x}")
    raise AssertionError("program did not return")


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)


@given(ipv4, st.integers(1, 64))
def test_ipv4_program_computes_the_documented_index(source: str, workers: int) -> None:
    program = steering_program(socket.AF_INET, workers)
    result = run_cbpf(program, ip_header(source), payload=b"RETR x\r\n")
    assert result == steered_index(source, workers)
    assert 0 <= result < workers


@given(ipv6, st.integers(1, 64))
def test_ipv6_program_computes_the_documented_index(source: str, workers: int) -> None:
    program = steering_program(socket.AF_INET6, workers)
    result = run_cbpf(program, ip_header(source), payload=b"")
    assert result == steered_index(source, workers)
    assert 0 <= result < workers


def test_the_whole_ipv6_source_counts() -> None:
    # Addresses that differ only in their first or only in their last word.
    firsts = {steered_index(f"2001:db8:{n:x}::1", 1 << 16) for n in range(64)}
    lasts = {steered_index(f"2001:db8::{n:x}:1", 1 << 16) for n in range(64)}
    assert len(firsts) > 32
    assert len(lasts) > 32


def test_the_destination_and_payload_do_not_matter() -> None:
    program = steering_program(socket.AF_INET, 7)
    header = bytearray(ip_header("192.0.2.77"))
    expected = run_cbpf(program, bytes(header), b"")
    header[16:20] = bytes([198, 51, 100, 1])  # another destination
    assert run_cbpf(program, bytes(header), b"USER anonymous\r\n") == expected


def test_neighbouring_client_addresses_spread_over_the_workers() -> None:
    # Load-test clients use consecutive loopback addresses: they must not
    # all land on one worker.
    for workers in (2, 3, 4, 8):
        counts = Counter(steered_index(f"10.0.{n // 256}.{n % 256}", workers) for n in range(4096))
        assert set(counts) == set(range(workers))
        assert min(counts.values()) > 4096 / workers * 0.8


def test_programs_fit_the_kernel_limits() -> None:
    for family in (socket.AF_INET, socket.AF_INET6):
        program = steering_program(family, 64)
        assert 1 <= len(program) <= 4096  # BPF_MAXINSNS
        assert program[-1].code & 0x07 == 0x06  # ends with RET
        assert all(0 <= i.k <= MASK and i.jt == i.jf == 0 for i in program)


def test_no_program_for_other_families_or_no_workers() -> None:
    with pytest.raises(ValueError):
        steering_program(socket.AF_UNIX, 2)
    with pytest.raises(ValueError):
        steering_program(socket.AF_INET, 0)
