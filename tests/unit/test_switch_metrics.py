"""Switch metrics (voicecall_sip_* / gateway / set-up time / b2bua series) against a real
``SwitchNode`` on 127.0.0.1: a caller and a gateway are plain UDP sockets in the test that
send and answer real SIP bytes; every assertion reads the node's own registry.

The node runs with T1 = 50 ms so retransmissions and Timer B come quickly."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import structlog
from prometheus_client import CollectorRegistry, generate_latest

from switch.aio.stack import _in_context
from switch.config import GatewayConfig, NodeConfig, RouteConfig, SipConfig, UserConfig
from switch.metrics import GATEWAY_OUTCOMES, SwitchMetrics, method_label, sip_class
from switch.node import SwitchNode, SwitchSettings
from switch.sip.addressing import stamp_via_received
from switch.sip.digest import DigestClient
from switch.sip.message import Request, Response, make_response
from switch.sip.parser import parse_message
from switch.sip.timers import TimerSettings
from switch.sip.transaction_layer import LayerEvent, NewRequest, OutgoingMessage, TransactionLayer
from switch.trunks import call_outcome
from tests.unit.sip.test_transaction_support import UAC, UAS, request, response_to

NODE = "t1"
CALLEE = "+8675512345678"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")
WAIT = 5.0   # generous bound for one message on a loaded machine


# ------------------------------------------------------------------------------ helpers


class _Proto(asyncio.DatagramProtocol):
    def __init__(self, queue: asyncio.Queue[Request | Response]) -> None:
        self.queue = queue

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait(parse_message(data))


@dataclass
class UdpPeer:
    """A SIP party played by the test: sends raw datagrams, receives parsed messages."""

    transport: asyncio.DatagramTransport
    port: int
    node_port: int
    queue: asyncio.Queue[Request | Response] = field(default_factory=asyncio.Queue)
    seen: list[Request | Response] = field(default_factory=list)

    @classmethod
    async def open(cls, node_port: int = 0) -> UdpPeer:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Request | Response] = asyncio.Queue()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Proto(queue), local_addr=("127.0.0.1", 0))
        port = transport.get_extra_info("sockname")[1]
        return cls(transport, port, node_port, queue)

    def send(self, data: bytes | Request | Response) -> None:
        raw = data if isinstance(data, bytes) else data.to_bytes()
        self.transport.sendto(raw, ("127.0.0.1", self.node_port))

    async def expect(self, what: str) -> Request | Response:
        """The next message that is ``what`` (a method, or a status like "180"); others
        received meanwhile are kept in ``seen``."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            left = deadline - asyncio.get_running_loop().time()
            msg = await asyncio.wait_for(self.queue.get(), max(left, 0.01))
            self.seen.append(msg)
            if (isinstance(msg, Request) and msg.method == what) or (
                    isinstance(msg, Response) and str(msg.status) == what):
                return msg

    async def drain(self, quiet: float = 0.4) -> None:
        """Keep receiving until nothing came for ``quiet`` seconds."""
        while True:
            try:
                self.seen.append(await asyncio.wait_for(self.queue.get(), quiet))
            except TimeoutError:
                return

    def count(self, what: str, method: str = "INVITE") -> int:
        return sum(1 for m in self.seen
                   if isinstance(m, Response) and str(m.status) == what and m.cseq.method == method)

    def close(self) -> None:
        self.transport.close()


