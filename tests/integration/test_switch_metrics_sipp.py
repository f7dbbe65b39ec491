"""The switch series on the daemon's real ``GET /metrics`` after real SIPp calls:
SIPp UAC (a trusted gateway) → voicecall B2BUA → SIPp UAS (the carrier gateway)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.control_api.helpers import Receiver
from tests.integration.harness import Daemon, free_port, running, uac, uas
from tests.integration.services.node import (
    CALLEE as SERVICE_CALLEE,
)
from tests.integration.services.node import (
    CALLNOTIFY,
    CLICK2CALL,
    DISPLAY,
    ServiceNode,
    callback_body,
    wait_closed,
    wait_peer,
)
from tests.integration.services.scen import Uas

pytestmark = pytest.mark.integration

CALLEE = "+8675512345678"
CALLS = 3


def config(sip_port: int, uac_port: int, uas_port: int) -> str:
    return f"""
[node]
name = "m1"
data_dir = "./data"

[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
advertise = "127.0.0.1"

[api]
listen = "127.0.0.1:0"

[[gateways]]
name = "uac"
address = "udp:127.0.0.1:{uac_port}"
ping_interval_s = 0

[[gateways]]
name = "carrier"
address = "udp:127.0.0.1:{uas_port}"
ping_interval_s = 0

[[routes]]
prefix = "+86"
gateways = ["carrier"]
"""


def scrape(base: str, node: str = "m1") -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``GET /metrics`` as (name, sorted labels without node) → value;
    asserts each of ours carries the node label."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("voicecall_"):
                assert s.labels.get("node") == node, s
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "node"))
            out[(s.name, labels)] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
          **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_switch_series_after_sipp_calls(workdir: Path) -> None:
    sip_port, uac_port, uas_port = free_port(), free_port(), free_port()
    daemon = Daemon(config(sip_port, uac_port, uas_port), workdir)
    callee = uas(workdir, "uas_basic.xml", port=uas_port, calls=CALLS,
                 extra=("-mp", str(free_port())))
    caller = uac(workdir, "uac_basic.xml", f"127.0.0.1:{sip_port}", port=uac_port,
                 service=CALLEE, calls=CALLS,
                 extra=("-mp", str(free_port()), "-d", "300", "-r", "3"))
    with daemon, running(caller, callee):
        m = re.search(r"control API on (http://127\.0\.0\.1:\d+)", daemon.drain())
        assert m, daemon.drain()[-2000:]
        base = m.group(1)
        before = scrape(base)
        assert value(before, "voicecall_gateway_up", gateway="carrier") == 1
        assert value(before, "voicecall_calls_active", service="b2bua") == 0

        callee.start()
        time.sleep(0.3)
        caller.start()
        r_uac = caller.wait(60)
        r_uas = callee.wait(60)
        log = daemon.drain()
        assert r_uac.ok, r_uac.explain() + log[-3000:]
        assert r_uas.ok, r_uas.explain() + log[-3000:]

        # The last BYE's 200 may still be on its way through the B2BUA: wait for the gauges.
        deadline = time.monotonic() + 15
        while True:
            after = scrape(base)
            idle = (value(after, "voicecall_calls_active", service="b2bua") == 0
                    and value(after, "voicecall_legs_active", service="b2bua") == 0)
            if idle or time.monotonic() > deadline:
                break
            time.sleep(0.2)

    # What SIPp sent, retransmissions included (SIPp logs every copy it sends).
    invites_sent = r_uac.count(r"(?m)^INVITE sip:")
    assert invites_sent >= CALLS
    v = after
    assert value(v, "voicecall_sip_requests_in_total", method="INVITE") == invites_sent
    assert value(v, "voicecall_sip_requests_out_total", method="INVITE") == CALLS
    for method in ("ACK", "BYE"):
        assert value(v, "voicecall_sip_requests_in_total",
                     method=method) == r_uac.count(rf"(?m)^{method} sip:") >= CALLS
    assert value(v, "voicecall_sip_requests_out_total", method="BYE") == CALLS
    assert value(v, "voicecall_sip_responses_out_total", method="INVITE", code="200") == CALLS
    assert value(v, "voicecall_sip_responses_out_total", method="INVITE", code="180") == CALLS
    assert value(v, "voicecall_sip_responses_in_total", method="INVITE", code="200") >= CALLS
    assert value(v, "voicecall_gateway_calls_total", gateway="carrier",
                 outcome="answered") == CALLS
    for direction in ("in", "out"):
        assert value(v, f"voicecall_call_pdd_seconds_{direction}_count") == CALLS
        assert value(v, f"voicecall_call_answer_seconds_{direction}_count") == CALLS
        assert 0 < value(v, f"voicecall_call_answer_seconds_{direction}_sum") < CALLS * 10
    assert value(v, "voicecall_calls_total", service="b2bua") == CALLS
    assert value(v, "voicecall_calls_active", service="b2bua") == 0
    assert value(v, "voicecall_legs_active", service="b2bua") == 0
    for leg in ("a", "b"):
        assert value(v, "voicecall_call_outcomes_total", service="b2bua", leg=leg,
                     state_code="2xx") == CALLS
    assert value(v, "voicecall_sip_dialogs", state="early") == 0
    assert value(v, "voicecall_sip_dialogs", state="confirmed") == 0
    assert value(v, "voicecall_sip_bad_messages_total", reason="parse") == 0
    assert value(v, "voicecall_gateway_up", gateway="carrier") == 1
    assert ("voicecall_sip_transactions", (("side", "server"),)) in v


async def test_service_series_after_notification_and_failed_callback(tmp_path: Path) -> None:
    """A notification the callee answers (normal end: stateCode 0 on its one leg) and a
    callback whose A party is busy (8108 "caller busy" on leg a, B never dialled)."""
    receiver = await Receiver().start()
    svc = ServiceNode(tmp_path, receiver).start()
    try:
        p = svc.party("B", Uas("n").ring().answer().wait_bye().write(tmp_path))
        r = await svc.post(CALLNOTIFY, {"displayNbr": DISPLAY, "calleeNbr": SERVICE_CALLEE,
                                        "playInfoList": [{"notifyVoice": "pre_05s.wav"}]})
        assert r.status_code == 200, r.text
        await wait_closed(receiver, r.json()["sessionId"], legs=1, timeout=40)
        res = await wait_peer(p, 20)
        assert res.ok, res.explain() + svc.log()[-3000:]

        p = svc.party("A", Uas("a").ring().reject(486, "Busy Here").write(tmp_path))
        r = await svc.post(CLICK2CALL, callback_body())
        assert r.status_code == 200, r.text
        await wait_closed(receiver, r.json()["sessionId"], legs=1, timeout=40)
        res = await wait_peer(p, 20)
        assert res.ok, res.explain() + svc.log()[-3000:]

        base = f"http://127.0.0.1:{svc.api_port}"
        deadline = time.monotonic() + 15
        while True:
            v = await asyncio.to_thread(scrape, base, "vc1")
            active = sum(value(v, name, service=s) for s in ("notify", "callback")
                         for name in ("voicecall_calls_active", "voicecall_legs_active"))
            if active == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        svc.stop()
        await receiver.stop()
    outcomes = {labels: n for (name, labels), n in v.items()
                if name == "voicecall_call_outcomes_total"}
    assert value(v, "voicecall_calls_total", service="notify") == 1, outcomes
    assert value(v, "voicecall_calls_total", service="callback") == 1
    assert value(v, "voicecall_calls_total", service="verify") == 0
    for s in ("notify", "callback"):
        assert value(v, "voicecall_calls_active", service=s) == 0
        assert value(v, "voicecall_legs_active", service=s) == 0
    assert value(v, "voicecall_call_outcomes_total", service="notify", leg="callee",
                 state_code="0") == 1
    assert value(v, "voicecall_call_outcomes_total", service="callback", leg="a",
                 state_code="8108") == 1, outcomes
    assert not any(name == "voicecall_call_outcomes_total" and dict(labels).get("leg") == "b"
                   for name, labels in v)
    assert value(v, "voicecall_gateway_calls_total", gateway="gwb", outcome="answered") == 1
    assert value(v, "voicecall_gateway_calls_total", gateway="gwa", outcome="busy") == 1
    assert value(v, "voicecall_call_answer_seconds_out_count") == 1
    assert value(v, "voicecall_call_pdd_seconds_out_count") == 2
    assert value(v, "voicecall_call_pdd_seconds_in_count") == 0
