"""Control-plane metrics on GET /metrics of the real daemon: a signed click2Call between two
SIPp gateways, status and CDR webhooks to a real receiver (whose fee endpoint refuses at first),
the CDR outbox and per-app concurrency gauges going up and back to 0, build info, event-loop
lag, process metrics, and ``promtool check metrics`` finding nothing to complain about.

A second test checks the outbox gauges on both database engines (SQLite and PostgreSQL) with
the in-process plane."""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import re
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from control_api.fake_backend import FakeScript
from tests.integration.control_api.conftest import Node, NodeFactory
from tests.integration.control_api.helpers import APP_KEY as PLANE_APP_KEY
from tests.integration.control_api.helpers import Receiver, b64
from tests.integration.control_api.test_api import CB, cb_body, expect, post
from tests.integration.control_api.test_webhooks import urls
from tests.integration.services.node import (
    APP_KEY,
    CALLEE,
    CALLER,
    CLICK2CALL,
    DISPLAY,
    DISPLAY_B,
    ServiceNode,
    fees,
    statuses,
    wait_peer,
)

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
RESULTS = ("ok", "http_error", "timeout", "error")
PLANE_LIMIT = 10          # max_concurrent_calls of the in-process plane's app (node_toml)


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset({"node": "vc1", **labels}.items())))


async def scrape(url: str) -> tuple[str, Samples]:
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{url}/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return r.text, parse(r.text)


