"""Micro-benchmark of the sans-I/O transaction layer (messages pre-parsed, parsing excluded).

Run: ``.venv/bin/python bench/transaction_layer.py`` — prints, per call flow, the µs of
transaction-layer work and the implied calls per second of one core:

* UAS INVITE: INVITE in → 100 → 180 → 200 → ACK in, then Timer L (virtual time);
* UAC INVITE: INVITE out → 180 → 200 in, then Timer M;
* UAC OPTIONS: OPTIONS out → 200 in, then Timer K;
* 10 000 concurrent UDP INVITE client transactions retransmitting (Timer A) until B:
  µs per fired timer.
"""

from __future__ import annotations

import logging
import time

import structlog

from switch.sip.addressing import Peer, stamp_via_received
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.timers import TimerSettings
from switch.sip.transaction_layer import NewRequest, TransactionLayer

N = 20_000
SRC = Peer("udp", "192.0.2.10", 5060)
DST = Peer("udp", "192.0.2.20", 5060)


def _req(method: str, i: int, *, to_tag: str = "", cseq_method: str | None = None,
         branch: str | None = None) -> Request:
    tt = f";tag={to_tag}" if to_tag else ""
    text = (
        f"{method} sip:bob@192.0.2.20 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 192.0.2.10:5060;branch={branch or f'z9hG4bK-{i}'};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:alice@192.0.2.10>;tag=f{i}\r\n"
        f"To: <sip:bob@192.0.2.20>{tt}\r\n"
        f"Call-ID: c{i}@192.0.2.10\r\n"
        f"CSeq: 1 {cseq_method or method}\r\n"
        "Contact: <sip:alice@192.0.2.10>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    m = parse_message(text)
    assert isinstance(m, Request)
    return m


def _resp(req: Request, status: int) -> Response:
    return make_response(req, status, to_tag="t" if status > 100 else None)


def bench_uas_invite() -> float:
    layer = TransactionLayer(TimerSettings())
    invites = [stamp_via_received(_req("INVITE", i), SRC) for i in range(N)]
    acks = [_req("ACK", i, to_tag="t", branch=f"z9hG4bK-ack{i}") for i in range(N)]
    t0 = time.perf_counter()
    for inv, ack in zip(invites, acks, strict=True):
        ev = layer.receive(inv, SRC, 0.0)
        txn = next(e.server_txn for e in ev if isinstance(e, NewRequest))
        assert txn is not None
        layer.send_response(txn, make_response(txn.request, 180, to_tag="t"), 0.0)
        layer.send_response(txn, make_response(txn.request, 200, to_tag="t"), 0.0)
        layer.receive(ack, SRC, 0.0)
    layer.advance(1000.0)
    dt = time.perf_counter() - t0
    assert len(layer) == 0
    return dt / N


def bench_uac(method: str, responses: tuple[int, ...]) -> float:
    layer = TransactionLayer(TimerSettings())
    reqs = [_req(method, i) for i in range(N)]
    resps = [[_resp(r, s) for s in responses] for r in reqs]
    t0 = time.perf_counter()
    for r, rs in zip(reqs, resps, strict=True):
        layer.send_request(r, DST, 0.0)
        for resp in rs:
            layer.receive(resp, DST, 0.0)
    layer.advance(1000.0)
    dt = time.perf_counter() - t0
    assert len(layer) == 0
    return dt / N


def bench_retransmit_storm(n: int = 10_000) -> tuple[float, int]:
    layer = TransactionLayer(TimerSettings())
    for i in range(n):
        layer.send_request(_req("INVITE", i), DST, i * 0.0001)
    fired = 0
    t0 = time.perf_counter()
    while (d := layer.next_deadline()) is not None:
        fired += len(layer.advance(d))
    dt = time.perf_counter() - t0
    assert len(layer) == 0
    return dt / fired, fired


def main() -> None:
    # As in production: per-transaction debug/info lines are filtered out.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    uas = bench_uas_invite()
    print(f"UAS INVITE flow (INVITE,100,180,200,ACK,Timer L): {uas * 1e6:7.1f} µs "
          f"= {1 / uas:8.0f} calls/s")
    uac = bench_uac("INVITE", (100, 180, 200))
    print(f"UAC INVITE flow (INVITE,100,180,200,Timer M):     {uac * 1e6:7.1f} µs "
          f"= {1 / uac:8.0f} calls/s")
    opt = bench_uac("OPTIONS", (200,))
    print(f"UAC OPTIONS (OPTIONS,200,Timer K):                {opt * 1e6:7.1f} µs "
          f"= {1 / opt:8.0f} /s")
    per, fired = bench_retransmit_storm()
    print(f"10k unanswered UDP INVITEs, A/B timers: {fired} events, {per * 1e6:.1f} µs/event")


if __name__ == "__main__":
    main()