def invite(caller: UdpPeer, call_id: str, *, cseq: int = 1) -> bytes:
    body = SDP
    return (
        f"INVITE sip:{CALLEE}@127.0.0.1:{caller.node_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bK{call_id[:10]}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:+8613800000000@127.0.0.1:{caller.port}>;tag=caller1\r\n"
        f"To: <sip:{CALLEE}@127.0.0.1:{caller.node_port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} INVITE\r\n"
        f"Contact: <sip:caller@127.0.0.1:{caller.port}>\r\n"
        f"Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def in_dialog(caller: UdpPeer, method: str, ok: Response, cseq: int) -> bytes:
    """ACK/BYE from the caller in the dialog ``ok`` (our 2xx) established."""
    to = ok.headers.get("To")
    branch = "z9hG4bK" + secrets.token_hex(6)
    return (
        f"{method} sip:{CALLEE}@127.0.0.1:{caller.node_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch={branch}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: {ok.headers.get('From')}\r\nTo: {to}\r\n"
        f"Call-ID: {ok.call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answer(req: Request, status: int, gw: UdpPeer, tag: str = "gw1", body: bytes = b"") -> Response:
    headers = [("Contact", f"<sip:gw@127.0.0.1:{gw.port}>")]
    if body:
        headers.append(("Content-Type", "application/sdp"))
    return make_response(req, status, to_tag=tag, headers=headers, body=body)


@dataclass
class Rig:
    node: SwitchNode
    registry: CollectorRegistry
    caller: UdpPeer
    gw: UdpPeer

    def value(self, name: str, **labels: str) -> float:
        v = self.registry.get_sample_value(name, {"node": NODE, **labels})
        return 0.0 if v is None else v


@contextlib.asynccontextmanager
async def rig(*, users: tuple[UserConfig, ...] = ()) -> AsyncIterator[Rig]:
    caller, gw = await UdpPeer.open(), await UdpPeer.open()
    registry = CollectorRegistry(auto_describe=True)
    # The config does not take port 0: borrow a free one (another process may grab it in
    # between; the node's start then fails loudly, it does not hang).
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = SwitchSettings(
        node=NodeConfig(name=NODE),
        sip=SipConfig(listen=(f"udp:127.0.0.1:{port}",), t1_ms=50, trace_calls=0,
                      max_message_bytes=1500),
        gateways=[GatewayConfig(name="in", address=f"udp:127.0.0.1:{caller.port}",
                                ping_interval_s=0),
                  GatewayConfig(name="carrier", address=f"udp:127.0.0.1:{gw.port}",
                                ping_interval_s=0)],
        routes=[RouteConfig(prefix="+86", gateways=("carrier",))],
        users=list(users))
    node = SwitchNode(settings, metrics=SwitchMetrics(registry, NODE))
    await node.start()
    caller.node_port = gw.node_port = node.listening[0].port
    try:
        yield Rig(node, registry, caller, gw)
    finally:
        caller.close()
        gw.close()
        await node.stop()


# -------------------------------------------------------------------------------- tests


async def test_bridged_call_counts_messages_setup_times_and_outcomes() -> None:
    async with rig() as r:
        caller, gw = r.caller, r.gw
        call_id = secrets.token_hex(8) + "@caller"
        inv = invite(caller, call_id)
        caller.send(inv)
        await caller.expect("100")
        out_inv = await gw.expect("INVITE")
        assert isinstance(out_inv, Request)
        gw.send(make_response(out_inv, 100))   # stops Timer A (unless the machine is slow)

        await asyncio.sleep(0.1)            # the gateway "rings" after ≥ 100 ms
        gw.send(answer(out_inv, 180, gw))
        await caller.expect("180")
        # Ringing: one transaction each way (the INVITEs), two early dialogs.
        assert r.value("voicecall_sip_transactions", side="client") == 1
        assert r.value("voicecall_sip_transactions", side="server") == 1
        assert r.value("voicecall_sip_dialogs", state="early") == 2
        assert r.value("voicecall_calls_active", service="b2bua") == 1
        assert r.value("voicecall_legs_active", service="b2bua") == 2

        # The caller retransmits its INVITE: the 180 is resent — a retransmission.
        caller.send(inv)
        await caller.expect("180")

        await asyncio.sleep(0.1)
        gw.send(answer(out_inv, 200, gw, body=SDP))
        await gw.expect("ACK")
        ok = await caller.expect("200")
        assert isinstance(ok, Response)
        # No ACK yet: the 2xx is retransmitted (T1 = 50 ms) until it comes.
        await caller.expect("200")
        caller.send(in_dialog(caller, "ACK", ok, 1))
        await caller.drain()
        ok_copies = caller.count("200")
        assert ok_copies >= 2
        assert r.value("voicecall_sip_dialogs", state="confirmed") == 2
        assert r.value("voicecall_sip_dialogs", state="early") == 0

        caller.send(in_dialog(caller, "BYE", ok, 2))
        bye = await gw.expect("BYE")
        assert isinstance(bye, Request)
        gw.send(make_response(bye, 200))
        await caller.expect("200")      # 200 to the BYE
        await gw.drain(0.2)
        invite_copies = sum(1 for m in gw.seen if isinstance(m, Request) and m.method == "INVITE")

        v = r.value
        assert v("voicecall_sip_requests_in_total", method="INVITE") == 2
        assert v("voicecall_sip_requests_in_total", method="ACK") == 1
        assert v("voicecall_sip_requests_in_total", method="BYE") == 1
        assert v("voicecall_sip_requests_out_total", method="INVITE") == 1
        assert v("voicecall_sip_requests_out_total", method="ACK") == 1
        assert v("voicecall_sip_requests_out_total", method="BYE") == 1
        assert v("voicecall_sip_responses_in_total", method="INVITE", code="180") == 1
        assert v("voicecall_sip_responses_in_total", method="INVITE", code="200") == 1
        assert v("voicecall_sip_responses_in_total", method="BYE", code="200") == 1
        assert v("voicecall_sip_responses_out_total", method="INVITE", code="100") == 1
        assert v("voicecall_sip_responses_out_total", method="INVITE", code="180") == 1
        assert v("voicecall_sip_responses_out_total", method="INVITE", code="200") == 1
        assert v("voicecall_sip_responses_out_total", method="BYE", code="200") == 1
        # Exactly what the caller saw beyond the first copies: one 180 and the 2xx copies.
        assert v("voicecall_sip_retransmissions_total", kind="response",
                 method="INVITE") == 1 + (ok_copies - 1)
        assert v("voicecall_sip_retransmissions_total", kind="request",
                 method="INVITE") == invite_copies - 1
        assert v("voicecall_sip_responses_in_total", method="INVITE", code="100") == 1

        for direction in ("in", "out"):
            assert v(f"voicecall_call_pdd_seconds_{direction}_count") == 1
            assert v(f"voicecall_call_answer_seconds_{direction}_count") == 1
        assert 0.1 <= v("voicecall_call_pdd_seconds_out_sum") < WAIT
        assert 0.2 <= v("voicecall_call_answer_seconds_out_sum") < 2 * WAIT
        # In: from the INVITE's arrival to our 18x/2xx, so at least as long as out.
        assert v("voicecall_call_pdd_seconds_in_sum") >= v("voicecall_call_pdd_seconds_out_sum")
        assert v("voicecall_call_pdd_seconds_in_bucket", le="0.05") == 0

        assert v("voicecall_gateway_calls_total", gateway="carrier", outcome="answered") == 1
        assert v("voicecall_calls_total", service="b2bua") == 1
        assert v("voicecall_calls_active", service="b2bua") == 0
        assert v("voicecall_legs_active", service="b2bua") == 0
        assert v("voicecall_call_outcomes_total", service="b2bua", leg="a", state_code="2xx") == 1
        assert v("voicecall_call_outcomes_total", service="b2bua", leg="b", state_code="2xx") == 1
        assert v("voicecall_sip_dialogs", state="confirmed") == 0
        assert v("voicecall_gateway_up", gateway="carrier") == 1
        assert v("voicecall_sip_bad_messages_total", reason="parse") == 0

        # node is the first declared label of every series (the exposition sorts them).
        names = set()
        for family in r.registry.collect():
            for sample in family.samples:
                assert next(iter(sample.labels)) == "node", sample
                names.add(family.name)
        assert "voicecall_sip_requests_in" in names and "voicecall_gateway_up" in names
        text = generate_latest(r.registry).decode()
        assert 'voicecall_sip_responses_out_total{code="200",method="INVITE",node="t1"} 1.0' in text


async def test_busy_and_dead_gateway_outcomes() -> None:
    async with rig() as r:
        caller, gw = r.caller, r.gw
        # 1) busy: the gateway answers 486; A gets 486 too.
        caller.send(invite(caller, "busy-" + secrets.token_hex(6)))
        out_inv = await gw.expect("INVITE")
        assert isinstance(out_inv, Request)
        gw.send(answer(out_inv, 486, gw))
        await gw.expect("ACK")
        await caller.expect("486")
        await asyncio.sleep(0.1)
        assert r.value("voicecall_gateway_calls_total", gateway="carrier", outcome="busy") == 1
        assert r.value("voicecall_call_outcomes_total", service="b2bua", leg="b",
                       state_code="4xx") == 1
        assert r.value("voicecall_call_outcomes_total", service="b2bua", leg="a",
                       state_code="4xx") == 1
        assert r.value("voicecall_sip_responses_in_total", method="INVITE", code="486") == 1
        assert r.value("voicecall_call_pdd_seconds_out_count") == 0

        # 2) dead: the gateway never answers; Timer B (64*T1 = 3.2 s) ends the attempt,
        # and the gateway is marked down.
        caller.send(invite(caller, "dead-" + secrets.token_hex(6)))
        await gw.expect("INVITE")
        await gw.expect("INVITE")       # Timer A: our INVITE again
        deadline = asyncio.get_running_loop().time() + 20
        while (r.value("voicecall_gateway_calls_total", gateway="carrier",
                       outcome="unavailable") == 0
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.1)
        assert r.value("voicecall_gateway_calls_total", gateway="carrier",
                       outcome="unavailable") == 1
        assert r.value("voicecall_gateway_up", gateway="carrier") == 0
        assert r.value("voicecall_gateway_up", gateway="in") == 1
        assert r.value("voicecall_sip_retransmissions_total", kind="request",
                       method="INVITE") >= 1
        assert r.value("voicecall_sip_requests_out_total", method="INVITE") == 2
        await asyncio.sleep(0.2)
        assert r.value("voicecall_call_outcomes_total", service="b2bua", leg="b",
                       state_code="0") == 1
        assert r.value("voicecall_calls_active", service="b2bua") == 0
        assert r.value("voicecall_legs_active", service="b2bua") == 0
        assert r.value("voicecall_calls_total", service="b2bua") == 2


async def test_bad_messages_options_and_registration() -> None:
    user = UserConfig(username="1001", password="secret1001", number="+8610001001")
    async with rig(users=(user,)) as r:
        caller = r.caller
        caller.send(b"this is not SIP\r\n\r\n")
        caller.send(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n" + b"X-Pad: " + b"a" * 2000
                    + b"\r\nContent-Length: 0\r\n\r\n")
        no_call_id = (
            f"OPTIONS sip:127.0.0.1:{caller.node_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKnocallid\r\n"
            f"From: <sip:a@127.0.0.1>;tag=a1\r\nTo: <sip:b@127.0.0.1>\r\n"
            f"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()
        caller.send(no_call_id)
        await caller.expect("400")
        opts = no_call_id.replace(b"CSeq:", b"Call-ID: opt1@x\r\nCSeq:").replace(
            b"nocallid", b"options1")
        caller.send(opts)
        await caller.expect("200")
        assert r.value("voicecall_sip_bad_messages_total", reason="parse") >= 1
        assert r.value("voicecall_sip_bad_messages_total", reason="too_large") == 1
        assert r.value("voicecall_sip_bad_messages_total", reason="unmatchable") >= 1
        assert r.value("voicecall_sip_bad_messages_total", reason="handler_error") == 0
        assert r.value("voicecall_sip_requests_in_total", method="OPTIONS") == 2
        assert r.value("voicecall_sip_responses_out_total", method="OPTIONS", code="200") == 1
        assert r.value("voicecall_sip_responses_out_total", method="OPTIONS", code="400") == 1
        assert r.value("voicecall_registered_endpoints") == 0

        # REGISTER with digest: 401, then 200 → one live binding.
        def register(cseq: int, auth: str = "") -> bytes:
            return (
                f"REGISTER sip:127.0.0.1 SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{caller.port};branch=z9hG4bKreg{cseq}\r\n"
                f"From: <sip:1001@127.0.0.1>;tag=r1\r\nTo: <sip:1001@127.0.0.1>\r\n"
                f"Call-ID: reg1@x\r\nCSeq: {cseq} REGISTER\r\n"
                f"Contact: <sip:1001@127.0.0.1:{caller.port}>\r\nExpires: 600\r\n"
                f"{auth}Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode()

        caller.send(register(1))
        challenge = await caller.expect("401")
        value = DigestClient("1001", "secret1001").respond(
            challenge.headers.get_all("WWW-Authenticate"), "REGISTER", "sip:127.0.0.1")
        assert value is not None
        caller.send(register(2, f"Authorization: {value}\r\n"))
        await caller.expect("200")
        assert r.value("voicecall_registered_endpoints") == 1
        assert r.value("voicecall_sip_requests_in_total", method="REGISTER") == 2
        assert r.value("voicecall_sip_responses_out_total", method="REGISTER", code="401") == 1
        assert r.value("voicecall_sip_requests_in_total", method="other") == 0


def test_label_helpers_are_bounded() -> None:
    assert method_label("INVITE") == "INVITE"
    assert method_label("FOO") == "other"
    assert [sip_class(s) for s in (None, 0, 100, 180, 200, 486, 503, 603)] == [
        "0", "0", "0", "0", "2xx", "4xx", "5xx", "6xx"]
    outcomes = {
        (200, True, False): "answered",
        (486, True, False): "busy",
        (600, True, False): "busy",
        (480, True, False): "no_answer",
        (408, True, False): "no_answer",
        (408, False, False): "unavailable",
        (503, False, False): "unavailable",
        (502, True, False): "unavailable",
        (404, True, False): "rejected",
        (603, True, False): "rejected",
        (487, True, True): "cancelled",
        (408, False, True): "cancelled",
    }
    for (status, got, cancelled), want in outcomes.items():
        assert call_outcome(status, got_response=got, cancelled=cancelled) == want
    assert set(outcomes.values()) == set(GATEWAY_OUTCOMES)


@pytest.mark.parametrize("service", ["callback", "notify", "verify"])
def test_service_counters_from_runtime_hooks(service: str) -> None:
    m = SwitchMetrics(CollectorRegistry(), NODE)
    m.call_started(service)
    m.leg_started(service)
    m.leg_ended(service)
    m.leg_outcome(service, "callee", 8000)
    m.call_ended(service)

    def v(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, {"node": NODE, "service": service, **labels})

    assert v("voicecall_calls_total") == 1
    assert v("voicecall_calls_active") == 0
    assert v("voicecall_legs_active") == 0
    assert v("voicecall_call_outcomes_total", leg="callee", state_code="8000") == 1


async def test_service_leg_log_lines_carry_session_and_call_id() -> None:
    """A leg dialled inside a service call's context (``session_id`` bound) logs what its
    responses and the peer's in-dialog requests cause with that session_id, although they
    arrive later from the transport, outside that context."""
    async with rig() as r:
        gw = r.gw
        with structlog.testing.capture_logs(
                processors=[structlog.contextvars.merge_contextvars]) as logs:
            with structlog.contextvars.bound_contextvars(session_id="s-busy"):
                busy = r.node.ua.originate(CALLEE, "+8613800000000", SDP, label="A")
            out = await gw.expect("INVITE")
            assert isinstance(out, Request)
            gw.send(answer(out, 486, gw))
            await asyncio.wait_for(busy.wait_for(), WAIT)

            with structlog.contextvars.bound_contextvars(session_id="s-talk"):
                talk = r.node.ua.originate(CALLEE, "+8613800000000", SDP, label="A")
            out = await gw.expect("INVITE")
            assert isinstance(out, Request)
            gw.send(answer(out, 200, gw, body=SDP))
            ack = await gw.expect("ACK")
            assert isinstance(ack, Request)
            # The gateway hangs up: a BYE in the dialog, to our Contact.
            contact = out.headers.get("Contact") or ""
            gw.send((
                f"BYE {contact.strip('<>')} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP 127.0.0.1:{gw.port};branch=z9hG4bKgwbye1\r\n"
                f"Max-Forwards: 70\r\nFrom: {out.headers.get('To')};tag=gw1\r\n"
                f"To: {out.headers.get('From')}\r\nCall-ID: {out.call_id}\r\n"
                f"CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n").encode())
            await gw.expect("200")
            await asyncio.wait_for(talk.wait_for(), WAIT)
        failed = [e for e in logs if e["event"] == "session failed"]
        ended = [e for e in logs if e["event"] == "session ended"]
        assert failed and ended, logs
        assert failed[0]["session_id"] == "s-busy" and failed[0]["call_id"] == busy.call_id
        assert ended[0]["session_id"] == "s-talk" and ended[0]["call_id"] == talk.call_id
        assert ended[0]["reason"] == "bye-received"
        assert r.value("voicecall_gateway_calls_total", gateway="carrier", outcome="busy") == 1
        assert r.value("voicecall_gateway_calls_total", gateway="carrier",
                       outcome="answered") == 1


def test_response_callback_may_reenter_its_context() -> None:
    """A response callback runs in the sender's context variables; a synchronous transport
    error while it runs can deliver the same transaction's timeout inside it again."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("probe")
    var.set("s-1")
    ctx = contextvars.copy_context()
    seen: list[str] = []

    def callback(resp: Response | None) -> None:
        seen.append(var.get("unset"))
        if len(seen) == 1:
            wrapped(None)

    wrapped = _in_context(ctx, callback)
    contextvars.Context().run(wrapped, None)
    assert seen == ["s-1", "s-1"]


def _flags(events: list[LayerEvent]) -> list[tuple[str, bool]]:
    """(method or status, retransmission) of every OutgoingMessage."""
    out = []
    for e in events:
        if isinstance(e, OutgoingMessage):
            m = e.message
            out.append((m.method if isinstance(m, Request) else str(m.status), e.retransmission))
    return out


def _until(layer: TransactionLayer, until: float) -> list[LayerEvent]:
    events: list[LayerEvent] = []
    while (d := layer.next_deadline()) is not None and d <= until:
        events += layer.advance(d)
    return events


def test_layer_marks_retransmissions() -> None:
    """``OutgoingMessage.retransmission`` (sans-I/O, virtual time, T1 = 0.5 s): first
    transmissions False; Timer A/G copies, a response resent for a retransmitted request,
    a re-ACK of a repeated final response and the TU's own 2xx retransmission True."""
    layer = TransactionLayer(TimerSettings())
    # Client INVITE: sent, Timer A copy, 486 → ACK, 486 again → the same ACK again.
    inv = request("INVITE", branch="z9hG4bK-c1", via_host="192.0.2.99")
    _, events = layer.send_request(inv, UAS, 0.0)
    assert _flags(events) == [("INVITE", False)]
    assert _flags(_until(layer, 0.6)) == [("INVITE", True)]
    busy = response_to(inv, 486)
    assert _flags(layer.receive(busy, UAS, 0.7)) == [("ACK", False)]
    assert _flags(layer.receive(busy, UAS, 0.8)) == [("ACK", True)]

    # Server INVITE: 100, our 486, Timer G copy, the INVITE again → 486 again.
    req = stamp_via_received(request("INVITE", branch="z9hG4bK-s1", call_id="s1@x"), UAC)
    events = layer.receive(req, UAC, 1.0)
    assert _flags(events) == [("100", False)]
    txn = next(e.server_txn for e in events if isinstance(e, NewRequest))
    assert txn is not None
    assert _flags(layer.send_response(txn, make_response(req, 486, to_tag="t1"), 1.1)) == [
        ("486", False)]
    assert ("486", True) in _flags(_until(layer, 1.7))
    assert _flags(layer.receive(req, UAC, 1.8)) == [("486", True)]

    # Server INVITE answered 2xx: the TU's retransmission of the same 2xx is one.
    req2 = stamp_via_received(request("INVITE", branch="z9hG4bK-s2", call_id="s2@x"), UAC)
    txn2 = next(e.server_txn for e in layer.receive(req2, UAC, 2.0) if isinstance(e, NewRequest))
    assert txn2 is not None
    ok = make_response(req2, 200, to_tag="t2")
    assert _flags(layer.send_response(txn2, ok, 2.1)) == [("200", False)]
    assert _flags(layer.send_response(txn2, ok, 2.6)) == [("200", True)]

    # Non-INVITE server: 200, then the OPTIONS again → the 200 again.
    opt = stamp_via_received(request("OPTIONS", branch="z9hG4bK-o1", call_id="o1@x"), UAC)
    txn3 = next(e.server_txn for e in layer.receive(opt, UAC, 3.0) if isinstance(e, NewRequest))
    assert txn3 is not None
    assert _flags(layer.send_response(txn3, make_response(opt, 200, to_tag="t3"), 3.1)) == [
        ("200", False)]
    assert _flags(layer.receive(opt, UAC, 3.2)) == [("200", True)]


def test_gateway_outcomes_and_common_methods_are_served_at_zero_from_the_start() -> None:
    """rate()/increase() only see an increase from a series that existed before it: a
    gateway's first failures or first INVITE must not be the series' first sample."""
    registry = CollectorRegistry()
    m = SwitchMetrics(registry, "vc1")
    m.declare_gateways(["carrier1", "carrier2"])
    for g in ("carrier1", "carrier2"):
        for outcome in GATEWAY_OUTCOMES:
            assert registry.get_sample_value("voicecall_gateway_calls_total", {
                "node": "vc1", "gateway": g, "outcome": outcome}) == 0
    for method in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS"):
        for direction in ("in", "out"):
            assert registry.get_sample_value(f"voicecall_sip_requests_{direction}_total", {
                "node": "vc1", "method": method}) == 0
    m.gateway_call("carrier1", "busy")
    m.declare_gateways(["carrier1"])           # declaring again never resets a count
    assert registry.get_sample_value("voicecall_gateway_calls_total", {
        "node": "vc1", "gateway": "carrier1", "outcome": "busy"}) == 1