async def scrape_until(url: str, pred: Callable[[Samples], bool], what: str,
                       timeout: float = 30.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        _, s = await scrape(url)
        if pred(s):
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics: {what} not seen in {timeout}s")
        await asyncio.sleep(0.25)


async def promtool_check(text: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        "promtool", "check", "metrics", stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(text.encode()), 60)
    assert proc.returncode == 0 and not out.strip() and not err.strip(), (
        proc.returncode, out.decode(), err.decode())


def deliveries(s: Samples, kind: str) -> dict[str, float | None]:
    return {r: get(s, "voicecall_webhook_deliveries_total", kind=kind, result=r)
            for r in RESULTS}


async def test_daemon_control_metrics_after_a_callback(tmp_path: Path,
                                                       receiver: Receiver) -> None:
    receiver.modes["/fee"] = "fail"            # the CDR stays pending until we let it through
    t_start = time.time()
    node = ServiceNode(tmp_path, receiver, app_extra="max_concurrent_calls = 3").start()
    try:
        api = f"http://127.0.0.1:{node.api_port}"
        a = node.party("A", "uas_basic.xml")
        b = node.party("B", "uas_talk_bye.xml", extra=("-d", "6000"))   # B talks 6 s
        _, s = await scrape(api)
        assert get(s, "voicecall_app_concurrent_calls", app_key=APP_KEY) == 0
        assert get(s, "voicecall_app_concurrent_calls_limit", app_key=APP_KEY) == 3
        r = await node.post(CLICK2CALL, {"displayNbr": DISPLAY, "callerNbr": CALLER,
                                         "displayCalleeNbr": DISPLAY_B, "calleeNbr": CALLEE})
        assert r.status_code == 200 and r.json()["resultcode"] == "0", r.text
        sid = r.json()["sessionId"]

        # while the call is up, its port is counted (sampled from the database)
        await scrape_until(api, lambda s: get(
            s, "voicecall_app_concurrent_calls", app_key=APP_KEY) == 1, "1 call in use")
        ra, rb = await wait_peer(a), await wait_peer(b)
        assert ra.ok, ra.explain() + node.log()[-3000:]
        assert rb.ok, rb.explain() + node.log()[-3000:]

        # the receiver refuses the CDR: it waits in the outbox, getting older
        s = await scrape_until(api, lambda s: get(
            s, "voicecall_cdr_outbox_items", state="pending") == 1 and (get(
                s, "voicecall_webhook_deliveries_total", kind="cdr",
                result="http_error") or 0) >= 1, "1 pending CDR after a refused push")
        age = get(s, "voicecall_cdr_outbox_oldest_age_seconds")
        assert age is not None and 0 < age < time.time() - t_start, age
        receiver.modes["/fee"] = "ok"

        # delivered at the next retry; the call's port is free again
        s = await scrape_until(api, lambda s: get(
            s, "voicecall_cdr_outbox_items", state="pending") == 0 and get(
                s, "voicecall_webhook_deliveries_total", kind="cdr", result="ok") == 1
            and get(s, "voicecall_app_concurrent_calls", app_key=APP_KEY) == 0,
            "CDR delivered, outbox and ports back to 0")
        assert get(s, "voicecall_cdr_outbox_items", state="parked") == 0
        assert get(s, "voicecall_cdr_outbox_oldest_age_seconds") == 0
        assert len(fees(receiver, sid)) >= 2
        # every status push of the call answered (never retried), counted once each
        await receiver.wait_for(lambda: sum(
            1 for k, _ in statuses(receiver, sid) if k == "disconnect") == 2, timeout=15)
        n_status = len(receiver.on("/status"))
        s = await scrape_until(api, lambda s: get(
            s, "voicecall_webhook_deliveries_total", kind="status", result="ok") == n_status,
            f"{n_status} status deliveries")
        await asyncio.sleep(0.5)               # a late extra push would show up now
        text, s = await scrape(api)
        assert len(receiver.on("/status")) == n_status >= 6
        n_fee = len(receiver.on("/fee"))
        assert deliveries(s, "status") == {"ok": n_status, "http_error": 0, "timeout": 0,
                                           "error": 0}
        assert deliveries(s, "cdr") == {"ok": 1, "http_error": n_fee - 1, "timeout": 0,
                                        "error": 0}
        assert get(s, "voicecall_webhook_delivery_seconds_count", kind="status") == n_status
        assert get(s, "voicecall_webhook_delivery_seconds_count", kind="cdr") == n_fee
        assert get(s, "voicecall_app_concurrent_calls_limit", app_key=APP_KEY) == 3
        assert get(s, "voicecall_api_requests_total", operation="callback",
                   resultcode="0") == 1

        # the node itself
        assert get(s, "voicecall_build_info", version=importlib.metadata.version("voicecall"),
                   python=platform.python_version()) == 1
        started = get(s, "voicecall_start_time_seconds")
        assert started is not None and t_start <= started <= time.time()
        lag_count = get(s, "voicecall_event_loop_lag_seconds_count")
        assert lag_count is not None and lag_count > 0
        assert get(s, "voicecall_event_loop_lag_seconds_bucket", le="+Inf") == lag_count
        assert s.get(("process_cpu_seconds_total", frozenset())) is not None
        assert s.get(("process_resident_memory_bytes", frozenset()), 0) > 0
        assert ("python_gc_collections_total", frozenset({("generation", "2")})) in s
        await promtool_check(text)

        # Labels stay bounded: a known set of label names, and nothing call-specific (the
        # session id, a phone number, a SIP Call-ID) as a value.
        allowed = {"node", "method", "code", "kind", "reason", "side", "state", "gateway",
                   "outcome", "service", "leg", "state_code", "direction", "result",
                   "operation", "resultcode", "app_key", "version", "python", "le",
                   "generation", "implementation", "major", "minor", "patchlevel"}
        call_ids = set(re.findall(r"call_id=(\S+)", node.log()))
        assert call_ids
        for name, labels in s:
            for k, v in labels:
                assert k in allowed, (name, k, v)
                assert sid not in v and v not in call_ids and not re.search(r"\d{7,}", v), \
                    (name, k, v)

        # the push failures were logged with the call's session and app
        failed = [ln for ln in node.log().splitlines() if "cdr_push_failed" in ln]
        assert failed and all(f"session_id={sid}" in ln and f"app_key={APP_KEY}" in ln
                              for ln in failed), failed
    finally:
        node.stop()
        (tmp_path / "daemon.log").write_text(node.log())   # kept for post-mortems


async def test_outbox_gauges_on_both_engines(make_node: NodeFactory, receiver: Receiver) -> None:
    """Pending while the receiver refuses, parked once the retries are spent (cdr_max_retries
    = 2, 0.5 s apart), back to 0 after a re-push is delivered — on SQLite and PostgreSQL."""
    receiver.modes["/fee"] = "fail"
    node = await make_node()
    sampler = node.plane.sampler
    assert sampler is not None

    async def sampled() -> Samples:
        assert sampler is not None and await sampler.sample_once()
        return (await scrape(node.url))[1]

    s = await sampled()
    assert get(s, "voicecall_app_concurrent_calls", app_key="test-app-key-01") == 0
    assert get(s, "voicecall_app_concurrent_calls_limit",
               app_key="test-app-key-01") == PLANE_LIMIT
    assert get(s, "voicecall_app_concurrent_calls", app_key="other-app-key-02") == 0
    sid = expect(await post(node, CB, cb_body(**urls(receiver))), 200, "0")["sessionId"]
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1)
    s = await sampled()
    assert get(s, "voicecall_cdr_outbox_items", state="pending") == 1
    assert get(s, "voicecall_cdr_outbox_items", state="parked") == 0
    assert (get(s, "voicecall_cdr_outbox_oldest_age_seconds") or 0) > 0
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 3, timeout=15)
    await _until(node, lambda rows: rows[0]["state"] == "parked", sid)
    s = await sampled()
    assert get(s, "voicecall_cdr_outbox_items", state="pending") == 0
    assert get(s, "voicecall_cdr_outbox_items", state="parked") == 1
    assert get(s, "voicecall_cdr_outbox_oldest_age_seconds") == 0
    assert get(s, "voicecall_app_concurrent_calls", app_key="test-app-key-01") == 0
    assert deliveries(s, "cdr") == {"ok": 0, "http_error": 3, "timeout": 0, "error": 0}
    receiver.modes["/fee"] = "ok"
    assert await node.plane.store.repush_cdrs(state="parked") == 1
    assert node.plane.outbox is not None
    node.plane.outbox.nudge()
    await _until(node, lambda rows: rows[0]["state"] == "delivered", sid)
    s = await sampled()
    assert get(s, "voicecall_cdr_outbox_items", state="pending") == 0
    assert get(s, "voicecall_cdr_outbox_items", state="parked") == 0
    assert deliveries(s, "cdr") == {"ok": 1, "http_error": 3, "timeout": 0, "error": 0}


