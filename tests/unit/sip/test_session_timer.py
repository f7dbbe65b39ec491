"""RFC 4028 session timers: negotiation (422 + retry, refresher election), refresh at half
the interval, teardown when the refresher goes quiet."""

from __future__ import annotations

import pytest

from switch.sip.dialog import LocalEndpoint
from switch.sip.invite_session import (
    Answered,
    Ended,
    EndReason,
    Failed,
    OfferReceived,
    RefreshFailed,
    SessionConfig,
    SessionState,
    TimerKey,
)
from switch.sip.message import Request
from switch.sip.session_timer import (
    Negotiated,
    Refresher,
    SessionExpires,
    SessionTimer,
    SessionTimerConfig,
    TooSmall,
    expiry_margin,
    parse_min_se,
    parse_session_expires,
)
from switch.sip.uri import parse_uri

from .test_invite_session_kit import Net

OFFER = b"v=0 offer-a\r\n"
ANSWER = b"v=0 answer-b\r\n"


def cfg(user: str, host: str, *, se: int = 1800, min_se: int = 90, enabled: bool = True,
        allow: tuple[str, ...] | None = None) -> SessionConfig:
    local = LocalEndpoint(contact=parse_uri(f"sip:{user}@{host}"))
    if allow is not None:
        local = LocalEndpoint(contact=local.contact, allow=allow)
    return SessionConfig(local=local, timer=SessionTimerConfig(enabled, se, min_se))


def connect(n: Net) -> Net:
    n.invite(OFFER)
    n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
    return n


class TestValues:
    def test_parse_and_format(self) -> None:
        assert parse_session_expires("1800;refresher=uac") == SessionExpires(1800, Refresher.UAC)
        assert parse_session_expires(" 90 ") == SessionExpires(90, None)
        assert str(SessionExpires(600, Refresher.UAS)) == "600;refresher=uas"
        with pytest.raises(ValueError):
            parse_session_expires("soon")
        assert parse_min_se(None) == 90
        assert parse_min_se("120") == 120
        assert parse_min_se("30") == 90  # nobody may go below 90 (§4)

    def test_expiry_margin(self) -> None:
        assert expiry_margin(1800) == 32
        assert expiry_margin(90) == 30

    def test_config_floor(self) -> None:
        with pytest.raises(ValueError):
            SessionTimerConfig(min_se=60)
        with pytest.raises(ValueError):
            SessionTimerConfig(session_expires=100, min_se=200)


class TestUasNegotiation:
    def test_too_small_interval_gets_422(self) -> None:
        t = SessionTimer(SessionTimerConfig(session_expires=1800, min_se=600))
        assert t.on_request("300", None, True) == TooSmall(600)

    def test_refresher_named_by_uac_is_kept(self) -> None:
        t = SessionTimer(SessionTimerConfig())
        assert t.on_request("1200;refresher=uas", None, True) == Negotiated(1200, True)
        assert t.response_headers() == [("Session-Expires", "1200;refresher=uas")]

    def test_timer_aware_uac_without_preference_refreshes_itself(self) -> None:
        t = SessionTimer(SessionTimerConfig())
        assert t.on_request("1200", None, True) == Negotiated(1200, False)
        # §9: refresher=uac needs Require: timer in the 2xx
        assert t.response_headers() == [("Session-Expires", "1200;refresher=uac"),
                                        ("Require", "timer")]

    def test_uac_without_timer_support_makes_us_refresher(self) -> None:
        t = SessionTimer(SessionTimerConfig(session_expires=900))
        assert t.on_request(None, None, False) == Negotiated(900, True)
        assert t.response_headers() == [("Session-Expires", "900;refresher=uas")]

    def test_mid_call_request_without_session_expires_keeps_the_refresher(self) -> None:
        t = SessionTimer(SessionTimerConfig())
        assert t.on_request(None, None, False) == Negotiated(1800, True)
        # a later re-INVITE/UPDATE without Session-Expires (media change) changes nothing
        assert t.on_request(None, None, True) == Negotiated(1800, True)
        t2 = SessionTimer(SessionTimerConfig())
        assert t2.on_request("1800", None, True) == Negotiated(1800, False)
        assert t2.on_request(None, None, True) == Negotiated(1800, False)

    def test_interval_never_below_the_requests_min_se(self) -> None:
        t = SessionTimer(SessionTimerConfig(session_expires=600))
        result = t.on_request("3600", "1200", True)
        assert isinstance(result, Negotiated) and result.interval == 1200


