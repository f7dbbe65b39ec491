"""Gateway health from OPTIONS outcomes; bounded per-call traces."""

from __future__ import annotations

from switch.trace import CallTraces, TraceEntry
from switch.trunks import GatewayHealth, GatewayState, probe_succeeded


def test_any_answer_but_timeout_or_5xx_proves_life() -> None:
    assert probe_succeeded(200)
    assert probe_succeeded(404)   # alive, just does not like OPTIONS to that URI
    assert not probe_succeeded(None)
    assert not probe_succeeded(408)
    assert not probe_succeeded(503)


def test_gateway_goes_down_on_failed_probe_and_comes_back() -> None:
    g = GatewayHealth("gw")
    assert g.is_up
    assert g.probe_result(None, now=10.0)
    assert g.state is GatewayState.DOWN and g.changed_at == 10.0
    assert not g.probe_result(None, now=20.0)   # still down, no change
    assert g.probe_result(200, now=30.0)
    assert g.is_up and g.consecutive_failures == 0


def test_threshold_of_two() -> None:
    g = GatewayHealth("gw", failure_threshold=2)
    assert not g.probe_result(503, 1.0)
    assert g.is_up
    assert g.probe_result(503, 2.0)
    assert not g.is_up


def _entry(i: int) -> TraceEntry:
    return TraceEntry(100.0 + i, "in" if i % 2 else "out", "udp", "127.0.0.1:5060",
                      "127.0.0.1:5070", f"INVITE {i}", b"x")


def test_traces_keep_only_the_last_calls_and_bounded_messages() -> None:
    t = CallTraces(max_calls=2, max_messages_per_call=3)
    for c in ("a", "b", "c"):
        for i in range(5):
            t.add(c, _entry(i))
    assert t.call_ids() == ["b", "c"]
    assert t.get("a") is None
    entries = t.get("c")
    assert entries is not None and len(entries) == 3
    ladder = t.ladder("c")
    assert "-->" in ladder and "<--" in ladder and "INVITE 0" in ladder
