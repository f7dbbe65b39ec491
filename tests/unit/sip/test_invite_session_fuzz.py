"""Property: whatever both applications do, in whatever order, with whatever messages lost,
the sessions never raise anything but :class:`SessionError` (caller misuse), report at most
one terminal event each, and the side that calls ``bye()`` reaches TERMINATED within
bounded virtual time with no timer left running."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from switch.sip.invite_session import (
    Ended,
    Failed,
    InviteSession,
    SessionConfig,
    SessionError,
    SessionState,
)
from switch.sip.sdp_offer_state import OfferState

from .test_invite_session_kit import Net, Side, endpoint

SDPS = [b"v=0 s1\r\n", b"v=0 s2\r\n", b"v=0 s3\r\n"]

OPS = st.one_of(
    st.tuples(st.just("advance"), st.floats(0, 40)),
    st.tuples(st.sampled_from(["a", "b"]), st.sampled_from([
        "provisional", "provisional_rel", "provisional_sdp", "answer", "answer_none",
        "reject", "cancel", "reinvite", "reinvite_none", "update", "update_none", "info",
        "accept_offer", "reject_offer", "bye", "reject_auth", "authenticate",
    ])),
)


def act(n: Net, side: Side, op: str, k: int) -> None:
    s: InviteSession | None = side.session
    if s is None:
        return
    sdp = SDPS[k % len(SDPS)]
    now = n.now
    calls = {
        "provisional": lambda: s.provisional(180, now),
        "provisional_rel": lambda: s.provisional(180, now, reliable=True),
        "provisional_sdp": lambda: s.provisional(183, now, sdp=sdp, reliable=bool(k % 2)),
        "answer": lambda: s.answer(sdp, now),
        "answer_none": lambda: s.answer(None, now),
        "reject": lambda: s.reject(486, now),
        "cancel": lambda: s.cancel(now),
        "reinvite": lambda: s.reinvite(sdp, now),
        "reinvite_none": lambda: s.reinvite(None, now),
        "update": lambda: s.update(sdp, now),
        "update_none": lambda: s.update(None, now),
        "info": lambda: s.info("text/plain", b"x", now),
        "accept_offer": lambda: s.accept_offer(sdp, now),
        "reject_offer": lambda: s.reject_offer(now),
        "bye": lambda: s.bye(now),
        "reject_auth": lambda: s.reject(407, now),
        "authenticate": lambda: s.authenticate([("Proxy-Authorization", "Digest x")], now),
    }
    try:
        n.call(side, calls[op])
    except SessionError:
        pass  # the caller asked for something impossible right now: a clear error


def check_agreement(n: Net) -> None:
    """Without loss, two confirmed sessions with nothing in flight agree on the SDP: what
    one side sent last is what the other received (RFC 3264 §4)."""
    a, b = n.a.s, n.b.s
    quiet = all(
        s.state is SessionState.CONFIRMED and s.oa.state is OfferState.IDLE and not s._busy()
        for s in (a, b)
    )
    event(f"sdp agreement checked: {quiet}")
    if quiet:
        assert a.local_sdp == b.remote_sdp
        assert a.remote_sdp == b.local_sdp


def terminal_events(side: Side) -> list[object]:
    return [e for e in side.events() if isinstance(e, Failed | Ended)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    ops=st.lists(OPS, max_size=30),
    loss=st.sampled_from([0.0, 0.0, 0.1, 0.3]),
    seed=st.integers(0, 2**16),
    offerless=st.booleans(),
    closer=st.sampled_from(["a", "b"]),
    answer_first=st.sampled_from([None, "plain", "reliable"]),
)
def test_random_orders_never_raise_and_bye_always_terminates(
    ops: list[tuple[str, object]], loss: float, seed: int, offerless: bool, closer: str,
    answer_first: str | None,
) -> None:
    rnd = random.Random(seed)
    a_cfg = SessionConfig(local=endpoint("alice", "10.0.0.1"), auth_retry=True)
    n = Net(a_cfg, seed=seed, drop=lambda m: loss > 0 and rnd.random() < loss)
    n.invite(None if offerless else SDPS[0])
    if answer_first is not None:
        # most interesting orders happen in an established call: get there first
        act(n, n.b, "provisional_rel" if answer_first == "reliable" else "provisional", 0)
        act(n, n.b, "answer", 1)
        act(n, n.a, "accept_offer", 2)
    for i, (who, what) in enumerate(ops):
        if who == "advance":
            assert isinstance(what, float)
            n.advance(what)
        else:
            assert isinstance(what, str)
            act(n, n.a if who == "a" else n.b, what, i + seed)
        for side in (n.a, n.b):
            assert len(terminal_events(side)) <= 1
    if loss == 0 and n.b.session is not None:
        n.advance(0.001)
        check_agreement(n)
    side = n.a if closer == "a" or n.b.session is None else n.b
    event(f"{side.name} {side.s.state.value} before bye()")
    n.call(side, lambda: side.s.bye(n.now))
    n.advance(2 * 64 * 0.5 + 1)  # ACK wait (64*T1) then BYE guard (64*T1)
    assert side.s.state is SessionState.TERMINATED
    assert side.timers == {}
    assert len(terminal_events(side)) == 1
    other = n.peer(side)
    if other.session is not None and other.s.terminated:
        assert other.timers == {}
        assert len(terminal_events(other)) == 1
    # the peer, left alone, ends too (session timer / ACK / PRACK / guards) unless it is a
    # UAS still holding an unanswered INVITE, which only its application can end
    n.advance(2000)
    if other.session is not None and other.s.state not in (
        SessionState.INCOMING, SessionState.EARLY
    ):
        assert other.s.state is SessionState.TERMINATED, other.s.state
        assert other.timers == {}
