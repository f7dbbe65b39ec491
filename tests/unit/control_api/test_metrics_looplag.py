"""The event-loop lag monitor against a deliberately blocked loop, and its histogram."""

from __future__ import annotations

import asyncio
import time

from control_api.looplag import LoopLagMonitor
from control_api.metrics import ControlMetrics

INTERVAL_S = 0.25
BLOCK_S = 0.6


async def test_blocked_loop_is_observed_as_lag_of_at_least_the_block() -> None:
    metrics = ControlMetrics("vc1", dict)
    seen: list[float] = []
    woke = asyncio.Event()

    def observe(lag: float) -> None:
        seen.append(lag)
        metrics.observe_loop_lag(lag)
        woke.set()

    mon = LoopLagMonitor(observe, INTERVAL_S)
    mon.start()
    try:
        # Wait for one wake-up: the monitor has gone back to sleep (deadline = now + interval)
        # before this task runs again. Holding the loop past that deadline and then BLOCK_S
        # more makes the next wake-up at least BLOCK_S late.
        await asyncio.wait_for(woke.wait(), 10)
        quiet = len(seen)
        woke.clear()
        t0 = time.perf_counter()
        time.sleep(INTERVAL_S + BLOCK_S)   # blocking the loop is the point
        blocked = time.perf_counter() - t0
        await asyncio.wait_for(woke.wait(), 10)
    finally:
        await mon.stop()
    late = seen[quiet]
    assert late >= BLOCK_S, (late, seen)
    assert late <= blocked + 1.0, (late, blocked)      # overshoot, not total time asleep
    assert not mon.running
    reg = metrics.registry
    count = reg.get_sample_value("voicecall_event_loop_lag_seconds_count", {"node": "vc1"})
    assert count == len(seen)
    total = reg.get_sample_value("voicecall_event_loop_lag_seconds_sum", {"node": "vc1"})
    assert total is not None and abs(total - sum(seen)) < 1e-9
    # the long one lands above the 0.5 s bucket, in the 1 s one
    for le, want in (("0.5", len([x for x in seen if x <= 0.5])),
                     ("1.0", len([x for x in seen if x <= 1.0]))):
        got = reg.get_sample_value("voicecall_event_loop_lag_seconds_bucket",
                                   {"node": "vc1", "le": le})
        assert got == want, (le, got, seen)
    assert len([x for x in seen if x <= 0.5]) < len(seen)


async def test_idle_loop_reports_small_lag_at_the_interval() -> None:
    seen: list[float] = []
    mon = LoopLagMonitor(seen.append, 0.05)
    mon.start()
    mon.start()                              # idempotent: still one task
    await asyncio.sleep(0.6)
    await mon.stop()
    await mon.stop()
    n = len(seen)
    assert 3 <= n <= 12, seen               # ~0.6 / 0.05 wake-ups; fewer on a loaded machine
    assert all(x >= 0 for x in seen)
    assert sorted(seen)[n // 2] < 0.05, seen   # an idle loop is not late by whole intervals
    await asyncio.sleep(0.2)
    assert len(seen) == n                   # stopped: no more observations
