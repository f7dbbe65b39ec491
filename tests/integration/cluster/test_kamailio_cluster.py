"""Cluster mode end to end (architecture.md "Growing past one machine"): two real daemons on
one throwaway PostgreSQL database behind Kamailio's dispatcher, run from
deploy/kamailio/kamailio.cfg itself.

* SIPp calls sent to Kamailio are spread round-robin over both nodes; each node bridges them
  (B2BUA) to the carrier gateway, a SIPp UAS that tells by the top Via which node sent
  each INVITE.
* The per-app concurrency limit holds across nodes (one shared count in PostgreSQL).
* A node killed with CDRs still undelivered: the survivor delivers them, once each; Kamailio
  fails calls over to the survivor at once (failure_route), then its OPTIONS probes mark the
  dead node inactive and every later call goes to the survivor.
* A destination answering INVITEs with 503 is skipped call by call (failure_route); CANCEL
  goes through the proxy to the node that has the INVITE.
* The proxy's own checks (Max-Forwards, methods, stray in-dialog requests, no node left)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cluster.kamailio import Kamailio
from tests.integration.control_api.conftest import pg_url, write_prompts  # noqa: F401
from tests.integration.control_api.helpers import (
    ADMIN_TOKEN,
    APP_KEY,
    Receiver,
    aksk_headers,
    node_toml,
)
from tests.integration.control_api.test_api import CB, STOP, cb_body
from tests.integration.harness import Daemon, Sipp, SippResult, free_port, uac, uas
from tests.integration.services.scen import Uas

pytestmark = pytest.mark.integration

CONCURRENCY = "1020165"


@dataclass
class ClusterNode:
    name: str
    daemon: Daemon
    sip_port: int
    api_port: int

    @property
    def pid(self) -> int:
        assert self.daemon.proc is not None
        return self.daemon.proc.pid

    async def post(self, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.post(f"http://127.0.0.1:{self.api_port}{path}", json=body,
                             headers=aksk_headers())
        assert r.status_code == status, r.text
        return dict(r.json())

    async def metric(self, name: str, **labels: str) -> float:
        """One sample of the node's GET /metrics (0 when the series does not exist yet)."""
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.get(f"http://127.0.0.1:{self.api_port}/metrics")
        assert r.status_code == 200, r.text
        for family in text_string_to_metric_families(r.text):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return 0.0

    async def in_use(self) -> int:
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.get(f"http://127.0.0.1:{self.api_port}/admin/v1/apps/{APP_KEY}",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
        return int(r.json()["in_use"])


@dataclass
class Gateway:
    """A SIPp UAS the nodes route ``prefix`` to, running from the start of the test (its
    port is in the nodes' configuration) until it has taken ``calls`` calls."""

    name: str
    prefix: str
    sipp: Sipp

    @property
    def port(self) -> int:
        return self.sipp.port

    def number(self, suffix: str = "0000022") -> str:
        return self.prefix + suffix

    async def result(self, timeout: float = 120.0) -> SippResult:
        return await wait_sipp(self.sipp, timeout)


@dataclass
class Cluster:
    """Gateways first, then Kamailio, then the nodes (each started on ports it could
    actually bind; tests of other areas take ports on this machine too), then the
    dispatcher list is pointed at the nodes' real ports."""

    workdir: Path
    db_url: str
    receiver: Receiver
    nodes: list[ClusterNode] = field(default_factory=list)
    gateways: list[Gateway] = field(default_factory=list)
    kamailio: Kamailio | None = None
    peers: list[Sipp] = field(default_factory=list)
    _ports: set[int] = field(default_factory=set)

    def port(self) -> int:
        """A free port (and port+1) not near any port handed out before: ``free_port`` may
        return the same port twice in a row, and SIPp's ``-mp`` takes a few ports upwards."""
        for _ in range(100):
            p = free_port()
            if all(abs(p - u) > 4 for u in self._ports):
                self._ports.add(p)
                return p
        raise RuntimeError("no free port")

    def start_sipp(self, make: Callable[[int, int], Sipp]) -> Sipp:
        """Start ``make(port, media_port)``; on a bind failure, again on other ports."""
        error = ""
        for _ in range(5):
            p = make(self.port(), self.port())
            p.start()
            self.peers.append(p)
            time.sleep(0.3)
            errors = p.err_file.read_text(errors="replace") if p.err_file.exists() else ""
            if p.proc is None or p.proc.poll() is None or "Unable to bind" not in errors:
                return p           # running, or failed otherwise: the caller's wait tells
            error = p.wait(5).explain()
        raise RuntimeError(f"SIPp could not bind a port: {error}")

    def gateway(self, name: str, prefix: str, calls: int,
                scenario: str | Path = "uas_basic.xml") -> Gateway:
        assert not self.nodes, "gateways are in the nodes' configuration: add them first"
        sipp = self.start_sipp(lambda port, mp: uas(
            self.workdir, scenario, port=port, calls=calls, extra=("-mp", str(mp)),
            timeout_s=240))
        gw = Gateway(name, prefix, sipp)
        self.gateways.append(gw)
        return gw

    def node_config(self, name: str, sip_port: int, api_port: int, max_calls: int) -> str:
        data_dir = self.workdir / name
        write_prompts(data_dir)
        tables = "".join(f"""
[[gateways]]
name = "{g.name}"
address = "udp:127.0.0.1:{g.port}"
ping_interval_s = 0

[[routes]]
prefix = "{g.prefix}"
gateways = ["{g.name}"]
""" for g in self.gateways)
        if self.kamailio is not None:
            # The dispatcher: what it relays comes from its listening socket, trusted as a
            # gateway (exact host:port).
            tables += f"""
[[gateways]]
name = "dispatcher"
address = "udp:127.0.0.1:{self.kamailio.port}"
ping_interval_s = 0
"""
        text = node_toml(data_dir=str(data_dir), db_url=self.db_url, port=api_port,
                         node_name=name, max_calls=max_calls, record=False,
                         fee_url=self.receiver.url("/fee"), extra=f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertise = "127.0.0.1"
no_answer_timeout_s = 10
{tables}""")
        # CDR retries: often and many, so undelivered CDRs outlive the node that made them.
        text = text.replace("cdr_retry_interval_s = 0.5", "cdr_retry_interval_s = 1.0")
        return text.replace("cdr_max_retries = 2", "cdr_max_retries = 60")

    def start_node(self, name: str, max_calls: int = 100) -> ClusterNode:
        error = ""
        for _ in range(4):
            sip_port, api_port = self.port(), self.port()
            workdir = self.workdir / f"run-{name}"
            workdir.mkdir(exist_ok=True)
            d = Daemon(self.node_config(name, sip_port, api_port, max_calls), workdir)
            try:
                d.start(timeout=30)
            except RuntimeError as e:
                error = str(e)
                if "in use" in error.lower() or "cannot start" in error:
                    continue
                raise
            node = ClusterNode(name, d, sip_port, api_port)
            self.nodes.append(node)
            return node
        raise RuntimeError(f"node {name} did not start: {error}")

    def start_kamailio(self, nodes: int, tcp: bool = False) -> Kamailio:
        """Kamailio before the nodes (they trust its address); its list is pointed at the
        nodes with :meth:`Kamailio.set_nodes` once they run."""
        error = ""
        for _ in range(4):
            k = Kamailio(self.workdir, self.port(), [self.port() for _ in range(nodes)],
                         tcp_port=self.port() if tcp else None)
            try:
                self.kamailio = k.start()
                return k
            except RuntimeError as e:
                error = str(e)
                if "already in use" not in error:
                    raise
        raise RuntimeError(f"kamailio did not start: {error}")

    def callers(self, service: str, calls: int, rate: int = 10, tcp: bool = False) -> Sipp:
        assert self.kamailio is not None
        kport = self.kamailio.tcp_port if tcp else self.kamailio.port
        assert kport is not None, "start_kamailio(tcp=True) for TCP callers"
        return self.start_sipp(lambda port, mp: uac(
            self.workdir, "uac_basic.xml", f"127.0.0.1:{kport}", port=port, service=service,
            calls=calls, transport="t1" if tcp else "u1",
            extra=("-r", str(rate), "-l", str(calls), "-d", "500", "-mp", str(mp)),
            timeout_s=90))

    def logs(self) -> str:
        out = [f"=== {n.name} ===\n{n.daemon.drain()[-3000:]}" for n in self.nodes]
        if self.kamailio is not None:
            out.append(f"=== kamailio ===\n{self.kamailio.log()[-3000:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.peers:
            p.stop()
        if self.kamailio is not None:
            self.kamailio.stop()
        for n in self.nodes:
            n.daemon.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, receiver: Receiver) -> Iterator[Cluster]:  # noqa: F811
    c = Cluster(tmp_path, pg_url, receiver)
    try:
        yield c
    finally:
        c.stop()
        (tmp_path / "cluster.log").write_text(c.logs())     # kept for post-mortems


async def wait_sipp(p: Sipp, timeout: float = 120.0) -> SippResult:
    return await asyncio.to_thread(p.wait, timeout)


def invites_by_node(uas_result: SippResult) -> dict[int, set[str]]:
    """Call-IDs of the INVITEs the UAS received, by the port in their top Via (the node that
    sent them); retransmissions count once."""
    out: dict[int, set[str]] = {}
    for block in uas_result.messages.split("\n-----------------------------------------------"):
        _, _, msg = block.partition("message received")
        if not msg:
            continue
        lines = msg.split("\n", 3)
        if len(lines) < 3 or not lines[2].startswith("INVITE "):
            continue
        via = re.search(r"(?im)^(?:via|v)\s*:\s*SIP/2\.0/UDP\s+127\.0\.0\.1:(\d+)", msg)
        cid = re.search(r"(?im)^(?:call-id|i)\s*:\s*(\S+)", msg)
        assert via is not None and cid is not None, msg[:600]
        out.setdefault(int(via.group(1)), set()).add(cid.group(1))
    return out


async def run_batch(c: Cluster, gw: Gateway, calls: int) -> dict[int, set[str]]:
    """``calls`` SIPp calls to Kamailio for ``gw``'s numbers, each bridged by a node to
    ``gw``; every one must succeed on both sides. Returns ``gw``'s INVITEs by node SIP port."""
    callers = c.callers(gw.number(), calls)
    rc = await wait_sipp(callers)
    if not rc.ok:
        gw.sipp.stop()
        raise AssertionError(rc.explain() + c.logs())
    rg = await gw.result()
    assert rg.ok, rg.explain() + c.logs()
    # In-dialog requests went through the proxy: the 200s carried its Record-Route and the
    # caller's ACK and BYE its Route (loose_route relayed them to the node of the call).
    assert c.kamailio is not None
    proxy = re.escape(f"<sip:127.0.0.1:{c.kamailio.port};lr")
    assert rc.count(rf"(?m)^Record-Route: {proxy}") >= calls, rc.messages[-3000:]
    assert rc.count(rf"(?m)^Route: {proxy}") >= 2 * calls, rc.messages[-3000:]
    by_node = invites_by_node(rg)
    assert sum(len(v) for v in by_node.values()) == calls, by_node
    return by_node


def fees(receiver: Receiver, start: int = 0) -> list[dict[str, Any]]:
    return [f for r in receiver.requests[start:] if r.path == "/fee"
            for f in (r.body.get("feeLst", []) if isinstance(r.body, dict) else [])]


@pytest.mark.timeout(300)   # four SIPp batches, a node death, fr_timer failovers: slow under load
async def test_dispatcher_spreads_calls_and_survives_a_node(cluster: Cluster,
                                                            receiver: Receiver) -> None:
    batch1 = cluster.gateway("carrier1", "+861391", 20)
    batch2 = cluster.gateway("carrier2", "+861392", 10)
    batch3 = cluster.gateway("carrier3", "+861393", 20)
    busy = cluster.gateway("busy", "+861500", 3,
                           Uas("busy").reject(486, "Busy Here").write(cluster.workdir))
    kam = cluster.start_kamailio(nodes=2)
    n1 = cluster.start_node("vc1")
    n2 = cluster.start_node("vc2")
    kam.set_nodes([n1.sip_port, n2.sip_port])
    # Both nodes answer the OPTIONS probes: active.
    kam.wait_flags(n1.sip_port, "A")
    kam.wait_flags(n2.sip_port, "A")
    await asyncio.sleep(2.5)       # a few probe rounds: a probe failure would show now
    assert kam.flags_of(n1.sip_port).startswith("A") and kam.flags_of(n2.sip_port).startswith("A")

    # 1. Round-robin over both nodes, every call bridged to the carrier and back.
    by_node = await run_batch(cluster, batch1, 20)
    assert set(by_node) == {n1.sip_port, n2.sip_port}, by_node
    assert abs(len(by_node[n1.sip_port]) - len(by_node[n2.sip_port])) <= 2, by_node
    # Each node's own count agrees (retransmissions from the proxy may add to it), and
    # both answered the proxy's OPTIONS probes.
    for n in (n1, n2):
        invites = await n.metric("voicecall_sip_requests_in_total", method="INVITE")
        assert invites >= len(by_node[n.sip_port]), (n.name, invites, by_node)
        assert await n.metric("voicecall_sip_requests_in_total", method="OPTIONS") >= 2

    # 2. vc2 makes CDRs the receiver refuses (HTTP 500): they stay in the shared outbox.
    receiver.modes["/fee"] = "fail"
    sids = []
    for _ in range(3):
        r = await n2.post(CB, cb_body(callerNbr=busy.number(), calleeNbr=batch1.number()))
        assert r["resultcode"] == "0", r
        assert r["sessionId"].endswith("@vc2"), r
        sids.append(r["sessionId"])
    rb = await busy.result()
    assert rb.ok, rb.explain() + cluster.logs()
    await receiver.wait_for(lambda: {f["sessionId"] for f in fees(receiver)} >= set(sids),
                            timeout=30)
    assert all(f["hostName"] == "vc2" for f in fees(receiver))

    # 3. vc2 dies (SIGKILL: no clean hand-back of anything it holds).
    os.kill(n2.pid, signal.SIGKILL)
    assert n2.daemon.proc is not None
    await asyncio.to_thread(n2.daemon.proc.wait, 10)
    # A POST vc2 sent just before dying is still answered 500 (it could not record a 200).
    await asyncio.sleep(0.5)
    receiver.modes["/fee"] = "ok"
    delivered_from = len(receiver.requests)    # answered 200 from here on (same loop)

    # 4. Calls right away: those Kamailio still gives to vc2 time out there (fr_timer) and
    #    fail over to vc1 — no call fails, every one is bridged by vc1.
    by_node = await run_batch(cluster, batch2, 10)
    assert set(by_node) == {n1.sip_port}, by_node
    assert "failover INVITE" in kam.log(), kam.log()[-3000:]
    # vc2 is out of rotation (marked by the failover or by its failed OPTIONS probes) and
    # stays out: probes go on failing.
    flags = kam.wait_flags(n2.sip_port, "I")
    assert "P" in flags, flags
    assert kam.flags_of(n1.sip_port).startswith("A")

    # 5. Another batch: all on the survivor, no failures.
    by_node = await run_batch(cluster, batch3, 20)
    assert set(by_node) == {n1.sip_port}, by_node

    # 6. vc1 delivered vc2's parked CDRs, each exactly once.
    await receiver.wait_for(
        lambda: {f["sessionId"] for f in fees(receiver, delivered_from)} >= set(sids),
        timeout=30)
    await asyncio.sleep(3.0)       # a duplicate (another lease, a retry) would arrive now
    delivered = sorted(f["sessionId"] for f in fees(receiver, delivered_from))
    assert delivered == sorted(sids), delivered
    assert all(f["hostName"] == "vc2" for f in fees(receiver, delivered_from))


async def test_concurrency_limit_holds_across_real_nodes(cluster: Cluster) -> None:
    # The carrier answers both legs of two callbacks and holds them until our BYE.
    carrier = cluster.gateway("carrier", "+861391", 4)
    n1 = cluster.start_node("vc1", max_calls=1)
    n2 = cluster.start_node("vc2", max_calls=1)
    body = cb_body(callerNbr=carrier.number("0000011"), calleeNbr=carrier.number("0000022"))
    first = await n1.post(CB, body)
    assert first["resultcode"] == "0", first
    sid1 = first["sessionId"]
    assert sid1.endswith("@vc1")
    # The one slot of the app is taken on vc1: vc2 refuses.
    refused = await n2.post(CB, body, 403)
    assert refused["resultcode"] == CONCURRENCY, refused
    assert await n2.in_use() == 1
    # Let the first call get going (A answers, then B is called and answers) before ending it.
    await asyncio.sleep(3.0)
    stop = await n1.post(STOP, {"sessionid": sid1, "signal": "call_stop"})
    assert stop["resultcode"] == "0", stop
    for _ in range(150):
        if await n2.in_use() == 0:
            break
        await asyncio.sleep(0.1)
    assert await n2.in_use() == 0
    second = await n2.post(CB, body)
    assert second["resultcode"] == "0", second
    sid2 = second["sessionId"]
    assert sid2.endswith("@vc2")
    assert (await n1.post(CB, body, 403))["resultcode"] == CONCURRENCY
    await asyncio.sleep(3.0)
    stop = await n2.post(STOP, {"sessionid": sid2, "signal": "call_stop"})
    assert stop["resultcode"] == "0", stop
    rg = await carrier.result(60)
    assert rg.ok, rg.explain() + cluster.logs()
    by_node = invites_by_node(rg)
    assert {p: len(v) for p, v in by_node.items()} == {n1.sip_port: 2, n2.sip_port: 2}


async def test_dispatcher_fails_over_on_503_and_relays_cancel(cluster: Cluster) -> None:
    """A destination that is up (answers OPTIONS) but refuses INVITEs with 503 — a broken or
    overloaded node, played by SIPp — is taken out of rotation and each call it refuses goes
    to the real node; the caller sees no failure. CANCELs reach the node that has the
    INVITE, which cancels its outbound leg."""
    carrier = cluster.gateway("carrier", "+861391", 8)
    ringing = cluster.gateway("ringing", "+861394", 3,
                              Uas("ringing").ring().until_cancel().write(cluster.workdir))
    broken_scenario = Uas("broken").reject(503, "Service Unavailable").write(cluster.workdir)
    # -aa: SIPp answers the OPTIONS probes itself, so only the 503s can take it out.
    broken = cluster.start_sipp(lambda port, mp: uas(
        cluster.workdir, broken_scenario, port=port, calls=1000,
        extra=("-aa", "-mp", str(mp)), timeout_s=240))
    kam = cluster.start_kamailio(nodes=2)
    n1 = cluster.start_node("vc1")
    kam.set_nodes([broken.port, n1.sip_port])
    kam.wait_flags(broken.port, "A")
    kam.wait_flags(n1.sip_port, "A")

    by_node = await run_batch(cluster, carrier, 8)
    assert set(by_node) == {n1.sip_port}, by_node
    refused = re.findall(rf"node sip:127\.0\.0\.1:{broken.port} failed \(503\)", kam.log())
    assert refused, kam.log()[-3000:]
    # Every one of them failed over to vc1 (a refused call is not passed back to the caller).
    assert kam.log().count("failover INVITE") >= len(refused)

    cancels = cluster.start_sipp(lambda port, mp: uac(
        cluster.workdir, "uac_cancel.xml", f"127.0.0.1:{kam.port}", port=port,
        service=ringing.number(), calls=3, extra=("-r", "2", "-mp", str(mp)), timeout_s=90))
    rc = await wait_sipp(cancels)
    assert rc.ok, rc.explain() + cluster.logs()
    rg = await ringing.result()
    assert rg.ok, rg.explain() + cluster.logs()
    assert set(invites_by_node(rg)) == {n1.sip_port}


def sip_exchange(kamailio_port: int, method: str, ruri: str = "", *, max_forwards: int = 70,
                 to_tag: str = "", timeout: float = 15.0) -> str:
    """Send one request to Kamailio from a UDP socket; return the first final response."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        ruri = ruri or f"sip:127.0.0.1:{kamailio_port}"
        tag = f";tag={to_tag}" if to_tag else ""
        msg = (f"{method} {ruri} SIP/2.0\r\n"
               f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
               f"Max-Forwards: {max_forwards}\r\n"
               f"From: <sip:probe@127.0.0.1:{port}>;tag=t{uuid.uuid4().hex[:8]}\r\n"
               f"To: <{ruri}>{tag}\r\nCall-ID: {uuid.uuid4().hex}@127.0.0.1\r\n"
               f"CSeq: 1 {method}\r\nContact: <sip:probe@127.0.0.1:{port}>\r\n"
               "Content-Length: 0\r\n\r\n")
        s.sendto(msg.encode(), ("127.0.0.1", kamailio_port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            data = s.recv(65535).decode(errors="replace")
            if not re.match(r"SIP/2\.0 1\d\d ", data):
                return data
    raise AssertionError(f"no final response to {method}")


def test_proxy_checks_without_nodes(tmp_path: Path) -> None:
    """The request checks of kamailio.cfg on their own, with destinations that never answer."""
    kam = Kamailio(tmp_path, free_port(), [free_port(), free_port()]).start()
    number = "sip:+8613900000001@127.0.0.1"
    try:
        assert sip_exchange(kam.port, "OPTIONS").startswith("SIP/2.0 200 ")
        assert sip_exchange(kam.port, "INVITE", number, max_forwards=0).startswith("SIP/2.0 483 ")
        reply = sip_exchange(kam.port, "MESSAGE", number)
        assert reply.startswith("SIP/2.0 405 ") and "Allow: INVITE" in reply, reply
        # In-dialog (To tag) without the proxy's Route: not a dialog it record-routed.
        assert sip_exchange(kam.port, "BYE", number, to_tag="abc").startswith("SIP/2.0 404 ")
        # Neither node answers: each is tried for fr_timer and marked inactive, then 503.
        reply = sip_exchange(kam.port, "INVITE", number, timeout=20)
        assert reply.startswith("SIP/2.0 503 No voicecall node available"), reply
        assert all(f.startswith("I") for f in kam.targets().values()), kam.targets()
        # Nobody active: refused at once.
        started = time.monotonic()
        reply = sip_exchange(kam.port, "INVITE", number, timeout=5)
        assert reply.startswith("SIP/2.0 503 No voicecall node available"), reply
        assert time.monotonic() - started < 1.5
    finally:
        kam.stop()


async def test_tcp_callers_reach_udp_nodes(cluster: Cluster) -> None:
    """Callers on TCP (one connection, as SIPp's t1 and most SBCs do) reach the nodes over
    UDP: the proxy double-record-routes (a TCP and a UDP entry), so the caller's ACK and
    BYE come back over TCP and are relayed to the node that took the call."""
    gw = cluster.gateway("carrier", "+861394", 6)
    kam = cluster.start_kamailio(nodes=2, tcp=True)
    n1 = cluster.start_node("vc1")
    n2 = cluster.start_node("vc2")
    kam.set_nodes([n1.sip_port, n2.sip_port])
    kam.wait_flags(n1.sip_port, "A")
    kam.wait_flags(n2.sip_port, "A")
    callers = cluster.callers(gw.number(), 6, rate=5, tcp=True)
    rc = await wait_sipp(callers)
    if not rc.ok:
        gw.sipp.stop()
        raise AssertionError(rc.explain() + cluster.logs())
    rg = await gw.result()
    assert rg.ok, rg.explain() + cluster.logs()
    assert kam.tcp_port is not None
    # Double Record-Route: the TCP side (towards the caller) and the UDP side (the nodes).
    tcp_rr = re.escape(f"<sip:127.0.0.1:{kam.tcp_port};transport=tcp;r2=on;lr")
    udp_rr = re.escape(f"<sip:127.0.0.1:{kam.port};r2=on;lr")
    assert rc.count(rf"(?m)^Record-Route: {tcp_rr}") >= 6, rc.messages[-3000:]
    assert rc.count(rf"(?m)^Record-Route: {udp_rr}") >= 6, rc.messages[-3000:]
    assert rc.count(rf"(?m)^Route: {tcp_rr}.*{udp_rr}") >= 12, rc.messages[-3000:]
    by_node = invites_by_node(rg)
    assert set(by_node) == {n1.sip_port, n2.sip_port}, by_node
    assert sum(len(v) for v in by_node.values()) == 6, by_node
    for n in (n1, n2):
        byes = await n.metric("voicecall_sip_requests_in_total", method="BYE")
        assert byes == len(by_node[n.sip_port]), (n.name, byes, by_node)
