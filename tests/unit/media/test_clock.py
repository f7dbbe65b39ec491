"""The shared media clock on a virtual loop: absolute deadlines, late and skipped ticks."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from typing import Any, cast

import pytest

from media.clock import MediaClock


class _Handle:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class VirtualLoop:
    """Just ``time()`` and ``call_at`` — the two things the clock uses."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._q: list[tuple[float, int, Callable[[], None], _Handle]] = []
        self._n = 0
        self.scheduled: list[float] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, cb: Callable[[], None]) -> _Handle:
        h = _Handle()
        self._n += 1
        self.scheduled.append(when)
        heapq.heappush(self._q, (when, self._n, cb, h))
        return h

    def run_until(self, t: float, *, delay: Callable[[float], float] = lambda w: 0.0) -> None:
        while self._q and self._q[0][0] <= t:
            when, _, cb, h = heapq.heappop(self._q)
            self.now = max(self.now, when + delay(when))
            if not h.cancelled:
                cb()
        self.now = max(self.now, t)


class Sink:
    def __init__(self) -> None:
        self.ticks: list[tuple[int, float]] = []

    def on_tick(self, tick: int, now: float) -> None:
        self.ticks.append((tick, now))


def make() -> tuple[VirtualLoop, MediaClock]:
    loop = VirtualLoop()
    return loop, MediaClock(cast(asyncio.AbstractEventLoop, cast(Any, loop)))


def test_deadlines_are_absolute_even_when_every_tick_runs_late() -> None:
    loop, clock = make()
    s = Sink()
    clock.add(s)
    clock.start()
    loop.run_until(1000.0 + 9.999, delay=lambda w: 0.004)  # each callback 4 ms late
    # the schedule is t0 + k·20 ms: lateness does not accumulate
    for k, when in enumerate(loop.scheduled[:500]):
        assert when == pytest.approx(1000.0 + k * 0.020, abs=1e-9)
    assert len(s.ticks) == 500
    assert clock.late_ticks == 500 and clock.skipped_ticks == 0
    assert clock.lateness_percentile(99) == pytest.approx(0.004, abs=1e-6)


def test_one_tick_for_all_sinks_and_discard() -> None:
    loop, clock = make()
    sinks = [Sink() for _ in range(1000)]
    for s in sinks:
        clock.add(s)
    clock.start()
    loop.run_until(1000.0 + 0.099)
    assert all(len(s.ticks) == 5 for s in sinks)
    assert len(loop.scheduled) == 6  # one timer per tick for the whole node
    clock.discard(sinks[0])
    loop.run_until(1000.0 + 0.199)
    assert len(sinks[0].ticks) == 5 and len(sinks[1].ticks) == 10


def test_blocked_loop_skips_instead_of_bursting() -> None:
    loop, clock = make()
    s = Sink()
    clock.add(s)
    clock.start()
    loop.run_until(1000.0)
    loop.now = 1001.0  # the loop was blocked for a second
    loop.run_until(1001.0)
    assert clock.skipped_ticks >= 45
    assert len(s.ticks) <= 3


def test_periodic_and_failing_sink_is_removed() -> None:
    loop, clock = make()
    calls: list[int] = []
    clock.every(50, lambda t, now: calls.append(t))

    class Bad:
        def on_tick(self, tick: int, now: float) -> None:
            raise RuntimeError("boom")

    bad = Bad()
    clock.add(bad)
    clock.start()
    loop.run_until(1000.0 + 2.0)
    assert calls == [0, 50, 100]
    assert clock.active_sinks == 0
