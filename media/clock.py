"""The one media clock of a node: a 20 ms tick on absolute deadlines.

Every outgoing stream (prompts, DTMF, tones) is driven from here: one ``loop.call_at`` per
tick for the whole node, scheduled at ``t0 + k·20 ms`` on the loop's monotonic clock, so
lateness never accumulates (no relative sleeps) and there is no task per stream. A tick
that runs late is counted; a tick more than ``max_lag_ticks`` behind is skipped (counted)
rather than replayed in a burst.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import Callable
from typing import Protocol

import numpy as np
import structlog

log = structlog.get_logger("media.clock")


class TickSink(Protocol):
    def on_tick(self, tick: int, now: float) -> None: ...


class MediaClock:
    """Shared pacing clock. ``add(sink)`` makes ``sink.on_tick`` run on every tick until
    ``discard(sink)``; ``every(n, fn)`` runs ``fn(tick, now)`` on every n-th tick."""

    LATE_THRESHOLD_S = 0.002
    LATENESS_RING = 8192
    # upper bounds (seconds) of the lateness histogram exported at scrape time
    LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)

    def __init__(self, loop: asyncio.AbstractEventLoop, *, period: float = 0.020,
                 max_lag_ticks: int = 10) -> None:
        self._loop = loop
        self.period = period
        self._max_lag = max_lag_ticks
        self._sinks: dict[int, TickSink] = {}
        self._periodic: list[tuple[int, Callable[[int, float], None]]] = []
        self._t0 = 0.0
        self.tick = 0
        self._handle: asyncio.TimerHandle | None = None
        self.late_ticks = 0
        self.skipped_ticks = 0
        self.ticks_run = 0
        self.max_lateness_s = 0.0
        self._lateness = np.zeros(self.LATENESS_RING, dtype=np.float32)
        # monotonic totals for the metrics plane: reset_stats() (benchmark windows) must
        # never make an exported counter go backwards
        self.total_ticks = 0
        self.total_late_ticks = 0
        self.total_skipped_ticks = 0
        self.lateness_counts = [0] * (len(self.LATENESS_BUCKETS) + 1)  # last: +Inf
        self.lateness_sum = 0.0

    @property
    def running(self) -> bool:
        return self._handle is not None

    @property
    def t0(self) -> float:
        return self._t0

    def start(self) -> None:
        if self._handle is not None:
            return
        self._t0 = self._loop.time()
        self.tick = 0
        self._handle = self._loop.call_at(self._t0, self._run)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def add(self, sink: TickSink) -> None:
        self._sinks[id(sink)] = sink

    def discard(self, sink: TickSink) -> None:
        self._sinks.pop(id(sink), None)

    def every(self, ticks: int, fn: Callable[[int, float], None]) -> None:
        self._periodic.append((max(1, ticks), fn))

    @property
    def active_sinks(self) -> int:
        return len(self._sinks)

    def time_of(self, tick: int) -> float:
        return self._t0 + tick * self.period

    def current_tick_float(self, now: float) -> float:
        return (now - self._t0) / self.period

    def reset_stats(self) -> None:
        """Start a new measurement window for late/skipped ticks and lateness (the
        ``total_*`` counters and the lateness histogram are not reset)."""
        self.late_ticks = 0
        self.skipped_ticks = 0
        self.ticks_run = 0
        self.max_lateness_s = 0.0

    def lateness_percentile(self, q: float) -> float:
        n = min(self.ticks_run, self.LATENESS_RING)
        if n == 0:
            return 0.0
        return float(np.percentile(self._lateness[:n], q))

    def _run(self) -> None:
        now = self._loop.time()
        deadline = self._t0 + self.tick * self.period
        late = now - deadline
        behind = int(late / self.period)
        if behind > self._max_lag:
            # the loop was blocked: jump to the present instead of bursting old frames
            self.skipped_ticks += behind
            self.total_skipped_ticks += behind
            self.tick += behind
            log.warning("media_clock_skipped", ticks=behind, late_ms=round(late * 1000, 1))
            deadline = self._t0 + self.tick * self.period
            late = now - deadline
        if late > self.LATE_THRESHOLD_S:
            self.late_ticks += 1
            self.total_late_ticks += 1
        self.max_lateness_s = max(self.max_lateness_s, late)
        self._lateness[self.ticks_run % self.LATENESS_RING] = late
        self.ticks_run += 1
        self.total_ticks += 1
        if late > 0.0:  # call_at may fire a hair early (clock resolution): count that as 0
            self.lateness_sum += late
        self.lateness_counts[bisect_left(self.LATENESS_BUCKETS, late)] += 1
        tick = self.tick
        for sink in list(self._sinks.values()):
            try:
                sink.on_tick(tick, now)
            except Exception:  # one broken stream must not stop the clock for all others
                log.exception("media_tick_failed", sink=repr(sink))
                self.discard(sink)
        for n, fn in self._periodic:
            if tick % n == 0:
                try:
                    fn(tick, now)
                except Exception:
                    log.exception("media_periodic_failed", fn=repr(fn))
        self.tick += 1
        if self._handle is not None:
            self._handle = self._loop.call_at(self._t0 + self.tick * self.period, self._run)
