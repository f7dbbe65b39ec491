"""Two nodes on one database (the cluster layout of architecture.md): the per-app concurrency
limit is shared, the CDR outbox is shared and each CDR is pushed once, and a request about a
call (callStop, its SIP trace) works through either node: the node that does not run the
call hands it to the one that does (control_api/cluster.py), and says so clearly when that
node is frozen, killed or stopped."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from control_api.cluster import FORWARD_TIMEOUT_S, FORWARDED_BY, NODE_HEADER, STALE_AFTER_S
from control_api.fake_backend import FakeScript
from tests.integration.control_api.conftest import Node, NodeFactory, write_prompts
from tests.integration.control_api.helpers import (
    ADMIN_TOKEN,
    APP_KEY,
    Receiver,
    aksk_headers,
    b64,
    free_port,
    node_toml,
)
from tests.integration.control_api.test_api import CB, STOP, cb_body, expect, post
from tests.paths import REPO

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def test_concurrency_limit_is_shared_between_nodes(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, max_calls=3, node_name="vc1")
    b = await make_node(script=long_call, max_calls=3, node_name="vc2")
    results = await asyncio.gather(*(post(n, CB, cb_body()) for n in (a, b, a, b, a, b)))
    codes = sorted(r.json()["resultcode"] for r in results)
    assert codes == ["0", "0", "0", "1020165", "1020165", "1020165"]
    sids = [r.json()["sessionId"] for r in results if r.json()["resultcode"] == "0"]
    assert {s.split("@")[1] for s in sids} <= {"vc1", "vc2"}
    # a call is stopped through the node that runs it; the freed port is usable on the other
    owner = a if sids[0].endswith("@vc1") else b
    other = b if owner is a else a
    expect(await post(owner, STOP, {"sessionid": sids[0], "signal": "call_stop"}), 200, "0")
    for _ in range(100):
        if await other.plane.store.in_use(APP_KEY) == 2:
            break
        await asyncio.sleep(0.05)
    expect(await post(other, CB, cb_body()), 200, "0")


async def test_shared_outbox_pushes_each_cdr_once(make_node: NodeFactory,
                                                  receiver: Receiver) -> None:
    a = await make_node(max_calls=100, node_name="vc1")
    b = await make_node(max_calls=100, node_name="vc2")
    body = cb_body(feeUrl=b64(receiver.url("/fee")))
    results = await asyncio.gather(*(post(n, CB, body) for n in [a, b] * 15))
    sids = {r.json()["sessionId"] for r in results}
    assert len(sids) == 30
    await receiver.wait_for(lambda: sum(len(r.body["feeLst"]) for r in receiver.on("/fee"))
                            >= 30, timeout=20)
    await asyncio.sleep(1.5)
    pushed = [f["sessionId"] for r in receiver.on("/fee") for f in r.body["feeLst"]]
    assert sorted(pushed) == sorted(sids)          # every CDR, none twice


async def test_call_stop_through_the_other_node(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, node_name="vc1")
    b = await make_node(script=long_call, node_name="vc2")
    sid = expect(await post(a, CB, cb_body()), 200, "0")["sessionId"]
    expect(await post(b, STOP, {"sessionid": sid, "signal": "call_stop"}), 200, "0")


def stop_body(sid: str) -> dict[str, str]:
    return {"sessionid": sid, "signal": "call_stop"}


async def wait_in_use(node: Node, n: int) -> None:
    for _ in range(200):
        if await node.plane.store.in_use(APP_KEY) == n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"in_use never reached {n}: {await node.plane.store.in_use(APP_KEY)}")


async def test_forwarded_stop_keeps_the_receiving_nodes_checks(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, node_name="vc1")
    b = await make_node(script=long_call, node_name="vc2")
    sid = expect(await post(a, CB, cb_body()), 200, "0")["sessionId"]
    # the client signs for the node it talks to; b checks the signature and the app itself
    expect(await post(b, STOP, stop_body(sid), headers=aksk_headers(secret="wrong")),
           401, "1010003")
    other = aksk_headers("other-app-key-02", "other-secret")
    expect(await post(b, STOP, stop_body(sid), headers=other), 404, "1010404")
    assert await a.plane.store.in_use(APP_KEY) == 1            # still running
    expect(await post(b, STOP, stop_body(sid)), 200, "0")
    await wait_in_use(b, 0)                  # a hung up, closed the call, released the port
    # ended: both nodes give the same answer
    ra, rb = await post(a, STOP, stop_body(sid)), await post(b, STOP, stop_body(sid))
    expect(rb, 404, "1010404")
    assert (ra.status_code, ra.json()) == (rb.status_code, rb.json())


async def test_admin_stop_and_nodes(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, node_name="vc1")
    b = await make_node(script=long_call, node_name="vc2")
    r = await b.http.get("/admin/v1/nodes", headers=ADMIN)
    nodes = {n["name"]: n for n in r.json()["nodes"]}
    assert {k: (v["api_url"], v["alive"]) for k, v in nodes.items()} == {
        "vc1": (a.url, True), "vc2": (b.url, True)}
    sid = expect(await post(a, CB, cb_body()), 200, "0")["sessionId"]
    path = f"/admin/v1/calls/{sid}/stop"
    assert (await b.http.post(path)).status_code == 401
    # a request that was already forwarded is never forwarded again
    r = await b.http.post(path, headers={**ADMIN, FORWARDED_BY: "vc1"})
    expect(r, 404, "1010404", "it runs on vc1")
    assert r.headers[NODE_HEADER] == "vc2"
    r = await b.http.post(path, headers=ADMIN)
    expect(r, 200, "0")
    await wait_in_use(a, 0)
    expect(await a.http.post(path, headers=ADMIN), 404, "1010404")


async def test_sip_trace_through_the_other_node(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, node_name="vc1")
    b = await make_node(script=long_call, node_name="vc2")
    sid = expect(await post(a, CB, cb_body()), 200, "0")["sessionId"]
    path = f"/admin/v1/calls/{sid}/sip-trace"

    async def stable(params: dict[str, str], headers: dict[str, str]) -> httpx.Response:
        """The owner's answer once two reads agree (the fake call is still signalling)."""
        last = await a.http.get(path, params=params, headers={**ADMIN, **headers})
        for _ in range(100):
            await asyncio.sleep(0.1)
            r = await a.http.get(path, params=params, headers={**ADMIN, **headers})
            if r.status_code == 200 and r.content == last.content:
                return r
            last = r
        raise AssertionError(f"trace never settled: {last.status_code} {last.text[:200]}")

    for params, headers, ctype in (({}, {}, "application/json"),
                                   ({"format": "ladder"}, {}, "text/plain"),
                                   ({}, {"Accept": "text/plain"}, "text/plain")):
        own = await stable(params, headers)
        via_b = await b.http.get(path, params=params, headers={**ADMIN, **headers})
        assert via_b.status_code == 200, via_b.text
        assert via_b.headers["content-type"].startswith(ctype)
        assert via_b.content == own.content
        assert via_b.headers[NODE_HEADER] == "vc1"
    assert (await b.http.get(path, headers=ADMIN)).json()["session_id"] == sid
    r = await b.http.get("/admin/v1/calls/nope@vc9/sip-trace", headers=ADMIN)
    expect(r, 404, "1010404", "no such session")


