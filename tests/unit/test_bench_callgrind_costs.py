"""The self costs read from a callgrind dump."""

from __future__ import annotations

from pathlib import Path

from benchmarks.callgrind_costs import self_costs

DUMP = """\
# callgrind format
version: 1
events: Ir
summary: 1110

fl=(1) main.c
fn=(1) main
10 100
+2 5
cfl=(2) lib.c
cfn=(2) work
calls=3 20
14 1000
fn=(2)
20 3
fl=(2)
fn=(2)
-1 2
fn=plain
5 0
"""


def test_self_costs_leave_out_the_inclusive_cost_of_calls(tmp_path: Path) -> None:
    dump = tmp_path / "callgrind.out.1"
    dump.write_text(DUMP)
    assert self_costs(dump) == {"main": 105, "work": 5, "plain": 0}