class TestFlows:
    def test_422_then_retry_with_larger_interval(self) -> None:
        n = Net(a_cfg=cfg("alice", "10.0.0.1", se=300),
                b_cfg=cfg("bob", "10.0.0.2", se=1800, min_se=1200))
        n.invite(OFFER)
        [r422] = n.b.responses(422)
        assert r422.headers.get("Min-SE") == "1200"
        assert [e for e in n.b.previous[0] if isinstance(e, Ended)] == [
            Ended(EndReason.REJECTED, 422)]
        first = n.a.requests("INVITE")[0]
        # the UAC retried at once when the 422 arrived (RFC 4028 §7.4)
        invites = n.a.requests("INVITE")
        assert len(invites) == 2
        retry = invites[1]
        assert retry.headers.get("Session-Expires") == "1200"
        assert retry.headers.get("Min-SE") == "1200"
        assert retry.call_id == first.call_id and retry.from_.tag == first.from_.tag
        assert retry.cseq.seq == first.cseq.seq + 1
        assert retry.top_via.branch != first.top_via.branch
        assert not [e for e in n.a.events() if isinstance(e, Failed)]

    def test_422_retry_reaches_a_call(self) -> None:
        n = Net(a_cfg=cfg("alice", "10.0.0.1", se=300),
                b_cfg=cfg("bob", "10.0.0.2", se=1800, min_se=1200))
        # b's first session dies with its 422; the retry creates a fresh one
        n.invite(OFFER)
        n.call(n.b, lambda: n.b.s.answer(ANSWER, n.now))
        assert n.a.s.state is SessionState.CONFIRMED
        assert n.a.s.timer.active == Negotiated(1200, True)
        assert n.a.timers[TimerKey.SESSION_REFRESH] == pytest.approx(600.0)

    def test_refresh_at_half_by_update_when_allowed(self) -> None:
        n = connect(Net())
        ok = n.b.responses(200, "INVITE")[0]
        assert ok.headers.get("Session-Expires") == "1800;refresher=uac"
        assert "timer" in ok.require
        assert n.a.s.timer.active == Negotiated(1800, True)
        assert n.b.s.timer.active == Negotiated(1800, False)
        assert n.b.timers[TimerKey.SESSION_EXPIRY] == pytest.approx(1800 - 32)
        n.advance(899)
        assert not n.a.requests("UPDATE")
        n.advance(2)
        [upd] = n.a.requests("UPDATE")
        assert upd.body == b""
        assert upd.headers.get("Session-Expires") == "1800;refresher=uac"
        assert n.b.responses(200, "UPDATE")
        # both restarted their clocks at the refresh (t = 900)
        assert n.a.timers[TimerKey.SESSION_REFRESH] == pytest.approx(1800.0)
        assert n.b.timers[TimerKey.SESSION_EXPIRY] == pytest.approx(900 + 1768.0)
        n.advance(3 * 3600)
        assert n.a.s.state is SessionState.CONFIRMED and n.b.s.state is SessionState.CONFIRMED
        assert len(n.a.requests("UPDATE")) == 1 + int(3 * 3600 / 900)

    def test_refresh_by_reinvite_when_peer_lacks_update(self) -> None:
        no_update = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
        n = connect(Net(b_cfg=cfg("bob", "10.0.0.2", allow=no_update)))
        n.advance(901)
        [reinv] = n.a.requests("INVITE")[1:]
        assert reinv.body == OFFER  # the SDP in force, unchanged
        assert reinv.headers.get("Session-Expires") == "1800;refresher=uac"
        [offer] = n.b.events(OfferReceived)
        assert offer.sdp == OFFER  # type: ignore[attr-defined]
        n.call(n.b, lambda: n.b.s.accept_offer(ANSWER, n.now))
        assert n.a.timers[TimerKey.SESSION_REFRESH] == pytest.approx(901 + 900)

    def test_uas_refresher_when_uac_has_no_timer_support(self) -> None:
        n = connect(Net(a_cfg=cfg("alice", "10.0.0.1", enabled=False)))
        ok = n.b.responses(200, "INVITE")[0]
        assert ok.headers.get("Session-Expires") == "1800;refresher=uas"
        assert "timer" not in ok.require
        assert TimerKey.SESSION_REFRESH in n.b.timers
        assert n.a.timers == {}
        n.advance(901)
        assert n.b.requests("UPDATE")

    def test_peer_stops_refreshing_then_bye_before_expiry(self) -> None:
        n = connect(Net(a_cfg=cfg("alice", "10.0.0.1", se=90),
                        b_cfg=cfg("bob", "10.0.0.2", se=90)))
        assert n.b.s.timer.active == Negotiated(90, False)
        # a goes silent: its refreshes are lost
        n.drop = lambda m: isinstance(m, Request) and m.method in ("UPDATE", "INVITE")
        n.advance(59.9)
        assert n.b.s.state is SessionState.CONFIRMED
        n.advance(0.2)  # 90 - min(32, 90/3) = 60
        assert [e for e in n.b.events() if isinstance(e, Ended)] == [
            Ended(EndReason.SESSION_TIMER_EXPIRED)]
        assert n.b.requests("BYE")

    def test_uac_runs_timer_alone_when_uas_ignores_it(self) -> None:
        n = connect(Net(b_cfg=cfg("bob", "10.0.0.2", enabled=False)))
        ok = n.b.responses(200, "INVITE")[0]
        assert ok.headers.get("Session-Expires") is None
        assert n.a.s.timer.active == Negotiated(1800, True)  # §7.2: we refresh
        assert TimerKey.SESSION_REFRESH in n.a.timers

    def test_refresh_481_ends_session(self) -> None:
        n = connect(Net())
        n.b.s.state = SessionState.TERMINATED  # b forgot the dialog
        n.advance(901)
        assert RefreshFailed(481) in n.a.events()
        assert Ended(EndReason.DIALOG_GONE, 481) in n.a.events()
        assert n.a.s.terminated

    def test_refresh_timeout_sends_bye(self) -> None:
        n = connect(Net())
        n.drop = lambda m: isinstance(m, Request) and m.method == "UPDATE"
        n.advance(900 + 33)
        assert RefreshFailed(408) in n.a.events()
        assert Ended(EndReason.REQUEST_TIMEOUT) in n.a.events()
        assert n.a.requests("BYE")

    def test_answered_event_before_timers(self) -> None:
        n = connect(Net())
        assert n.a.events(Answered)
