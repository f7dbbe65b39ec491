"""Event-loop lag monitor: a task that sleeps a fixed interval on the loop and reports by how
much each wake-up came late. Everything on a node (SIP, media pacing, the API) shares one
loop, so the overshoot is the delay any callback due at that moment suffered: a blocked loop
(a long synchronous call, a full GC pass) shows up here before it shows up as retransmissions.

The overshoot is measured against the sleep's own deadline, so a stall of S seconds that
begins after the monitor went to sleep reports at least ``S - interval_s``; a stall that
begins once the deadline has passed reports all of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

DEFAULT_INTERVAL_S = 0.25


class LoopLagMonitor:
    def __init__(self, observe: Callable[[float], None], interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._observe = observe
        self.interval_s = interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.create_task(self._run(), name="loop-lag-monitor")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            due = self._clock() + self.interval_s
            await asyncio.sleep(self.interval_s)
            # The loop may run a timer a hair before its deadline (clock resolution): never
            # report a negative lag.
            self._observe(max(0.0, self._clock() - due))
