"""Scores a finished mutmut run per package and per module; used by scripts/mutation.sh.

Reads the results mutmut leaves in mutants/src/ftplb/<package>/<module>.py.meta.
A mutant counts as killed when a test failed, timed out or crashed under it;
"survived", "no tests", "suspicious", "skipped" and "not checked" count against
the score. Mutants listed in tests/unit/equivalent_mutants.txt cannot change
behaviour, so they are left out of both sides of the ratio.

Usage: mutation_score.py THRESHOLD PREFIX...   (e.g. 95 ftplb.proto.replies.)
Exits 1 when a package in scope scores below THRESHOLD percent, 2 on bad input.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = ("proto", "balancing")
RESULTS = Path("mutants/src/ftplb")
EQUIVALENTS = Path("tests/unit/equivalent_mutants.txt")

# mutmut's exit codes (mutmut.stats.status_by_exit_code), reduced to what the
# score needs. SIGKILL (-9) follows SIGXCPU when a mutant loops: a timeout too.
KILLED_CODES = {1: "killed", 3: "killed", 36: "timeout", 24: "timeout", -24: "timeout",
                152: "timeout", 255: "timeout", -9: "timeout", -11: "segfault"}  # fmt: skip
NOT_KILLED_CODES = {0: "survived", 5: "no tests", 33: "no tests", 34: "skipped", 35: "suspicious"}


def status(exit_code: int | None) -> str:
    if exit_code is None:
        return "not checked"
    return KILLED_CODES.get(exit_code) or NOT_KILLED_CODES.get(exit_code, "suspicious")


def module_of(mutant: str) -> str:
    """``ftplb.proto.replies`` for ``ftplb.proto.replies.xǁReplyParserǁfeed__mutmut_3``."""
    return ".".join(mutant.split(".")[:3])


def load_equivalents() -> dict[str, str]:
    """Listed mutant name -> the reason it cannot change behaviour."""
    listed: dict[str, str] = {}
    if not EQUIVALENTS.exists():
        return listed
    for number, line in enumerate(EQUIVALENTS.read_text("utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, hash_sign, reason = line.partition("#")
        if not hash_sign or not reason.strip() or len(name.split()) != 1:
            sys.exit(f"{EQUIVALENTS}:{number}: expected '<mutant name>  # <reason>'")
        listed[name.strip()] = reason.strip()
    return listed


def load_results() -> dict[str, int | None]:
    results: dict[str, int | None] = {}
    for package in PACKAGES:
        for meta in sorted((RESULTS / package).glob("*.py.meta")):
            results.update(json.loads(meta.read_text("utf-8"))["exit_code_by_key"])
    return results


def percent(killed: int, total: int) -> float:
    return 100.0 * killed / total if total else 100.0


def main(threshold: float, prefixes: list[str]) -> int:
    results = load_results()
    if not results:
        print("no mutmut results under mutants/: did mutmut run?")
        return 2
    equivalents = load_equivalents()
    in_scope = {name: code for name, code in results.items() if name.startswith(tuple(prefixes))}
    if not in_scope:
        print(f"no mutant matches {' '.join(prefixes)}")
        return 2

    killed: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    not_killed: list[tuple[str, str]] = []
    equivalent_killed: list[str] = []
    for name, code in sorted(in_scope.items()):
        verdict = status(code)
        if name in equivalents:
            if verdict in KILLED_CODES.values():
                equivalent_killed.append(name)
            continue
        module = module_of(name)
        package = ".".join(module.split(".")[:2])
        for key in (module, package):
            total[key] += 1
            killed[key] += verdict in KILLED_CODES.values()
        if verdict not in KILLED_CODES.values():
            not_killed.append((name, verdict))

    listed_in_scope = [name for name in equivalents if name in in_scope]
    print(f"\nMutation score (killed/total; {len(listed_in_scope)} listed equivalents left out)")
    failing: list[str] = []
    for package in sorted(key for key in total if key.count(".") == 1):
        score = percent(killed[package], total[package])
        flag = "" if score >= threshold else f"   BELOW {threshold:g}%"
        print(f"  {package:<32} {killed[package]:>5}/{total[package]:<5} {score:6.1f}%{flag}")
        if flag:
            failing.append(package)
        for module in sorted(key for key in total if key.startswith(package + ".")):
            score = percent(killed[module], total[module])
            print(f"    {module:<30} {killed[module]:>5}/{total[module]:<5} {score:6.1f}%")

    if not_killed:
        print(f"\nNot killed ({len(not_killed)}):")
        for name, verdict in not_killed:
            print(f"  {name}  [{verdict}]")
    stale = sorted(name for name in equivalents if name not in results)
    if stale:
        print(f"\nListed in {EQUIVALENTS} but no longer generated ({len(stale)}):")
        for name in stale:
            print(f"  {name}")
    if equivalent_killed:
        print(f"\nListed in {EQUIVALENTS} but killed ({len(equivalent_killed)}):")
        for name in equivalent_killed:
            print(f"  {name}")
    if failing:
        print(f"\nFAIL: {', '.join(failing)} below {threshold:g}%")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    sys.exit(main(float(sys.argv[1]), sys.argv[2:]))
