"""The serving interpreter's settings, each checked in a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHECK = textwrap.dedent(
    """
    import asyncio, enum

    class Shade(enum.Enum):
        DARK = 1
        DIM = 1  # an alias
        name = 2  # a member that shadows Enum.name, so it sits behind a property

    def check():
        assert "__getattr__" not in vars(enum.EnumType)
        assert Shade.DARK is Shade.DIM is Shade(1)
        assert Shade.name is Shade(2) and Shade.DARK.name == "DARK"
        try:
            Shade.MISSING
        except AttributeError:
            pass
        else:
            raise AssertionError("an unknown name must still raise AttributeError")

    async def main():
        check()
        print("tuned")

    from ftplb.app import run_event_loop
    run_event_loop(main)
    from ftplb.runtime.interpreter import tune_for_serving
    tune_for_serving()  # again: idempotent
    check()
    print("again")
    """
)


def test_the_serving_loop_runs_without_enum_getattr_and_members_still_resolve() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.split(), done.stderr) == (0, ["tuned", "again"], "")
