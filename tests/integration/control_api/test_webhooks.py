"""Status pushes and the CDR outbox against a real HTTP receiver that succeeds, fails, hangs and
recovers (EV-1..EV-5), recordings end to end (REC-3..5)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from control_api.fake_backend import FakeScript
from tests.integration.control_api.conftest import Node, NodeFactory
from tests.integration.control_api.helpers import (
    ADMIN_TOKEN,
    APP_KEY,
    APP_SECRET,
    Receiver,
    aksk_headers,
    b64,
    verify_push_signature,
)
from tests.integration.control_api.test_api import CB, NOTIFY, RECORD, cb_body, expect, post

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")


def urls(rx: Receiver, status: str = "/status", fee: str = "/fee") -> dict[str, str]:
    return {"statusUrl": b64(rx.url(status)), "feeUrl": b64(rx.url(fee))}


async def deliveries(node: Node, kind: str) -> dict[str, float]:
    """voicecall_webhook_deliveries_total of ``kind`` by result, from GET /metrics (every
    result is exposed from the start, so a missing one is a failure)."""
    text = (await node.http.get("/metrics")).text
    out: dict[str, float] = {}
    for result in ("ok", "http_error", "timeout", "error"):
        series = (f'voicecall_webhook_deliveries_total{{kind="{kind}",node="vc1",'
                  f'result="{result}"}} ')
        line = next(ln for ln in text.splitlines() if ln.startswith(series))
        out[result] = float(line[len(series):])
    return out


async def test_callback_status_sequence_and_cdr(make_node: NodeFactory, receiver: Receiver
                                                ) -> None:
    node = await make_node()
    body = cb_body(userData="order-42", partyTypeRequiredInDisconnect="true", **urls(receiver))
    sid = expect(await post(node, CB, body), 200, "0")["sessionId"]
    await receiver.wait_for(lambda: len(receiver.on("/status")) == 8 and receiver.on("/fee"))
    events = [(r.body["eventType"], r.body["statusInfo"]) for r in receiver.on("/status")]
    assert [e for e, _ in events] == ["callout", "alerting", "answer", "callout", "alerting",
                                      "answer", "disconnect", "disconnect"]
    for _kind, info in events:
        assert info["sessionId"] == sid and info["userData"] == "order-42"
        assert TS_RE.match(info["timestamp"])
    assert (events[0][1]["caller"], events[0][1]["called"]) == ("+8675500000001",
                                                                "+8613800000001")
    assert (events[3][1]["caller"], events[3][1]["called"]) == ("+8675500000002",
                                                                "+8613800000002")
    disc = events[6][1]
    assert disc["stateCode"] == 0 and disc["stateDesc"] and disc["partyType"] == "0"
    for r in receiver.requests:
        assert r.headers["content-type"].startswith("application/json")
        assert verify_push_signature(r.headers, receiver.url(r.path), APP_KEY, APP_SECRET)
    fee = receiver.on("/fee")[0].body
    assert fee["eventType"] == "fee" and len(fee["feeLst"]) == 1
    info = fee["feeLst"][0]
    assert info["sessionId"] == sid and info["appKey"] == APP_KEY and info["spId"] == "sp1"
    assert info["serviceType"] == "002" and info["userData"] == "order-42"
    for k in ("callOutStartTime", "callOutAlertingTime", "callOutAnswerTime", "fwdStartTime",
              "fwdAlertingTime", "fwdAnswerTime", "callEndTime"):
        assert TS_RE.match(info[k]), k
    call = await node.plane.store.get_call(sid)
    assert call is not None and call["minutes"] == 2 and call["charge_milli"] == 360


async def test_no_urls_nothing_pushed(make_node: NodeFactory, receiver: Receiver) -> None:
    node = await make_node()
    sid = expect(await post(node, CB, cb_body()), 200, "0")["sessionId"]
    for _ in range(100):
        c = await node.plane.store.get_call(sid)
        if c and c["ended_at"]:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    assert receiver.requests == []
    assert await node.plane.store.list_cdrs(session_id=sid) == []


async def test_app_default_urls_and_request_override(make_node: NodeFactory,
                                                     receiver: Receiver) -> None:
    node = await make_node(status_url=receiver.url("/app-status"), fee_url=receiver.url("/app-fee"))
    expect(await post(node, CB, cb_body()), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/app-status")) == 8
                            and len(receiver.on("/app-fee")) == 1)
    expect(await post(node, CB, cb_body(statusUrl=b64(receiver.url("/req-status")))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/req-status")) == 8
                            and len(receiver.on("/app-fee")) == 2)
    assert len(receiver.on("/app-status")) == 8


async def test_notification_collect_info(make_node: NodeFactory, receiver: Receiver) -> None:
    node = await make_node(script=lambda _r: FakeScript(digits="7"))
    body = {"displayNbr": "+8675500000001", "calleeNbr": "+8613800000002",
            "playInfoList": [{"notifyVoice": "wait_voice1.wav", "collectInd": 1}],
            **urls(receiver)}
    expect(await post(node, NOTIFY, body), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/status")) == 5 and receiver.on("/fee"))
    kinds = [r.body["eventType"] for r in receiver.on("/status")]
    assert kinds == ["callout", "alerting", "answer", "collectInfo", "disconnect"]
    assert receiver.on("/status")[3].body["statusInfo"]["digitInfo"] == "7"
    fee = receiver.on("/fee")[0].body["feeLst"][0]
    assert fee["serviceType"] == "001" and "fwdDstNum" not in fee
    assert fee["callerNum"] == "+8675500000001" and fee["calleeNum"] == "+8613800000002"


async def test_status_push_not_retried(make_node: NodeFactory, receiver: Receiver) -> None:
    receiver.modes["/status"] = "fail"
    node = await make_node()
    expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    await asyncio.sleep(1.0)
    assert len(receiver.on("/status")) == 8    # each event once, none repeated
    assert node.plane.pusher is not None and node.plane.pusher.failed == 8
    assert await deliveries(node, "status") == {"ok": 0, "http_error": 8, "timeout": 0,
                                                "error": 0}


async def test_status_order_per_call_concurrent_across_calls(make_node: NodeFactory,
                                                             receiver: Receiver) -> None:
    receiver.modes["/slow"] = "hang"           # every push to /slow times out after 1 s
    node = await make_node()
    expect(await post(node, CB, cb_body(statusUrl=b64(receiver.url("/slow")))), 200, "0")
    t0 = time.time()
    expect(await post(node, CB, cb_body(statusUrl=b64(receiver.url("/fast")))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/fast")) == 8)
    assert time.time() - t0 < 3.0              # not stuck behind the hanging receiver
    assert len(receiver.on("/slow")) < 8       # the slow call is still one push at a time
    await receiver.wait_for(lambda: len(receiver.on("/slow")) == 8, timeout=15)
    kinds = [r.body["eventType"] for r in receiver.on("/slow")]
    assert kinds[:3] == ["callout", "alerting", "answer"] and kinds[-1] == "disconnect"


@pytest.mark.parametrize("failure", ["fail", "rc1", "hang"])
async def test_cdr_retried_then_recovers(make_node: NodeFactory, receiver: Receiver,
                                         failure: str) -> None:
    receiver.modes["/fee"] = failure
    node = await make_node()
    sid = expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")["sessionId"]
    await receiver.wait_for(lambda: len(receiver.on("/fee")) >= 2, timeout=15)
    receiver.modes["/fee"] = "ok"
    n = len(receiver.on("/fee"))
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == n + 1, timeout=15)
    for _ in range(50):
        rows = await node.plane.store.list_cdrs(session_id=sid)
        if rows[0]["state"] == "delivered":
            break
        await asyncio.sleep(0.05)
    assert rows[0]["state"] == "delivered" and rows[0]["attempts"] == n
    gaps = [b.at - a.at for a, b in zip(receiver.on("/fee"), receiver.on("/fee")[1:],
                                        strict=False)]
    assert all(g >= 0.45 for g in gaps), gaps    # cdr_retry_interval_s = 0.5
    await asyncio.sleep(1.0)
    assert len(receiver.on("/fee")) == n + 1     # delivered once, not again
    # HTTP 500 and resultcode "1" are answers that refuse; a hang times out (timeout_s = 1)
    failed_as = "timeout" if failure == "hang" else "http_error"
    assert await deliveries(node, "cdr") == {"ok": 1, "http_error": 0, "timeout": 0,
                                             "error": 0, failed_as: n}


async def test_cdr_parked_after_max_retries_then_manual_repush(make_node: NodeFactory,
                                                               receiver: Receiver) -> None:
    receiver.modes["/fee"] = "fail"
    # Every attempt must reach the receiver (it answers 500 at once): a 1 s webhook timeout
    # turned one attempt into a ConnectTimeout when the test process's loop stalled for a
    # second late in a full run (its own GC over a large heap); parking does not depend on it.
    node = await make_node(webhook_timeout_s=5)
    sid = expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")["sessionId"]
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 3, timeout=15)  # 1 + 2 retries
    for _ in range(50):
        rows = await node.plane.store.list_cdrs(session_id=sid)
        if rows and rows[0]["state"] == "parked":
            break
        await asyncio.sleep(0.05)
    assert rows[0]["state"] == "parked" and rows[0]["attempts"] == 3
    await asyncio.sleep(1.2)
    assert len(receiver.on("/fee")) == 3
    receiver.modes["/fee"] = "ok"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = await node.http.get("/admin/v1/cdrs", params={"state": "parked"}, headers=admin)
    assert [c["session_id"] for c in r.json()["cdrs"]] == [sid]
    r = await node.http.post("/admin/v1/cdrs/repush", json={"state": "parked"}, headers=admin)
    assert r.json()["requeued"] == 1
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 4)
    assert receiver.on("/fee")[-1].body["feeLst"][0]["sessionId"] == sid


async def test_cdrs_with_same_end_time_are_batched(make_node: NodeFactory,
                                                   receiver: Receiver) -> None:
    end = float(int(time.time()))
    node = await make_node(script=lambda _r: FakeScript(end_at=end), max_calls=200,
                           batch_delay_s=3.0)
    results = await asyncio.gather(*(post(node, CB, cb_body(feeUrl=b64(receiver.url("/fee"))))
                                     for _ in range(55)))
    assert all(r.json()["resultcode"] == "0" for r in results)
    await receiver.wait_for(lambda: sum(len(r.body["feeLst"]) for r in receiver.on("/fee"))
                            == 55, timeout=20)
    sizes = sorted(len(r.body["feeLst"]) for r in receiver.on("/fee"))
    assert max(sizes) == 50 and len(sizes) == 2, sizes
    ends = {f["callEndTime"] for r in receiver.on("/fee") for f in r.body["feeLst"]}
    assert len(ends) == 1
    sids = [f["sessionId"] for r in receiver.on("/fee") for f in r.body["feeLst"]]
    assert len(set(sids)) == 55


async def test_push_signature_without_newlines_per_app(make_node: NodeFactory,
                                                       receiver: Receiver) -> None:
    node = await make_node()
    await node.plane.store.update_app(APP_KEY, {"push_sign_newlines": False})
    expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    for r in receiver.requests:
        assert verify_push_signature(r.headers, receiver.url(r.path), APP_KEY, APP_SECRET,
                                     newlines=False)
        assert not verify_push_signature(r.headers, receiver.url(r.path), APP_KEY, APP_SECRET)


# -- recordings --------------------------------------------------------------------------------

async def test_recording_cdr_download_and_retention(make_node: NodeFactory,
                                                    receiver: Receiver) -> None:
    node = await make_node(script=lambda _r: FakeScript(record_duration_s=4.0))
    sid = expect(await post(node, CB, cb_body(recordFlag="true", **urls(receiver))),
                 200, "0")["sessionId"]
    assert node.backend.requests[-1].record_path  # type: ignore[union-attr]
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    fee: dict[str, Any] = receiver.on("/fee")[0].body["feeLst"][0]
    assert fee["sessionId"] == sid and fee["recordFlag"] == 1
    name, domain = fee["recordObjectName"], fee["recordDomain"]
    assert domain == f"127.0.0.1:{node.plane.api.port}"  # type: ignore[union-attr]
    r = await node.http.get(RECORD, params={"fileName": name, "recordDomain": domain},
                            headers=aksk_headers())
    assert r.status_code == 301
    location = r.headers["location"]
    got = await node.http.get(location)
    assert got.status_code == 200 and got.content[:4] == b"RIFF"
    direct = await node.http.get(fee["recordFileDownloadUrl"])
    assert direct.status_code == 200 and direct.content == got.content
    # wrong domain, other app, tampered signature, traversal
    expect(await node.http.get(RECORD, params={"fileName": name, "recordDomain": "x"},
                               headers=aksk_headers()), 404, "1010404")
    expect(await node.http.get(RECORD, params={"fileName": name, "recordDomain": domain},
                               headers=aksk_headers(key="other-app-key-02",
                                                    secret="other-secret")), 404, "1010404")
    expect(await node.http.get(RECORD, params={"fileName": "../vc.db", "recordDomain": domain},
                               headers=aksk_headers()), 404, "1010404")
    expect(await node.http.get(RECORD, params={"fileName": name}, headers=aksk_headers()),
           400, "1010002", "recordDomain")
    expect(await node.http.get(location.replace("sig=", "sig=A")), 404, "1010404")
    expect(await node.http.get("/recordings/..%2Fvc.db?expires=99999999999&sig=x"),
           404, "1010404")
    # REC-4: after the retention period the file and its record are gone
    removed = await node.plane.retention_once(now=time.time() + 8 * 86_400)
    assert removed >= 1
    expect(await node.http.get(RECORD, params={"fileName": name, "recordDomain": domain},
                               headers=aksk_headers()), 404, "1010404")
    assert (await node.http.get(location)).status_code == 404


async def test_short_recording_is_not_kept(make_node: NodeFactory, receiver: Receiver) -> None:
    node = await make_node(script=lambda _r: FakeScript(record_duration_s=2.0))
    expect(await post(node, CB, cb_body(recordFlag="true", **urls(receiver))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    fee = receiver.on("/fee")[0].body["feeLst"][0]
    assert fee["recordFlag"] == 0 and "recordObjectName" not in fee
    assert list((node.data_dir / "recordings").iterdir()) == []


async def test_clean_shutdown_mid_delivery_hands_cdrs_back(make_node: NodeFactory,
                                                          receiver: Receiver) -> None:
    receiver.modes["/fee"] = "hang"
    first = await make_node(lease_s=300)
    expect(await post(first, CB, cb_body(**urls(receiver))), 200, "0")
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    await first.backend.hang_up_all()
    await first.plane.stop()                 # delivery in flight, lease would last 300 s
    receiver.modes["/fee"] = "ok"
    second = await make_node(lease_s=300)
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 2, timeout=10)
    outbox = second.plane.outbox
    assert outbox is not None
    for _ in range(100):
        if outbox.delivered == 1:
            break
        await asyncio.sleep(0.05)
    assert outbox.delivered == 1


async def test_metrics_endpoint(make_node: NodeFactory, receiver: Receiver) -> None:
    node = await make_node()
    expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")
    expect(await post(node, CB, cb_body(calleeNbr="+85212345678")), 400, "1010002")
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    for _ in range(100):
        if (node.plane.outbox and node.plane.outbox.delivered == 1 and node.plane.pusher
                and node.plane.pusher.sent == 8):
            break
        await asyncio.sleep(0.05)
    r = await node.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'voicecall_api_requests_total{node="vc1",operation="callback",resultcode="0"} 1.0' \
        in text
    assert 'operation="callback",resultcode="1010002"} 1.0' in text
    # (prometheus_client writes labels in name order)
    assert 'voicecall_webhook_deliveries_total{kind="status",node="vc1",result="ok"} 8.0' \
        in text
    assert 'voicecall_webhook_deliveries_total{kind="cdr",node="vc1",result="ok"} 1.0' in text
    for kind in ("status", "cdr"):
        for result in ("http_error", "timeout", "error"):
            assert (f'voicecall_webhook_deliveries_total{{kind="{kind}",node="vc1",'
                    f'result="{result}"}} 0.0') in text
    assert 'voicecall_webhook_delivery_seconds_count{kind="status",node="vc1"} 8.0' in text
    assert 'voicecall_webhook_delivery_seconds_count{kind="cdr",node="vc1"} 1.0' in text
    assert "voicecall_status_pushes" not in text and "voicecall_cdr_push_items" not in text
    assert "voicecall_api_request_seconds_bucket" in text
    # the exposition format is valid for Prometheus itself
    proc = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(r.content), 30)
    assert proc.returncode == 0 and not out.strip() and not err.strip(), (out, err)
