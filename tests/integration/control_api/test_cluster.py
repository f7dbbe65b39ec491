"""Two nodes on one database (the cluster layout of architecture.md): the per-app concurrency
limit is shared, the CDR outbox is shared and each CDR is pushed once."""

from __future__ import annotations

import asyncio

import pytest

from control_api.fake_backend import FakeScript
from tests.integration.control_api.conftest import NodeFactory
from tests.integration.control_api.helpers import APP_KEY, Receiver, b64
from tests.integration.control_api.test_api import CB, STOP, cb_body, expect, post


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
