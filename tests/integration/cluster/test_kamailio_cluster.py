"""Cluster mode end to end (architecture.md "Growing past one machine"): two real daemons on
one throwaway PostgreSQL database behind Kamailio's dispatcher, run from
deploy/kamailio/kamailio.cfg itself.

* SIPp calls sent to Kamailio are spread round-robin over both nodes; each node bridges them
  (B2BUA) to the carrier gateway, a SIPp UAS that tells by the top Via which node sent
  each INVITE.
* The per-app concurrency limit holds across nodes (one shared count in PostgreSQL).
* A node killed with CDRs still undelivered: the survivor delivers them, once each; Kamailio
  fails calls over to the survivor at once (failure_route), then its OPTIONS probes mark the
  dead node inactive and every later call goes to the survivor."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

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

CALLED = "+8613900000022"     # what the SIPp caller dials: [[routes]] "+8613" → carrier
CALLER = "+8613800000011"     # click2Call party A, also on the carrier
CALLEE = "+8613700000033"     # click2Call party B, also on the carrier
BUSY = "+8615000000044"       # [[routes]] "+8615" → a gateway that answers 486
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

    async def in_use(self) -> int:
        async with httpx.AsyncClient(timeout=15) as c:
            r = await c.get(f"http://127.0.0.1:{self.api_port}/admin/v1/apps/{APP_KEY}",
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
        return int(r.json()["in_use"])


@dataclass
class Cluster:
    workdir: Path
    db_url: str
    receiver: Receiver
    nodes: list[ClusterNode] = field(default_factory=list)
    kamailio: Kamailio | None = None
    peers: list[Sipp] = field(default_factory=list)
    _ports: set[int] = field(default_factory=set)
    kamailio_port: int = field(init=False)
    carrier_port: int = field(init=False)
    busy_port: int = field(init=False)

    def __post_init__(self) -> None:
        self.kamailio_port = self.port()
        self.carrier_port = self.port()
        self.busy_port = self.port()

    def port(self) -> int:
        """A free port (and port+1) not near any port handed out before: ``free_port`` may
        return the same port twice in a row, and SIPp's ``-mp`` takes a few ports upwards."""
        for _ in range(100):
            p = free_port()
            if all(abs(p - u) > 4 for u in self._ports):
                self._ports.add(p)
                return p
        raise RuntimeError("no free port")

    def node_config(self, name: str, sip_port: int, api_port: int, max_calls: int) -> str:
        data_dir = self.workdir / name
        write_prompts(data_dir)
        text = node_toml(data_dir=str(data_dir), db_url=self.db_url, port=api_port,
                         node_name=name, max_calls=max_calls, record=False,
                         fee_url=self.receiver.url("/fee"), extra=f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertise = "127.0.0.1"
no_answer_timeout_s = 10

# The dispatcher: INVITEs it relays come from its listening socket (trusted as a gateway).
[[gateways]]
name = "dispatcher"
address = "udp:127.0.0.1:{self.kamailio_port}"
ping_interval_s = 0

[[gateways]]
name = "carrier"
address = "udp:127.0.0.1:{self.carrier_port}"
ping_interval_s = 0

[[gateways]]
name = "busy"
address = "udp:127.0.0.1:{self.busy_port}"
ping_interval_s = 0

[[routes]]
prefix = "+8613"
gateways = ["carrier"]

[[routes]]
prefix = "+8615"
gateways = ["busy"]
""")
        # CDR retries: often and many, so undelivered CDRs outlive the node that made them.
        text = text.replace("cdr_retry_interval_s = 0.5", "cdr_retry_interval_s = 1.0")
        return text.replace("cdr_max_retries = 2", "cdr_max_retries = 60")

    def start_node(self, name: str, max_calls: int = 100) -> ClusterNode:
        error = ""
        for _ in range(4):      # another test may take a free port before the daemon binds it
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

    def start_kamailio(self) -> Kamailio:
        self.kamailio = Kamailio(self.workdir, self.kamailio_port,
                                 [n.sip_port for n in self.nodes]).start()
        return self.kamailio

    def carrier(self, calls: int, scenario: str | Path = "uas_basic.xml",
                port: int | None = None) -> Sipp:
        p = uas(self.workdir, scenario, port=port or self.carrier_port, calls=calls,
                extra=("-mp", str(self.port())), timeout_s=90)
        self.peers.append(p)
        return p.start()

    def callers(self, calls: int, rate: int = 10) -> Sipp:
        p = uac(self.workdir, "uac_basic.xml", f"127.0.0.1:{self.kamailio_port}",
                port=self.port(), service=CALLED, calls=calls,
                extra=("-r", str(rate), "-l", str(calls), "-d", "500",
                       "-mp", str(self.port())), timeout_s=90)
        self.peers.append(p)
        return p.start()

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


async def run_batch(c: Cluster, calls: int) -> dict[int, set[str]]:
    """``calls`` SIPp calls to Kamailio, each bridged by a node to the carrier; every one must
    succeed on both sides. Returns the carrier's INVITEs by node SIP port."""
    carrier = c.carrier(calls)
    await asyncio.sleep(0.3)
    callers = c.callers(calls)
    rc = await wait_sipp(callers)
    if not rc.ok:
        carrier.stop()
        raise AssertionError(rc.explain() + c.logs())
    rg = await wait_sipp(carrier)
    assert rg.ok, rg.explain() + c.logs()
    by_node = invites_by_node(rg)
    assert sum(len(v) for v in by_node.values()) == calls, by_node
    return by_node


def fees(receiver: Receiver, start: int = 0) -> list[dict[str, Any]]:
    return [f for r in receiver.requests[start:] if r.path == "/fee"
            for f in (r.body.get("feeLst", []) if isinstance(r.body, dict) else [])]


async def test_dispatcher_spreads_calls_and_survives_a_node(cluster: Cluster,
                                                            receiver: Receiver) -> None:
    n1 = cluster.start_node("vc1")
    n2 = cluster.start_node("vc2")
    kam = cluster.start_kamailio()
    # Both nodes answer the OPTIONS probes: active.
    kam.wait_flags(n1.sip_port, "A")
    kam.wait_flags(n2.sip_port, "A")
    await asyncio.sleep(2.5)       # a few probe rounds: a probe failure would show now
    assert kam.flags_of(n1.sip_port).startswith("A") and kam.flags_of(n2.sip_port).startswith("A")

    # 1. Round-robin over both nodes, every call bridged to the carrier and back.
    by_node = await run_batch(cluster, 20)
    assert set(by_node) == {n1.sip_port, n2.sip_port}, by_node
    assert abs(len(by_node[n1.sip_port]) - len(by_node[n2.sip_port])) <= 2, by_node

    # 2. vc2 makes CDRs the receiver refuses (HTTP 500): they stay in the shared outbox.
    receiver.modes["/fee"] = "fail"
    busy = cluster.carrier(3, Uas("busy").reject(486, "Busy Here").write(cluster.workdir),
                           port=cluster.busy_port)
    sids = []
    for _ in range(3):
        r = await n2.post(CB, cb_body(callerNbr=BUSY, calleeNbr=CALLEE))
        assert r["resultcode"] == "0", r
        assert r["sessionId"].endswith("@vc2"), r
        sids.append(r["sessionId"])
    rb = await wait_sipp(busy)
    assert rb.ok, rb.explain() + cluster.logs()
    await receiver.wait_for(lambda: {f["sessionId"] for f in fees(receiver)} >= set(sids),
                            timeout=30)
    assert all(f["hostName"] == "vc2" for f in fees(receiver))

    # 3. vc2 dies (SIGKILL: no clean hand-back of anything it holds).
    os.kill(n2.pid, signal.SIGKILL)
    assert n2.daemon.proc is not None
    await asyncio.to_thread(n2.daemon.proc.wait, 10)
    receiver.modes["/fee"] = "ok"
    delivered_from = len(receiver.requests)    # answered 200 from here on (same loop)

    # 4. Calls right away: those Kamailio still gives to vc2 time out there (fr_timer) and
    #    fail over to vc1 — no call fails, every one is bridged by vc1.
    by_node = await run_batch(cluster, 10)
    assert set(by_node) == {n1.sip_port}, by_node
    assert "failover INVITE" in kam.log(), kam.log()[-3000:]
    # vc2 is out of rotation (marked by the failover or by its failed OPTIONS probes) and
    # stays out: probes go on failing.
    flags = kam.wait_flags(n2.sip_port, "I")
    assert "P" in flags, flags
    assert kam.flags_of(n1.sip_port).startswith("A")

    # 5. Another batch: all on the survivor, no failures.
    by_node = await run_batch(cluster, 20)
    assert set(by_node) == {n1.sip_port}, by_node

    # 6. vc1 delivered vc2's parked CDRs, each exactly once.
    await receiver.wait_for(
        lambda: {f["sessionId"] for f in fees(receiver, delivered_from)} >= set(sids),
        timeout=30)
    await asyncio.sleep(3.0)       # a duplicate (another lease, a retry) would arrive now
    delivered = sorted(f["sessionId"] for f in fees(receiver, delivered_from))
    assert delivered == sorted(sids), delivered
    assert all(f["hostName"] == "vc2" for f in fees(receiver, delivered_from))


async def test_concurrency_limit_holds_across_real_nodes(cluster: Cluster,
                                                         receiver: Receiver) -> None:
    n1 = cluster.start_node("vc1", max_calls=1)
    n2 = cluster.start_node("vc2", max_calls=1)
    # The carrier answers both legs of two callbacks and holds them until our BYE.
    carrier = cluster.carrier(4)
    body = cb_body(callerNbr=CALLER, calleeNbr=CALLEE)
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
    rg = await wait_sipp(carrier, 60)
    assert rg.ok, rg.explain() + cluster.logs()
    by_node = invites_by_node(rg)
    assert {p: len(v) for p, v in by_node.items()} == {n1.sip_port: 2, n2.sip_port: 2}
