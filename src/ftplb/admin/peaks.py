"""The peaks of all workers together: the most sessions at once, the highest session rate.

Each worker records its own peaks in gauges of mode ``max``, which
prometheus_client combines by taking the highest; but the workers' sessions
together can peak higher than any one worker's did. So the master, which
hosts the admin listener, reads the workers' current figures (``livesum``
gauges, summed over the workers) once a second and records the highest sum
it has seen under the same metric names. The ``max`` mode then shows the
master's figure, which is at least any worker's.
"""

from __future__ import annotations

import asyncio

from ftplb.admin.snapshot import collect
from ftplb.runtime import metrics

__all__ = ["WorkerPeaks"]

SAMPLE_INTERVAL = 1.0
"""Seconds between two readings: the workers write their figures on the same period."""


class WorkerPeaks:
    """Records the peaks of the sums of the workers' figures found in ``directory``."""

    def __init__(self, directory: str, interval: float = SAMPLE_INTERVAL) -> None:
        metrics.enable(directory)
        self._directory = directory
        self._interval = interval
        self._gauges = metrics.peak_gauges()
        self._highest: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Read and record now, then every ``interval`` seconds on the running loop."""
        self.sample()
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        try:
            self.sample()
        finally:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._tick)

    def sample(self) -> None:
        """Raise each peak that the workers' current sum now beats."""
        for family in collect(self._directory):
            gauge = self._gauges.get(family.name)
            if gauge is None:
                continue
            for sample in family.samples:
                key = (family.name, tuple(sorted(sample.labels.items())))
                if sample.value > self._highest.get(key, 0.0):
                    self._highest[key] = sample.value
                    gauge.labels(**sample.labels).set(sample.value)
