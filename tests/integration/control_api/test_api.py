"""The Voice-Call API over real HTTP against a running control plane (SQLite and PostgreSQL),
requests signed by the independent test signer. Every result-code path of the public API."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from control_api.fake_backend import FakeScript
from tests.integration.control_api.conftest import Node, NodeFactory
from tests.integration.control_api.helpers import (
    APP_KEY,
    aksk_headers,
    b64,
    created_now,
    wsse_headers,
)

CB = "/rest/httpsessions/click2Call/v2.0"
NOTIFY = "/rest/httpsessions/callnotify/v2.0"
NOTIFY1 = "/rest/httpsessions/callnotify/v1.0"
VERIFY = "/rest/httpsessions/callVerify/v1.0"
STOP = "/rest/httpsessions/callStop/v2.0"
RECORD = "/rest/provision/voice/record/v1.0"


def cb_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"displayNbr": "+8675500000001", "callerNbr": "+8613800000001",
                            "displayCalleeNbr": "+8675500000002", "calleeNbr": "+8613800000002"}
    body.update(kw)
    return {k: v for k, v in body.items() if v is not None}


def notify_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"displayNbr": "+8675500000001", "calleeNbr": "+8613800000002",
                            "playInfoList": [{"notifyVoice": "wait_voice1.wav"}]}
    body.update(kw)
    return body


def verify_body(**kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"displayNbr": "+8675500000001", "calleeNbr": "+8613800000002",
                            "languageType": 2, "preTone": "pre.wav", "verifyCode": "123456"}
    body.update(kw)
    return body


async def post(node: Node, path: str, body: Any, headers: dict[str, str] | None = None
               ) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await node.http.post(path, content=raw, headers=headers or aksk_headers())


def expect(resp: httpx.Response, status: int, code: str, desc_part: str = "") -> dict[str, Any]:
    data = resp.json()
    assert resp.status_code == status, (resp.status_code, data)
    assert data["resultcode"] == code, data
    assert desc_part in data["resultdesc"], data
    return dict(data)


# -- success paths -----------------------------------------------------------------------------

async def test_click2call_success_shape(node: Node) -> None:
    resp = await post(node, CB, cb_body(returnIdlePort="true"))
    data = expect(resp, 200, "0", "Success")
    sid = data["sessionId"]
    assert sid.startswith("vc1_") and sid.endswith("@vc1") and len(sid.split("_")) == 4
    assert 0 <= data["idlePort"] <= 10
    assert resp.headers["content-type"].startswith("application/json")
    req = node.backend.requests[-1]
    assert req.session_id == sid and req.caller_nbr == "+8613800000001"
    assert req.display_callee_nbr == "+8675500000002" and req.wait_voice is None


async def test_wsse_both_encodings_accepted(node: Node) -> None:
    expect(await post(node, CB, cb_body(), wsse_headers(hex_form=True)), 200, "0")
    expect(await post(node, CB, cb_body(), wsse_headers(hex_form=False)), 200, "0")


async def test_beijing_time_created_accepted(node: Node) -> None:
    expect(await post(node, CB, cb_body(), aksk_headers(created=created_now(8 * 3600))),
           200, "0")


async def test_notify_v1_v2_and_verify(node: Node) -> None:
    for path in (NOTIFY, NOTIFY1):
        expect(await post(node, path, notify_body(playInfoList=[
            {"notifyVoice": "wait_voice1.wav", "collectInd": 1,
             "replayAfterCollection": "true", "collectContentTriggerReplaying": "1"},
            {"templateId": "tpl_code", "templateParas": ["123456", "5"]}])), 200, "0")
    req = node.backend.requests[-1]
    assert req.items[1].tts_text == "您的验证码为123456，请在5分钟内输入。"  # type: ignore[union-attr]
    assert req.items[0].file_path and req.items[0].file_path.endswith("wait_voice1.wav")  # type: ignore[union-attr]
    expect(await post(node, VERIFY, verify_body(posTone="wait_voice1.wav", times=0)), 200, "0")


async def test_prompts_resolved_to_paths(node: Node) -> None:
    expect(await post(node, CB, cb_body(playPreVoice="true", preVoice="pre.wav",
                                        waitVoice="wait_voice1.wav", maxDuration=5,
                                        lastMinVoice="pre.wav", lastMinToUE="toa",
                                        calleeMedia="none")), 200, "0")
    req = node.backend.requests[-1]
    assert req.pre_voice and req.pre_voice.endswith("/prompts/pre.wav")  # type: ignore[union-attr]
    assert req.last_min_voice and req.max_duration_min == 5  # type: ignore[union-attr]
    assert req.callee_media.value == "none" and req.last_min_to.value == "toa"  # type: ignore[union-attr]


# -- authentication ----------------------------------------------------------------------------

async def test_auth_result_codes(node: Node) -> None:
    h = aksk_headers()
    expect(await post(node, CB, cb_body(), {"Content-Type": "application/json"}),
           401, "1023033")
    for attr, code in (("Username", "1023034"), ("Nonce", "1023035"), ("Created", "1023036"),
                       ("PasswordDigest", "1023037")):
        parts = [p for p in h["X-AKSK"].removeprefix("UsernameToken ").split(", ")
                 if not p.startswith(attr + "=")]
        expect(await post(node, CB, cb_body(), {**h, "X-AKSK": "UsernameToken " +
                                                ", ".join(parts)}), 401, code)
    expect(await post(node, CB, cb_body(), aksk_headers(secret="wrong")), 401, "1010003")
    expect(await post(node, CB, cb_body(), aksk_headers(key="no-such-app")), 401, "1010003")
    expect(await post(node, CB, cb_body(), aksk_headers(created=created_now(-3600))),
           401, "1010013")
    replay = aksk_headers()
    expect(await post(node, CB, cb_body(), replay), 200, "0")
    expect(await post(node, CB, cb_body(), replay), 401, "1010013", "replay")


async def test_auth_checked_before_body(node: Node) -> None:
    expect(await post(node, CB, b"{not json", {"Content-Type": "application/json"}),
           401, "1023033")


async def test_ip_throttle_1020176(make_node: NodeFactory) -> None:
    node = await make_node(extra="[auth]\nfail_limit = 3\nfail_window_s = 60\nblock_s = 60\n")
    for _ in range(3):
        expect(await post(node, CB, cb_body(), aksk_headers(secret="bad")), 401, "1010003")
    expect(await post(node, CB, cb_body()), 403, "1020176")


async def test_suspended_app_and_inactive_account(node: Node) -> None:
    await node.plane.store.update_app(APP_KEY, {"state": "suspended"})
    expect(await post(node, CB, cb_body()), 403, "1010008")
    await node.plane.store.update_app(APP_KEY, {"state": "active"})
    await node.plane.store.set_account_state("sp1", "inactive")
    expect(await post(node, CB, cb_body()), 403, "1010007")


# -- validation --------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "status", "code", "desc"), [
    (cb_body(displayNbr=None), 400, "1010002", "displayNbr is missing"),
    (cb_body(calleeNbr=None), 400, "1010002", "calleeNbr is missing"),
    (cb_body(maxDuration="5"), 400, "1010002", "maxDuration"),
    (cb_body(maxDuration=1441), 400, "1010002", "maxDuration"),
    (cb_body(maxDuration=True), 400, "1010002", "maxDuration"),
    (cb_body(recordFlag=True), 400, "1010002", "recordFlag"),
    (cb_body(lastMinToUE="toc"), 400, "1010002", "lastMinToUE"),
    (cb_body(calleeMedia=1), 400, "1010002", "calleeMedia"),
    (cb_body(recordFormat="wav"), 400, "1010002", "recordFormat is not a supported"),
    (cb_body(calleeNbr=["+8613800000002"]), 400, "1010002", "calleeNbr"),
    (cb_body(displayNbr="+8675599999999"), 400, "1010023", "displayNbr"),
    (cb_body(displayCalleeNbr="+8675500000077"), 400, "1010023", "displayCalleeNbr"),
    (cb_body(displayNbr="+86"), 400, "1010023", "displayNbr"),
    (cb_body(callerNbr="12345"), 400, "1010024", "callerNbr"),
    (cb_body(callerNbr="+85212345678"), 400, "1010024", "Hong Kong"),
    (cb_body(calleeNbr="+85361234567"), 400, "1010002", "calleeNbr: Macao"),
    (cb_body(calleeNbr="+886912345678"), 400, "1010002", "Taiwan"),
    (cb_body(calleeNbr="+14155550100"), 400, "1010002", "International"),
    (cb_body(calleeNbr="+869911234567"), 400, "1010002", "Xinjiang"),
    (cb_body(calleeNbr="+868911234567"), 400, "1010002", "Tibet"),
    (cb_body(calleeNbr="+8695511"), 400, "1010002", "95xxx"),
    (cb_body(calleeNbr="+86138abc"), 400, "1010002", "format"),
    (cb_body(bindNbr="+8675500000077"), 400, "1010002", "bindNbr"),
    (cb_body(statusUrl="not base64!"), 400, "1010002", "statusUrl"),
    (cb_body(statusUrl=b64("ftp://127.0.0.1/x")), 400, "1010002", "statusUrl must be an http"),
    (cb_body(feeUrl=b64("file:///etc/passwd")), 400, "1010002", "feeUrl"),
    (cb_body(feeUrl=b64("http://1.2.3.4/a?b=1")), 400, "1010002", "feeUrl may contain"),
    (cb_body(userData="{x}"), 400, "1010002", "userData"),
    (cb_body(userData="用户"), 400, "1010002", "userData"),
    (cb_body(userData="x" * 257), 400, "1010002", "userData"),
    (cb_body(waitVoice="nope.wav"), 400, "1010002", "nope.wav does not exist"),
    (cb_body(waitVoice="../../etc/passwd"), 400, "1010002", "does not exist"),
    (cb_body(displayNbr="' OR 1=1 --"), 400, "1010023", "displayNbr"),
    (cb_body(calleeNbr="+86138'; DROP TABLE calls;--"), 400, "1010002", "calleeNbr"),
])
async def test_callback_validation(node: Node, body: dict[str, Any], status: int, code: str,
                                   desc: str) -> None:
    expect(await post(node, CB, body), status, code, desc)
    assert node.backend.requests == []


async def test_status_url_pointing_at_api_is_rejected(node: Node) -> None:
    for host in ("127.0.0.1", "localhost"):
        url = f"http://{host}:{node.plane.api.port}/rest/x"  # type: ignore[union-attr]
        expect(await post(node, CB, cb_body(statusUrl=b64(url))), 400, "1010002",
               "must not point at this API")


@pytest.mark.parametrize(("body", "desc"), [
    (notify_body(playInfoList=[]), "playInfoList"),
    (notify_body(playInfoList=[{"notifyVoice": "wait_voice1.wav"}] * 6), "playInfoList"),
    (notify_body(playInfoList=[{}]), "exactly one of"),
    (notify_body(playInfoList=[{"notifyVoice": "wait_voice1.wav", "templateId": "tpl_code"}]),
     "exactly one of"),
    (notify_body(playInfoList=[{"templateId": "tpl_code", "templateParas": ["12a456", "5"]}]),
     "templateParas[0]"),
    (notify_body(playInfoList=[{"templateId": "tpl_code", "templateParas": ["123456"]}]),
     "needs 2 values"),
    (notify_body(playInfoList=[{"templateId": "missing", "templateParas": []}]),
     "missing does not exist"),
    (notify_body(playInfoList=[{"notifyVoice": "wait_voice1.wav", "collectInd": 33}]),
     "collectInd"),
    (notify_body(playInfoList=[{"notifyVoice": "wait_voice1.wav", "collectInd": 2,
                                "replayAfterCollection": "true",
                                "collectContentTriggerReplaying": "1"}]),
     "collectContentTriggerReplaying"),
    (notify_body(playInfoList="x"), "playInfoList"),
])
async def test_notify_validation(node: Node, body: dict[str, Any], desc: str) -> None:
    expect(await post(node, NOTIFY, body), 400, "1010002", desc)


@pytest.mark.parametrize(("body", "desc"), [
    (verify_body(languageType=3), "languageType"),
    (verify_body(languageType="2"), "languageType"),
    (verify_body(verifyCode="12ab"), "verifyCode"),
    (verify_body(verifyCode="123456789"), "verifyCode"),
    (verify_body(times=10), "times"),
    (verify_body(preTone=None), "preTone"),
    (verify_body(preTone="unknown.wav"), "unknown.wav does not exist"),
])
async def test_verify_validation(node: Node, body: dict[str, Any], desc: str) -> None:
    expect(await post(node, VERIFY, {k: v for k, v in body.items() if v is not None}),
           400, "1010002", desc)


async def test_unapproved_file_is_unusable(node: Node) -> None:
    await node.plane.store.set_play_file_state("sp1", "pre.wav", "pending")
    expect(await post(node, VERIFY, verify_body()), 400, "1010002", "pre.wav does not exist")


async def test_bad_bodies(node: Node) -> None:
    expect(await post(node, CB, b"{not json"), 400, "1010002", "not valid JSON")
    expect(await post(node, CB, b"[1,2]"), 400, "1010002", "JSON object")
    expect(await post(node, CB, b"\xff\xfe"), 400, "1010002", "not valid JSON")
    expect(await post(node, CB, b"[" * 100_000), 400, "1010002")
    big = json.dumps(cb_body(userData="x" * 5_000_000)).encode()
    resp = await post(node, CB, big)
    assert resp.status_code == 413 and resp.json()["resultcode"] == "1010414"


async def test_unknown_uri_and_wrong_method(node: Node) -> None:
    r = await node.http.get(CB)
    expect(r, 405, "1010006")
    r = await node.http.post("/rest/httpsessions/nothing/v1.0", content=b"{}")
    assert r.status_code == 404 and "resultcode" in r.json()


async def test_paused_display_number_is_replaced(node: Node) -> None:
    store = node.plane.store
    await store.set_number_state("+8675500000001", "paused")
    expect(await post(node, CB, cb_body()), 200, "0")
    assert node.backend.requests[-1].display_nbr == "+8675500000002"
    await store.set_number_state("+8675500000002", "paused")
    expect(await post(node, CB, cb_body(bindNbr="+8675500000009")), 200, "0")
    assert node.backend.requests[-1].display_nbr == "+8675500000009"
    await store.set_number_state("+8675500000002", "released")
    expect(await post(node, CB, cb_body()), 400, "1010023", "displayCalleeNbr")


async def test_record_flag_needs_app_recording(make_node: NodeFactory) -> None:
    node = await make_node(record=False)
    expect(await post(node, CB, cb_body(recordFlag="true")), 400, "1010002", "recordFlag")


# -- limits ------------------------------------------------------------------------------------

async def test_concurrency_limit_1020165(make_node: NodeFactory) -> None:
    node = await make_node(script=lambda _r: FakeScript(talk_s=30), max_calls=2)
    results = await asyncio.gather(*(post(node, CB, cb_body()) for _ in range(5)))
    codes = sorted(r.json()["resultcode"] for r in results)
    assert codes == ["0", "0", "1020165", "1020165", "1020165"]
    assert all(r.status_code == 403 for r in results if r.json()["resultcode"] != "0")
    # ending a call frees its port
    sid = next(r.json()["sessionId"] for r in results if r.json()["resultcode"] == "0")
    expect(await post(node, STOP, {"sessionid": sid, "signal": "call_stop"}), 200, "0")
    for _ in range(100):
        if await node.plane.store.in_use(APP_KEY) == 1:
            break
        await asyncio.sleep(0.05)
    expect(await post(node, CB, cb_body()), 200, "0")


async def test_load_shedding_1010010(make_node: NodeFactory) -> None:
    node = await make_node(script=lambda _r: FakeScript(start_delay_s=0.5),
                           api_extra="max_inflight_requests = 2")
    results = await asyncio.gather(*(post(node, CB, cb_body()) for _ in range(5)))
    codes = sorted(r.json()["resultcode"] for r in results)
    assert codes == ["0", "0", "1010010", "1010010", "1010010"]
    assert all(r.status_code == 403 for r in results if r.json()["resultcode"] == "1010010")
    r = await node.http.get("/admin/v1/apps", headers={"Authorization": "Bearer x"})
    assert r.json()["resultcode"] == "1010003"      # admin API is not shed
    expect(await post(node, CB, cb_body()), 200, "0")


async def test_backend_refusal_releases_the_port(make_node: NodeFactory) -> None:
    node = await make_node(script=lambda _r: FakeScript(refuse=True), max_calls=1)
    expect(await post(node, CB, cb_body()), 500, "1010001")
    assert await node.plane.store.in_use(APP_KEY) == 0


async def test_callee_frequency_soft_limit(make_node: NodeFactory) -> None:
    node = await make_node(api_extra='callee_limit = "enforce"\ncallee_limit_per_day = 2')
    expect(await post(node, CB, cb_body()), 200, "0")
    expect(await post(node, CB, cb_body()), 200, "0")
    expect(await post(node, CB, cb_body()), 403, "1013002", "frequency")
    expect(await post(node, CB, cb_body(calleeNbr="+8613800000003")), 200, "0")


# -- stop --------------------------------------------------------------------------------------

async def test_call_stop(make_node: NodeFactory) -> None:
    node = await make_node(script=lambda _r: FakeScript(talk_s=30))
    sid = expect(await post(node, CB, cb_body()), 200, "0")["sessionId"]
    await asyncio.sleep(0.1)
    expect(await post(node, STOP, {"sessionid": sid, "signal": "call_stop"}), 200, "0")
    for _ in range(100):
        call = await node.plane.store.get_call(sid)
        if call and call["ended_at"]:
            break
        await asyncio.sleep(0.05)
    assert call and call["state_code"] == 8017
    expect(await post(node, STOP, {"sessionid": sid, "signal": "call_stop"}), 404, "1010404")
    expect(await post(node, STOP, {"sessionid": "nope", "signal": "call_stop"}), 404, "1010404")
    expect(await post(node, STOP, {"sessionid": sid, "signal": "stop"}), 400, "1010002", "signal")
    expect(await post(node, STOP, {"sessionId": sid, "signal": "call_stop"}), 400, "1010002")


async def test_stop_other_apps_call_is_not_found(node: Node) -> None:
    node.backend.script_for = lambda _r: FakeScript(talk_s=30)
    sid = expect(await post(node, CB, cb_body()), 200, "0")["sessionId"]
    h = aksk_headers(key="other-app-key-02", secret="other-secret")
    expect(await post(node, STOP, {"sessionid": sid, "signal": "call_stop"}, h), 404, "1010404")
    expect(await post(node, STOP, {"sessionid": sid, "signal": "call_stop"}), 200, "0")


# -- OpenAPI -----------------------------------------------------------------------------------

async def test_openapi_document(node: Node) -> None:
    r = await node.http.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in (CB, NOTIFY, NOTIFY1, VERIFY, STOP, RECORD, "/admin/v1/apps"):
        assert path in doc["paths"], path
    schemas = doc["components"]["schemas"]
    assert "displayCalleeNbr" in schemas["CallbackBody"]["properties"]
    assert "X-AKSK" in doc["components"]["securitySchemes"]
    import schemathesis
    schema = schemathesis.openapi.from_dict(doc)
    assert len(list(schema.get_all_operations())) >= 20


async def test_response_closes_connection(node: Node) -> None:
    r = await post(node, CB, cb_body())
    assert r.headers.get("connection") == "close"
    _ = time.time()