async def test_call_stop_after_the_owner_stopped(make_node: NodeFactory) -> None:
    long_call = lambda _r: FakeScript(talk_s=30)  # noqa: E731
    a = await make_node(script=long_call, node_name="vc1")
    b = await make_node(script=long_call, node_name="vc2")
    sid = expect(await post(a, CB, cb_body()), 200, "0")["sessionId"]
    await a.plane.stop()                      # heartbeat 0: no waiting for it to go stale
    expect(await post(b, STOP, stop_body(sid)), 404, "1010404", "vc1, which ran it, is down "
                                                                "(stopped)")


# -- the owner is a separate process: frozen, then killed ------------------------------------------

Spawn = Callable[[str, float], Awaitable[tuple[subprocess.Popen[bytes], str]]]


@pytest.fixture
async def spawn(tmp_path: Path, db_url: str) -> AsyncIterator[Spawn]:
    """A node process (tests/integration/control_api/node_proc.py) on the test's database."""
    procs: list[subprocess.Popen[bytes]] = []

    async def start(name: str, talk_s: float) -> tuple[subprocess.Popen[bytes], str]:
        data_dir = tmp_path / f"proc-{name}"
        write_prompts(data_dir)
        cfg = tmp_path / f"{name}.toml"
        cfg.write_text(node_toml(data_dir=str(data_dir), db_url=db_url, port=free_port(),
                                 node_name=name))
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.control_api.node_proc", str(cfg),
             str(talk_s)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.startswith(b"READY "), line
        return proc, line.split()[1].decode()

    yield start
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


async def timed_stop(node: Node, sid: str) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = await post(node, STOP, stop_body(sid))
    return r, time.monotonic() - t0


async def test_call_stop_when_the_owner_is_frozen_then_killed(make_node: NodeFactory,
                                                              spawn: Spawn) -> None:
    proc, owner_url = await spawn("vc1", 120.0)
    b = await make_node(node_name="vc2")
    async with httpx.AsyncClient(base_url=owner_url, timeout=10) as owner:
        sids = []
        for _ in range(2):
            r = await owner.post(CB, json=cb_body(), headers=aksk_headers())
            sids.append(expect(r, 200, "0")["sessionId"])
    # a separate owner process stops its call when asked through b
    expect(await post(b, STOP, stop_body(sids[0])), 200, "0")
    await wait_in_use(b, 1)

    # frozen (SIGSTOP): the kernel still accepts the connection, nobody answers. b gives up
    # after its forward timeout with a retryable 1010001: the call may still be running.
    os.kill(proc.pid, signal.SIGSTOP)
    r, took = await timed_stop(b, sids[1])
    expect(r, 500, "1010001", "node vc1, which runs the call, could not be reached")
    assert FORWARD_TIMEOUT_S - 0.5 <= took < FORWARD_TIMEOUT_S + 3, took

    # killed: connection refused, the same answer at once
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    r, took = await timed_stop(b, sids[1])
    expect(r, 500, "1010001", "retry later")
    assert took < 2.0, took

    # once its heartbeat is stale the node counts as down and its call as ended with it
    deadline = time.monotonic() + STALE_AFTER_S + 15
    while True:
        r, took = await timed_stop(b, sids[1])
        assert took < 2.0, took
        if r.status_code != 500 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    expect(r, 404, "1010404", "node vc1, which ran it, is down (no heartbeat for")
