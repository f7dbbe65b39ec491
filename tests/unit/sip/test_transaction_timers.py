"""Timer values (RFC 3261 Table 4, RFC 6026) and the shared timer heap; the 2xx
retransmitter of §13.3.1.4."""

from __future__ import annotations

import pytest

from switch.sip.message import make_response
from switch.sip.timers import Timer, TimerHeap, TimerSettings, is_reliable
from switch.sip.transaction import Invite2xxRetransmitter, RetransmitterState
from tests.unit.sip.test_transaction_support import (
    UAC,
    UAC_TCP,
    ack_for,
    request,
    run_timers,
    summarize,
)


def test_default_values_are_rfc_3261_table_4() -> None:
    s = TimerSettings()
    assert (s.t1, s.t2, s.t4) == (0.5, 4.0, 5.0)
    assert s.timeout_64t1 == 32.0  # B, F, H, J (UDP), L, M
    assert s.timer_d(reliable=False) == 32.0 and s.timer_d(reliable=True) == 0.0
    assert s.timer_i(reliable=False) == 5.0 and s.timer_i(reliable=True) == 0.0
    assert s.timer_j(reliable=False) == 32.0 and s.timer_j(reliable=True) == 0.0
    assert s.timer_k(reliable=False) == 5.0 and s.timer_k(reliable=True) == 0.0


def test_timer_a_doubles_without_cap_and_e_g_cap_at_t2() -> None:
    s = TimerSettings()
    a = [0.5]
    e = [0.5]
    for _ in range(6):
        a.append(s.next_invite_interval(a[-1]))
        e.append(s.next_capped_interval(e[-1]))
    assert a == [0.5, 1, 2, 4, 8, 16, 32]
    assert e == [0.5, 1, 2, 4, 4, 4, 4]


def test_from_config_milliseconds() -> None:
    s = TimerSettings.from_ms(250, 2000, 4000)
    assert (s.t1, s.t2, s.t4, s.timeout_64t1) == (0.25, 2.0, 4.0, 16.0)


@pytest.mark.parametrize(("t1", "t2", "t4"), [(0, 4, 5), (1, 0.5, 5), (0.5, 4, 0)])
def test_nonsense_values_are_refused(t1: float, t2: float, t4: float) -> None:
    with pytest.raises(ValueError):
        TimerSettings(t1, t2, t4)


def test_reliable_transports() -> None:
    assert [is_reliable(t) for t in ("udp", "UDP", "tcp", "TLS", "ws")] == [
        False, False, True, True, True]


# ------------------------------------------------------------------------ the heap


def test_heap_pops_in_deadline_order_and_replaces_on_reschedule() -> None:
    h = TimerHeap()
    h.schedule("t1", Timer.A, 5.0)
    h.schedule("t2", Timer.B, 3.0)
    h.schedule("t1", Timer.A, 1.0)  # replaces the 5.0 one
    assert h.next_deadline() == 1.0 and len(h) == 2
    assert h.pop_due(0.5) is None
    assert h.pop_due(10.0) == ("t1", Timer.A)
    assert h.pop_due(10.0) == ("t2", Timer.B)
    assert h.pop_due(10.0) is None and h.next_deadline() is None


def test_heap_cancel_and_cancel_all() -> None:
    h = TimerHeap()
    h.schedule("x", Timer.E, 1.0)
    h.schedule("x", Timer.F, 2.0)
    h.schedule("y", Timer.F, 3.0)
    h.cancel("x", Timer.E)
    assert h.next_deadline() == 2.0
    h.cancel_all("x")
    assert h.next_deadline() == 3.0 and h.deadline_of("y", Timer.F) == 3.0
    assert h.deadline_of("x", Timer.F) is None


def test_heap_memory_stays_bounded_under_reschedule_churn() -> None:
    h = TimerHeap()
    for i in range(10_000):
        h.schedule("same", Timer.A, float(i))
    assert len(h) == 1
    assert len(h._heap) <= 130  # cancelled entries are compacted away


# ------------------------------------------------------- 2xx retransmission (§13.3.1.4)


def test_2xx_is_retransmitted_t1_doubling_to_t2_until_64_t1() -> None:
    inv = request("INVITE")
    ok = make_response(inv, 200, to_tag="uas")
    r = Invite2xxRetransmitter(ok, UAC)
    assert summarize(r.start(0.0), 0.0) == ["start 2xx-retransmit +0.5", "start 2xx-wait-ack +32"]
    log = run_timers(r, until=100.0)
    sends = [t for t, what in log if what == "send 200"]
    intervals = [b - a for a, b in zip([0.0, *sends], sends, strict=False)]
    assert intervals == [0.5, 1, 2, 4, 4, 4, 4, 4, 4, 4]
    assert log[-3:] == [
        (32.0, "timeout 2xx-wait-ack"), (32.0, "cancel 2xx-retransmit"), (32.0, "terminated")]
    assert r.state is RetransmitterState.TERMINATED


def test_2xx_retransmission_stops_on_the_ack() -> None:
    inv = request("INVITE")
    ok = make_response(inv, 200, to_tag="uas")
    r = Invite2xxRetransmitter(ok, UAC)
    r.start(0.0)
    ack = ack_for(inv, ok)
    assert r.matches_ack(ack)
    other = ack_for(inv, make_response(inv, 200, to_tag="other-dialog"))
    assert not r.matches_ack(other)
    assert summarize(r.ack_received(2.0), 2.0) == [
        "cancel 2xx-retransmit", "cancel 2xx-wait-ack", "terminated"]
    assert r.ack_received(2.1) == []
    assert r.timer_fired(Timer.RETRANSMIT_2XX, 3.0) == []


def test_2xx_over_tcp_only_waits_for_the_ack() -> None:
    inv = request("INVITE")
    r = Invite2xxRetransmitter(make_response(inv, 200, to_tag="uas"), UAC_TCP)
    assert summarize(r.start(0.0), 0.0) == ["start 2xx-wait-ack +32"]


def test_only_2xx_can_be_retransmitted() -> None:
    inv = request("INVITE")
    with pytest.raises(ValueError, match="2xx"):
        Invite2xxRetransmitter(make_response(inv, 486, to_tag="x"), UAC)