async def _until(node: Node, pred: Callable[[list[dict[str, object]]], bool], sid: str,
                 timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        rows = await node.plane.store.list_cdrs(session_id=sid)
        if rows and pred(rows):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"CDR rows of {sid}: {rows}")
        await asyncio.sleep(0.05)


async def test_batched_cdrs_count_one_delivery_per_post_and_log_each_call(
        make_node: NodeFactory, receiver: Receiver) -> None:
    """55 CDRs of one second go out as two POSTs (50 + 5, EV-3): two deliveries in the
    metrics, and one cdr_delivered line per call naming its session_id and app_key."""
    end = float(int(time.time()))
    with structlog.testing.capture_logs() as logs:
        node = await make_node(script=lambda _r: FakeScript(end_at=end), max_calls=200,
                               batch_delay_s=3.0)
        results = await asyncio.gather(*(post(node, CB, cb_body(
            feeUrl=b64(receiver.url("/fee")))) for _ in range(55)))
        sids = {r.json()["sessionId"] for r in results}
        assert len(sids) == 55
        await receiver.wait_for(lambda: sum(len(r.body["feeLst"]) for r in receiver.on("/fee"))
                                == 55, timeout=20)
        outbox = node.plane.outbox
        assert outbox is not None
        deadline = time.monotonic() + 10
        while outbox.delivered < 55 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        _, s = await scrape(node.url)
    assert len(receiver.on("/fee")) == 2
    assert deliveries(s, "cdr") == {"ok": 2, "http_error": 0, "timeout": 0, "error": 0}
    assert get(s, "voicecall_webhook_delivery_seconds_count", kind="cdr") == 2
    delivered = [e for e in logs if e["event"] == "cdr_delivered"]
    assert sorted(e["session_id"] for e in delivered) == sorted(sids)
    assert all(e["app_key"] == PLANE_APP_KEY for e in delivered)
    assert sorted(e["batch_size"] for e in delivered) == [5] * 5 + [50] * 50
