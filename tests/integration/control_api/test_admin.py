"""/admin/v1 over HTTP and the ``voicecall admin`` commands (control_api.admin_cli) against a
running node: accounts, apps (secret once, reset), numbers (states, irreversible release),
play files (format checks, approval), templates (rules, approval), call search, CDRs, billing."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import httpx

from control_api import admin_cli
from tests.integration.control_api.conftest import Node
from tests.integration.control_api.helpers import ADMIN_TOKEN, aksk_headers, alaw_wav
from tests.integration.control_api.test_api import CB, NOTIFY, cb_body, expect, post

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def adm(node: Node, method: str, path: str, **kw: Any) -> httpx.Response:
    return await node.http.request(method, "/admin/v1" + path, headers=ADMIN, **kw)


async def test_admin_token_required(node: Node) -> None:
    r = await node.http.get("/admin/v1/apps")
    expect(r, 401, "1010003")
    r = await node.http.get("/admin/v1/apps", headers={"Authorization": "Bearer nope"})
    expect(r, 401, "1010003")
    r = await node.http.get("/admin/v1/apps", headers=aksk_headers())
    expect(r, 401, "1010003")


async def test_app_lifecycle_secret_shown_once_and_reset(node: Node) -> None:
    expect(await adm(node, "POST", "/accounts", json={"id": "sp9", "name": "Nine"}), 200, "0")
    expect(await adm(node, "POST", "/accounts", json={"id": "sp9"}), 400, "1010002", "exists")
    created = expect(await adm(node, "POST", "/apps", json={"account": "sp9", "record": True}),
                     200, "0")
    key, secret = created["app"]["app_key"], created["app_secret"]
    assert "app_secret" not in created["app"]
    listed = expect(await adm(node, "GET", "/apps", params={"account": "sp9"}), 200, "0")
    assert [a["app_key"] for a in listed["apps"]] == [key]
    assert secret not in json.dumps(listed) and "app_secret" not in listed["apps"][0]
    shown = expect(await adm(node, "GET", f"/apps/{key}"), 200, "0")
    assert "app_secret" not in shown["app"] and shown["in_use"] == 0
    expect(await adm(node, "POST", "/numbers", json={"account": "sp9",
                                                     "number": "+862012345678"}), 200, "0")
    body = cb_body(displayNbr="+862012345678", displayCalleeNbr="+862012345678")
    expect(await post(node, CB, body, aksk_headers(key, secret)), 200, "0")
    new = expect(await adm(node, "POST", f"/apps/{key}/reset-secret"), 200, "0")["app_secret"]
    assert new != secret
    expect(await post(node, CB, body, aksk_headers(key, secret)), 401, "1010003")
    expect(await post(node, CB, body, aksk_headers(key, new)), 200, "0")
    expect(await adm(node, "PATCH", f"/apps/{key}", json={"state": "suspended"}), 200, "0")
    expect(await post(node, CB, body, aksk_headers(key, new)), 403, "1010008")
    expect(await adm(node, "PATCH", f"/apps/{key}", json={"account": "sp1"}), 400, "1010002")
    expect(await adm(node, "PATCH", "/apps/nope", json={"name": "x"}), 404, "1010404")
    expect(await adm(node, "PATCH", f"/apps/{key}",
                     json={"status_url": "ftp://x/y"}), 400, "1010002", "status_url")


async def test_apps_per_account_quota(node: Node) -> None:
    for _ in range(4):   # sp1 already has one app from the config; quota is 5
        expect(await adm(node, "POST", "/apps", json={"account": "sp1"}), 200, "0")
    expect(await adm(node, "POST", "/apps", json={"account": "sp1"}), 403, "1013002", "quota")


async def test_numbers_states_and_release(node: Node) -> None:
    expect(await adm(node, "POST", "/numbers", json={"account": "sp1",
                                                     "number": "+8613800000009"}),
           400, "1010002", "mobile")
    expect(await adm(node, "POST", "/numbers", json={"account": "sp1", "number": "+85212345678"}),
           400, "1010002")
    expect(await adm(node, "POST", "/numbers", json={"account": "sp1", "number": "+8675500000001"}),
           400, "1010002", "exists")
    expect(await adm(node, "POST", "/numbers", json={"account": "sp1", "kind": "bind",
                                                     "number": "+8675500000010"}),
           400, "1010002", "app_key")
    expect(await adm(node, "POST", "/numbers", json={"account": "sp1", "kind": "bind",
                                                     "number": "+8675500000010",
                                                     "app_key": "other-app-key-02"}),
           400, "1010002", "belong")
    n = "%2B8675500000001"
    assert expect(await adm(node, "PATCH", f"/numbers/{n}", json={"state": "paused"}),
                  200, "0")["number"]["state"] == "paused"
    expect(await adm(node, "POST", f"/numbers/{n}/release"), 200, "0")
    expect(await adm(node, "PATCH", f"/numbers/{n}", json={"state": "active"}),
           400, "1010002", "irreversible")
    expect(await adm(node, "PATCH", "/numbers/%2B8600", json={"state": "active"}),
           404, "1010404")
    listed = expect(await adm(node, "GET", "/numbers", params={"state": "released"}), 200, "0")
    assert [x["number"] for x in listed["numbers"]] == ["+8675500000001"]
    assert listed["numbers"][0]["released_at"]


async def test_play_file_upload_checks_and_approval(node: Node) -> None:
    up = "/play-files/sp1/hello.wav"
    expect(await adm(node, "PUT", up, content=alaw_wav(0.3, rate=16000)), 400, "1010002", "Hz")
    expect(await adm(node, "PUT", up, content=alaw_wav(0.3, subtype="PCM_16")),
           400, "1010002", "A-law")
    expect(await adm(node, "PUT", up, content=alaw_wav(0.3, channels=2)), 400, "1010002", "mono")
    expect(await adm(node, "PUT", up, content=b"MZ" + b"\0" * 100), 400, "1010002", "WAV")
    expect(await adm(node, "PUT", up, content=alaw_wav(270)), 400, "1010002", "2 MB")
    r = await adm(node, "PUT", "/play-files/sp1/..%2F..%2Fevil.wav", content=alaw_wav(0.3))
    assert r.status_code in (400, 404) and r.json()["resultcode"] != "0"
    expect(await adm(node, "PUT", "/play-files/sp1/a%20b.wav", content=alaw_wav(0.3)),
           400, "1010002", "file name")
    assert not list(node.data_dir.parent.glob("**/evil.wav"))
    pf = expect(await adm(node, "PUT", up, content=alaw_wav(0.3)), 200, "0")["play_file"]
    assert pf["state"] == "pending"
    body = cb_body(waitVoice="hello.wav")
    expect(await post(node, CB, body), 400, "1010002", "hello.wav does not exist")
    expect(await adm(node, "POST", "/play-files/sp1/hello.wav/approve"), 200, "0")
    expect(await post(node, CB, body), 200, "0")
    assert Path(node.backend.requests[-1].wait_voice or "").read_bytes()[:4] == b"RIFF"  # type: ignore[union-attr]
    expect(await adm(node, "POST", "/play-files/sp1/hello.wav/reject", json={"reason": "no"}),
           200, "0")
    expect(await post(node, CB, body), 400, "1010002", "does not exist")
    # another account's file is not visible to this app
    await node.http.put("/admin/v1/play-files/sp2/x.wav", content=alaw_wav(0.2), headers=ADMIN)
    expect(await adm(node, "POST", "/play-files/sp2/x.wav/approve"), 200, "0")
    expect(await post(node, CB, cb_body(waitVoice="x.wav")), 400, "1010002", "x.wav")


async def test_templates_rules_and_approval(node: Node) -> None:
    bad = {"account": "sp1", "id": "t1", "text": "取件时间${DATE}${TIME}"}
    expect(await adm(node, "POST", "/templates", json=bad), 400, "1010002", "comma")
    expect(await adm(node, "POST", "/templates", json={**bad, "text": "x" * 901}),
           400, "1010002", "900")
    ok = {"account": "sp1", "id": "t1", "text": "请于${DATE},${TIME}前领取快递${TXT_6}。"}
    assert expect(await adm(node, "POST", "/templates", json=ok), 200, "0")["template"][
        "state"] == "pending"
    item = {"templateId": "t1", "templateParas": ["2026/03/01", "18:30", "顺丰"]}
    body = {"displayNbr": "+8675500000001", "calleeNbr": "+8613800000002",
            "playInfoList": [item]}
    expect(await post(node, NOTIFY, body), 400, "1010002", "t1 does not exist")
    expect(await adm(node, "POST", "/templates/sp1/t1/approve"), 200, "0")
    expect(await post(node, NOTIFY, body), 200, "0")
    assert node.backend.requests[-1].items[0].tts_text == "请于2026/03/01,18:30前领取快递顺丰。"  # type: ignore[union-attr]
    expect(await adm(node, "POST", "/templates/sp1/none/approve"), 404, "1010404")


async def test_call_search_cdrs_and_billing(node: Node) -> None:
    for callee in ("+8613800000002", "+8613800000003", "+8613900000004"):
        expect(await post(node, CB, cb_body(calleeNbr=callee)), 200, "0")
    await node.backend.drain()
    await node.plane.sink.drain()  # type: ignore[union-attr]
    found = expect(await adm(node, "GET", "/calls", params={"callee": "13800"}), 200, "0")
    assert sorted(c["callee"] for c in found["calls"]) == ["+8613800000002", "+8613800000003"]
    found = expect(await adm(node, "GET", "/calls", params={"service_type": "001"}), 200, "0")
    assert found["calls"] == []
    expect(await adm(node, "GET", "/calls", params={"since": "yesterday"}), 400, "1010002")
    expect(await adm(node, "GET", "/calls", params={"limit": 0}), 400, "1010002")
    expect(await adm(node, "GET", "/calls", params={"callee": "' OR 1=1 --"}), 200, "0")
    bill = expect(await adm(node, "GET", "/billing"), 200, "0")
    (usage,) = bill["usage"]
    assert usage["calls"] == 3 and usage["minutes"] == 6 and usage["charge"] == "1.080"
    assert any(r["account_id"] == "sp1" and float(r["rent"]) == 90.0 for r in bill["rent"])
    expect(await adm(node, "GET", "/cdrs", params={"state": "bogus"}), 400, "1010002")


def _cli(node: Node, *argv: str) -> tuple[int, Any]:
    parser = argparse.ArgumentParser(prog="voicecall")
    admin_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["admin", "--api", node.url, "--token", ADMIN_TOKEN, *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, json.loads(out.getvalue())


async def test_admin_cli_commands(node: Node, tmp_path: Path) -> None:
    async def cli(*argv: str) -> tuple[int, Any]:
        return await asyncio.to_thread(_cli, node, *argv)

    code, out = await cli("accounts", "add", "sp7", "--name", "Seven")
    assert code == 0 and out["account"]["id"] == "sp7"
    code, out = await cli("apps", "add", "--account", "sp7", "--record", "--max-calls", "3")
    assert code == 0 and out["app"]["max_concurrent_calls"] == 3 and out["app_secret"]
    key = out["app"]["app_key"]
    code, out = await cli("apps", "set", key, "--no-record", "--name", "seven")
    assert code == 0 and out["app"]["record"] is False and out["app"]["name"] == "seven"
    code, out = await cli("apps", "reset-secret", key)
    assert code == 0 and out["app_secret"]
    code, out = await cli("numbers", "add", "+862087654321", "--account", "sp7")
    assert code == 0
    code, out = await cli("numbers", "pause", "+862087654321")
    assert code == 0 and out["number"]["state"] == "paused"
    code, out = await cli("numbers", "add", "+8613800000001", "--account", "sp7")
    assert code == 1 and out["resultcode"] == "1010002"
    wav = tmp_path / "greet.wav"
    wav.write_bytes(alaw_wav(0.2))
    code, out = await cli("play-files", "upload", "sp7", str(wav))
    assert code == 0 and out["play_file"]["state"] == "pending"
    code, out = await cli("play-files", "approve", "sp7", "greet.wav")
    assert code == 0 and out["play_file"]["state"] == "approved"
    code, out = await cli("templates", "add", "--account", "sp7", "--id", "c1",
                          "--text", "验证码${NUM_6}")
    assert code == 0
    code, out = await cli("templates", "approve", "sp7", "c1")
    assert code == 0 and out["template"]["state"] == "approved"
    code, out = await cli("calls", "search", "--callee", "138")
    assert code == 0 and out["calls"] == []
    code, out = await cli("calls", "stop", "no-such-session")
    assert code == 1 and out["resultcode"] == "1010404", out
    code, out = await cli("nodes")
    assert code == 0 and [n["alive"] for n in out["nodes"] if n["name"] == out["node"]] == [True]
    code, out = await cli("cdrs", "list", "--state", "parked")
    assert code == 0 and out["cdrs"] == []
    code, out = await cli("cdrs", "repush", "--state", "parked")
    assert code == 0 and out["requeued"] == 0
    code, out = await cli("billing", "--account", "sp7")
    assert code == 0 and out["usage"] == []
