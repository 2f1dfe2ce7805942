"""Idle logged-in sessions held by several load-generator processes, level by level.

One process would do for 10,000 sessions (one fd each), but its one event loop
would then be the slowest part of the ramp, on the same cores as the balancer.
So ``processes`` children each open their share of every level, and the
parent reads the balancer's memory once every child says its share is open.

A child is a ``multiprocessing`` "spawn" process (a fresh interpreter: the
parent runs an event loop, which a fork would copy). It talks over a pipe:
``("open", count)`` opens sessions up to ``count`` and answers with
``(held, errors)``; ``("close",)`` closes them all and ends it. Session ``i``
of child ``k`` out of ``n`` is global session ``k + i * n``, with the load
phase's source address for that index (127.0.0.100-163). Every wait of the
parent is bounded; a child that does not answer in time counts its whole share
as failed ("no answer from load generator").
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.loadgen import Credentials, HoldResult, Target, event_loop_factory, hold_one

RAMP_CONCURRENCY = 8  # logins in flight per child
CLOSE_TIMEOUT = 30.0


def shares(level: int, processes: int) -> list[int]:
    """How many of ``level`` sessions each of ``processes`` children holds (as even as
    can be, the first ones taking one more)."""
    if processes < 1:
        raise ValueError("at least one process")
    base, extra = divmod(level, processes)
    return [base + (1 if k < extra else 0) for k in range(processes)]


def global_index(child: int, local: int, processes: int) -> int:
    """The global session number of a child's ``local``-th session."""
    return child + local * processes


def _child_main(  # pragma: no cover - runs in the child process
    conn: multiprocessing.connection.Connection,
    child: int,
    processes: int,
    targets: Sequence[Target],
    credentials: Credentials,
) -> None:
    held: list[asyncio.StreamWriter] = []
    errors: Counter[str] = Counter()

    async def open_up_to(count: int) -> None:
        gate = asyncio.Semaphore(RAMP_CONCURRENCY)

        async def one(local: int) -> None:
            index = global_index(child, local, processes)
            async with gate:
                await hold_one(index, targets, credentials, held=held, errors=errors)

        start = len(held) + sum(errors.values())
        async with asyncio.TaskGroup() as group:
            for local in range(start, count):
                group.create_task(one(local))

    async def close_all() -> None:
        for writer in held:
            writer.close()
        await asyncio.sleep(0.5)

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                message = ("close",)
            if message[0] == "open":
                runner.run(open_up_to(int(message[1])))
                conn.send((len(held), dict(errors)))
            else:
                runner.run(close_all())
                with contextlib.suppress(OSError):
                    conn.send(("closed",))
                return


def merge_errors(per_child: Sequence[dict[str, int]]) -> dict[str, int]:
    """The children's failure counts, added up by kind."""
    total: Counter[str] = Counter()
    for errors in per_child:
        total.update(errors)
    return dict(total)


def hold_levels(
    targets: Sequence[Target],
    credentials: Credentials,
    *,
    levels: Sequence[int],
    at_level: Callable[[int, int], None],
    processes: int = 4,
    settle: float = 2.0,
    level_timeout: float = 300.0,
) -> HoldResult:
    """Hold idle sessions at each level in turn, spread over ``processes`` children;
    ``at_level(level, held)`` runs at each (after ``settle`` seconds)."""
    context = multiprocessing.get_context("spawn")
    pipes: list[multiprocessing.connection.Connection] = []
    children: list[Any] = []
    result = HoldResult()
    started = time.monotonic()
    answers: list[tuple[int, dict[str, int]]] = [(0, {}) for _ in range(processes)]
    lost: Counter[str] = Counter()
    try:
        for child in range(processes):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_child_main,
                args=(child_end, child, processes, tuple(targets), credentials),
                daemon=True,
            )
            process.start()
            child_end.close()
            pipes.append(parent_end)
            children.append(process)
        for level in sorted(levels):
            wanted = shares(level, processes)
            for pipe, count in zip(pipes, wanted, strict=True):
                pipe.send(("open", count))
            deadline = time.monotonic() + level_timeout
            silent = 0
            for child, pipe in enumerate(pipes):
                if pipe.poll(max(0.0, deadline - time.monotonic())):
                    answers[child] = pipe.recv()
                else:
                    silent += 1
                    lost["no answer from load generator"] += wanted[child] - answers[child][0]
            result.ramp_seconds = time.monotonic() - started
            result.attempted = level
            time.sleep(settle)
            held = sum(count for count, _ in answers)
            result.levels[level] = held
            at_level(level, held)
            if silent:
                break  # a late answer would be taken for the next level's
    finally:
        for pipe in pipes:
            with contextlib.suppress(OSError):
                pipe.send(("close",))
        for pipe in pipes:
            with contextlib.suppress(OSError, EOFError):
                if pipe.poll(CLOSE_TIMEOUT):
                    pipe.recv()
        for process in children:
            process.join(5.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
        result.errors = merge_errors([*(errors for _, errors in answers), dict(lost)])
        result.failed = sum(result.errors.values())
    return result
