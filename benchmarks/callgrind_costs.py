"""Self costs per function from a callgrind dump.

``callgrind_annotate`` reads a dump taken mid-run (``callgrind_control --dump``)
as if the calls still open at that moment had cost nothing below them, so it
ranks ``main`` first at 100% and stops there. A function's own cost is simpler
to take straight from the file: every cost line under ``fn=`` counts, except
the one after a ``calls=`` line, which is the inclusive cost of that call.
Names may be compressed (``fn=(12) name`` once, ``fn=(12)`` after), and a
``cfn=`` line can be the first to name one.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

__all__ = ["self_costs"]

_NAMED = re.compile(r"c?fn=\((\d+)\)(?: (.*))?$")


def self_costs(dump: Path) -> Counter[str]:
    """Instructions (the first event) spent in each function itself."""
    names: dict[str, str] = {}
    costs: Counter[str] = Counter()
    function: str | None = None
    skip_next_cost = False
    with dump.open(errors="replace") as lines:
        for line in lines:
            if line[:1].isdigit() or line[:1] in ("+", "-", "*"):
                if skip_next_cost:
                    skip_next_cost = False
                elif function is not None:
                    fields = line.split()
                    if len(fields) >= 2:
                        costs[function] += int(fields[1])
                continue
            skip_next_cost = False
            if line.startswith(("fn=", "cfn=")):
                name = _name(line.rstrip("\n"), names)
                if line.startswith("fn="):
                    function = name
            elif line.startswith("calls="):
                skip_next_cost = True
    return costs


def _name(line: str, names: dict[str, str]) -> str:
    compressed = _NAMED.match(line)
    if compressed is None:
        return line.split("=", 1)[1]
    number, name = compressed.groups()
    if name:
        names[number] = name
    return names.get(number, f"({number})")
