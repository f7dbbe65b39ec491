"""Message builders shared by the transaction tests (no tests here).

Messages are written as wire text and parsed by the real parser, so the tests exercise the
transaction layer against exactly what arrives from the network.
"""

from __future__ import annotations

from typing import Protocol

from switch.sip.addressing import Peer
from switch.sip.message import Request, Response
from switch.sip.parser import parse_message
from switch.sip.timers import Timer
from switch.sip.transaction import (
    CancelTimer,
    DeliverRequest,
    DeliverResponse,
    Effect,
    SendCancel,
    StartTimer,
    Terminated,
    Timeout,
    Transmit,
    TransportFailed,
)

UAC = Peer("udp", "192.0.2.10", 5060)  # the far end that sends us requests
UAS = Peer("udp", "192.0.2.20", 5070)  # the far end we send requests to
UAC_TCP = Peer("tcp", "192.0.2.10", 40001, connection_id=7)
UAS_TCP = Peer("tcp", "192.0.2.20", 5070)


def request(
    method: str = "INVITE",
    *,
    branch: str | None = "z9hG4bK-1",
    via_host: str = "192.0.2.10",
    via_port: int | None = 5060,
    transport: str = "UDP",
    uri: str = "sip:bob@192.0.2.20",
    from_tag: str | None = "ft1",
    to_tag: str | None = None,
    call_id: str = "call-1@192.0.2.10",
    cseq: int = 1,
    cseq_method: str | None = None,
    routes: tuple[str, ...] = (),
    extra_vias: tuple[str, ...] = (),
    rport: bool = False,
) -> Request:
    hp = via_host if via_port is None else f"{via_host}:{via_port}"
    params = ""
    if branch is not None:
        params += f";branch={branch}"
    if rport:
        params += ";rport"
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/{transport} {hp}{params}"]
    lines += [f"Via: {v}" for v in extra_vias]
    lines += ["Max-Forwards: 70"]
    lines += [f"Route: {r}" for r in routes]
    ft = f";tag={from_tag}" if from_tag else ""
    tt = f";tag={to_tag}" if to_tag else ""
    lines += [
        f"From: <sip:alice@192.0.2.10>{ft}",
        f"To: <sip:bob@192.0.2.20>{tt}",
        f"Call-ID: {call_id}",
        f"CSeq: {cseq} {cseq_method or method}",
        "Contact: <sip:alice@192.0.2.10:5060>",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


def response_to(
    req: Request, status: int, *, to_tag: str | None = "tt1", reason: str | None = None
) -> Response:
    """The response the far end sends to our request ``req`` (every Via echoed)."""
    lines = [f"SIP/2.0 {status} {reason or 'Reason'}"]
    lines += [f"Via: {v}" for v in req.headers.get_all("Via")]
    to = req.headers.get("To") or ""
    if to_tag and status != 100 and ";tag=" not in to:
        to += f";tag={to_tag}"
    lines += [
        f"From: {req.headers.get('From')}",
        f"To: {to}",
        f"Call-ID: {req.call_id}",
        f"CSeq: {req.cseq.seq} {req.cseq.method}",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Response)
    return msg


def ack_for(
    invite: Request, resp: Response, *, branch: str | None = None, uri: str | None = None
) -> Request:
    """The far end's ACK to our response ``resp``: same branch for a non-2xx (§17.1.1.3),
    a new branch for a 2xx (§13.2.2.4) unless ``branch`` says otherwise."""
    if branch is None:
        branch = invite.top_via.branch if resp.status >= 300 else "z9hG4bK-ack2xx"
    via = invite.top_via.with_params(branch=branch, received=None, rport=None)
    lines = [
        f"ACK {uri or invite.uri} SIP/2.0",
        f"Via: {via}",
        "Max-Forwards: 70",
        f"From: {invite.headers.get('From')}",
        f"To: {resp.headers.get('To')}",
        f"Call-ID: {invite.call_id}",
        f"CSeq: {invite.cseq.seq} ACK",
        "Content-Length: 0",
        "",
        "",
    ]
    msg = parse_message("\r\n".join(lines).encode())
    assert isinstance(msg, Request)
    return msg


# ---------------------------------------------------------------------------- effects

def summarize(effects: list[Effect], now: float) -> list[str]:
    """Effects as short RFC-like phrases; timer deadlines relative to ``now``."""
    out: list[str] = []
    for e in effects:
        if isinstance(e, Transmit):
            m = e.message
            out.append(f"send {m.method}" if isinstance(m, Request) else f"send {m.status}")
        elif isinstance(e, StartTimer):
            out.append(f"start {e.name} +{e.deadline - now:g}")
        elif isinstance(e, CancelTimer):
            out.append(f"cancel {e.name}")
        elif isinstance(e, DeliverResponse):
            out.append(f"deliver {e.response.status}")
        elif isinstance(e, DeliverRequest):
            out.append(f"deliver {e.request.method}")
        elif isinstance(e, Timeout):
            out.append(f"timeout {e.kind}")
        elif isinstance(e, TransportFailed):
            out.append("transport failed")
        elif isinstance(e, Terminated):
            out.append("terminated")
        elif isinstance(e, SendCancel):
            out.append("send-cancel")
        else:  # pragma: no cover - a new effect type must be added here
            raise AssertionError(f"unknown effect {e!r}")
    return out


class _HasTimers(Protocol):
    @property
    def armed_timers(self) -> dict[Timer, float]: ...

    @property
    def terminated(self) -> bool: ...

    def timer_fired(self, name: Timer, now: float) -> list[Effect]: ...


def run_timers(
    machine: _HasTimers, until: float, now: float = 0.0
) -> list[tuple[float, str]]:
    """Let virtual time pass with no other input: fire the earliest armed timer at its
    deadline, repeatedly, up to ``until``. Returns ``(time, phrase)`` for every effect."""
    log: list[tuple[float, str]] = []
    while not machine.terminated and machine.armed_timers:
        name, deadline = min(machine.armed_timers.items(), key=lambda kv: kv[1])
        if deadline > until:
            break
        now = max(now, deadline)
        log.extend((now, p) for p in summarize(machine.timer_fired(name, now), now))
    return log
