"""Per-call SIP traces through the admin API against the real daemon: a signed click2Call to
two SIPp gateways (A answers, B answers and hangs up), then ``/admin/v1/calls/{sid}/sip-trace``
as JSON and as a ladder, ``/admin/v1/sip-traces[/{callId}]``, ``voicecall admin trace``, and a
notification's single callee leg, and a softphone-style B2BUA call (SIPp UAC → node → SIPp
UAS) found by its Call-ID."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import re
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_api import admin_cli
from tests.integration.control_api.helpers import Receiver
from tests.integration.harness import Sipp, uac
from tests.integration.services.node import (
    CALLEE,
    CALLER,
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

ADMIN_TOKEN = "trace-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

TRYING = """  <send>
    <![CDATA[
      SIP/2.0 100 Trying
      Via: [$inv_via]
      From: [$inv_from]
      To: [$inv_to]
      Call-ID: [call_id]
      CSeq: [$inv_cseq] INVITE
      Content-Length: 0
    ]]>
  </send>
"""


def trying_uas(name: str) -> Uas:
    """A gateway that answers the INVITE with 100 Trying first (SIPp does not by itself)."""
    u = Uas(name)
    u.steps.append(TRYING)
    return u


class AdminNode(ServiceNode):
    """The service-test node with a known admin token (``[api]`` is written by the base)."""

    def config(self) -> str:
        api = f'[api]\nlisten = "127.0.0.1:{self.api_port}"\n'
        return super().config().replace(api, api + f'admin_token = "{ADMIN_TOKEN}"\n')

    async def admin(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**ADMIN, **kw.pop("headers", {})}
        async with httpx.AsyncClient(timeout=10, trust_env=False) as c:
            return await c.get(f"http://127.0.0.1:{self.api_port}/admin/v1{path}",
                               headers=headers, **kw)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def node(tmp_path: Path, receiver: Receiver) -> Iterator[AdminNode]:
    n = AdminNode(tmp_path, receiver).start()
    yield n
    n.stop()
    (tmp_path / "daemon.log").write_text(n.log())   # kept for post-mortems


def methods(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(direction, "INVITE" | "100 INVITE" …) of each message: requests by method, responses
    by status and the CSeq method they answer."""
    out = []
    for m in messages:
        first = m["first_line"]
        if first.startswith("SIP/2.0 "):
            cseq = re.search(r"^CSeq:\s*\d+\s+(\S+)", m["text"], re.M | re.I)
            assert cseq, m["text"]
            out.append((m["direction"], f"{first.split()[1]} {cseq.group(1)}"))
        else:
            out.append((m["direction"], first.split()[0]))
    return out


def assert_in_order(got: list[tuple[str, str]], expected: list[tuple[str, str]]) -> None:
    """``expected`` happens in this order, and nothing else does: only retransmissions of
    its messages may come in between (a 200 repeated until its ACK, and that ACK again)."""
    it = iter(got)
    for step in expected:
        assert any(g == step for g in it), (step, got)
    assert set(got) == set(expected), got


async def place_callback(node: AdminNode) -> tuple[str, Sipp, Sipp]:
    a = node.party("A", trying_uas("trace_a").ring().answer().wait_bye().write(node.workdir))
    b = node.party("B", trying_uas("trace_b").ring().answer().pause(1000).bye()
                   .write(node.workdir))
    r = await node.post(CLICK2CALL, callback_body())
    assert r.status_code == 200, r.text
    sid = str(r.json()["sessionId"])
    ra, rb = await wait_peer(a, 40), await wait_peer(b, 40)
    assert ra.ok, ra.explain() + node.log()[-4000:]
    assert rb.ok, rb.explain() + node.log()[-4000:]
    await wait_closed(node.receiver, sid, legs=2, timeout=30)
    return sid, a, b


def cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    admin_cli.register(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = args.func(args)
    return code, out.getvalue()


async def test_callback_trace_json_ladder_dialogs_and_cli(node: AdminNode) -> None:
    sid, _, _ = await place_callback(node)

    # -- JSON: both legs, every message, merged in time order
    r = await node.admin(f"/calls/{sid}/sip-trace")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["resultcode"] == "0" and doc["session_id"] == sid and "ladder" not in doc
    legs = {leg["leg"]: leg for leg in doc["legs"]}
    assert set(legs) == {"A", "B"}, doc["legs"]
    assert (legs["A"]["role"], legs["A"]["number"]) == ("caller", CALLER)
    assert (legs["B"]["role"], legs["B"]["number"]) == ("callee", CALLEE)
    assert legs["A"]["call_id"] != legs["B"]["call_id"]
    msgs = doc["messages"]
    stamps = [m["timestamp"] for m in msgs]
    assert stamps == sorted(stamps)
    for m in msgs:
        assert abs(datetime.fromisoformat(m["time"]).timestamp() - m["timestamp"]) < 0.001
        assert m["transport"] == "udp" and m["local"].endswith(f":{node.sip_port}")
        assert m["call_id"] == legs[m["leg"]]["call_id"]
        cid = re.search(r"^(?:Call-ID|i):\s*(\S+)", m["text"], re.M | re.I)
        assert cid and cid.group(1) == m["call_id"], m["text"]
        assert m["text"].startswith(m["first_line"] + "\r\n")
    a_msgs = [m for m in msgs if m["leg"] == "A"]
    b_msgs = [m for m in msgs if m["leg"] == "B"]
    assert len(a_msgs) == legs["A"]["messages"] and len(b_msgs) == legs["B"]["messages"]
    assert {m["remote"] for m in a_msgs} == {f"127.0.0.1:{node.gwa_port}"}
    assert {m["remote"] for m in b_msgs} == {f"127.0.0.1:{node.gwb_port}"}
    assert_in_order(methods(a_msgs), [
        ("out", "INVITE"), ("in", "100 INVITE"), ("in", "180 INVITE"), ("in", "200 INVITE"),
        ("out", "ACK"), ("out", "BYE"), ("in", "200 BYE")])
    assert_in_order(methods(b_msgs), [
        ("out", "INVITE"), ("in", "100 INVITE"), ("in", "180 INVITE"), ("in", "200 INVITE"),
        ("out", "ACK"), ("in", "BYE"), ("out", "200 BYE")])
    # B is dialled once A has answered: A's 200 comes before B's INVITE in the merged list
    first = {(m["leg"], tuple(methods([m])[0])): i for i, m in reversed(list(enumerate(msgs)))}
    assert first[("A", ("in", "200 INVITE"))] < first[("B", ("out", "INVITE"))]

    # -- the ladder: format=ladder and Accept: text/plain give the same text
    r = await node.admin(f"/calls/{sid}/sip-trace", params={"format": "ladder"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
    ladder = r.text
    r2 = await node.admin(f"/calls/{sid}/sip-trace", headers={"Accept": "text/plain"})
    assert r2.text == ladder
    lines = ladder.splitlines()
    assert lines[0] == f"SIP trace of session {sid}"
    assert f"Call-ID {legs['A']['call_id']}" in lines[1]
    assert f"Call-ID {legs['B']['call_id']}" in lines[2]
    head = next(ln for ln in lines if "voicecall" in ln and "A caller" in ln)
    assert head.index("A caller") < head.index("voicecall") < head.index("B callee"), head
    rows = [ln for ln in lines if re.match(r"^\+\d+\.\d{3}s ", ln)]
    assert len(rows) == len(msgs)
    # A on the left is sent INVITE (arrow pointing left), B on the right too (pointing right)
    assert re.search(r"\|<-+ INVITE \+SDP -+\|", rows[0]), ladder
    assert any(re.search(r"\|-+ INVITE \+SDP -+>\|", ln) for ln in rows), ladder
    assert sum("200 OK (INVITE)" in ln for ln in rows) >= 2, ladder
    assert sum("200 OK (BYE)" in ln for ln in rows) == 2, ladder

    # -- recent Call-IDs, and one of them on its own
    r = await node.admin("/sip-traces")
    listed = {d["call_id"]: d for d in r.json()["sip_traces"]}
    for leg in legs.values():
        assert listed[leg["call_id"]]["session_id"] == sid
        assert listed[leg["call_id"]]["direction"] == "outbound"
    b_id = legs["B"]["call_id"]
    r = await node.admin(f"/sip-traces/{b_id}")
    one = r.json()
    assert r.status_code == 200 and one["call_id"] == b_id and one["session_id"] == sid
    assert [m["first_line"] for m in one["messages"]] == [m["first_line"] for m in b_msgs]
    r = await node.admin(f"/sip-traces/{b_id}", params={"format": "ladder"})
    assert r.text.startswith(f"SIP trace of Call-ID {b_id} (session {sid})")
    assert "BYE" in r.text and "200 OK (BYE)" in r.text

    # -- unknown: a clear 404
    for path in ("/calls/vc1_1_1_20260101000000@vc1/sip-trace", "/sip-traces/nope@nowhere"):
        r = await node.admin(path)
        assert r.status_code == 404, r.text
        assert r.json()["resultcode"] == "1010404" and "No SIP trace" in r.json()["resultdesc"]
    r = await node.admin(f"/calls/{sid}/sip-trace", headers={"Authorization": "Bearer no"})
    assert r.status_code == 401

    # -- the CLI prints the same ladder, or the JSON
    base = ("admin", "--api", f"http://127.0.0.1:{node.api_port}", "--token", ADMIN_TOKEN)
    code, out = await asyncio.to_thread(cli, *base, "trace", sid)
    assert code == 0 and out == ladder, out
    code, out = await asyncio.to_thread(cli, *base, "trace", sid, "--json")
    assert code == 0 and f'"call_id": "{b_id}"' in out and '"first_line": "INVITE sip:' in out
    code, out = await asyncio.to_thread(cli, *base, "trace", "--call-id", b_id)
    assert code == 0 and out.startswith(f"SIP trace of Call-ID {b_id}")
    code, out = await asyncio.to_thread(cli, *base, "trace", "nope")
    assert code == 1 and "1010404" in out
    code, out = await asyncio.to_thread(cli, *base, "traces", "--limit", "1")
    assert code == 0 and out.count('"call_id"') == 1


async def test_b2bua_call_is_traced_by_call_id(node: AdminNode) -> None:
    """A call not started by the API (a gateway calling in through the B2BUA): both dialogs
    show up in the recent list without a session; the inbound one is drawn caller-left."""
    callee = node.party("B", trying_uas("b2b_b").ring().answer().wait_bye().write(node.workdir))
    caller = uac(node.workdir, "uac_basic.xml", f"127.0.0.1:{node.sip_port}",
                 port=node.gwa_port, service=CALLEE, extra=("-d", "500"))
    node.peers.append(caller)
    caller.start()
    rc, rb = await wait_peer(caller, 40), await wait_peer(callee, 40)
    assert rc.ok, rc.explain() + node.log()[-4000:]
    assert rb.ok, rb.explain() + node.log()[-4000:]
    r = await node.admin("/sip-traces")
    dialogs = r.json()["sip_traces"]
    inbound = [d for d in dialogs if d["direction"] == "inbound"
               and d["remote"] == f"udp:127.0.0.1:{node.gwa_port}"]
    outbound = [d for d in dialogs if d["direction"] == "outbound"
                and d["remote"] == f"udp:127.0.0.1:{node.gwb_port}"]
    assert len(inbound) == 1 and len(outbound) == 1, dialogs
    assert inbound[0]["session_id"] is None and outbound[0]["session_id"] is None
    assert inbound[0]["first_line"].startswith(f"INVITE sip:{CALLEE}@")
    r = await node.admin(f"/sip-traces/{inbound[0]['call_id']}", params={"format": "ladder"})
    lines = r.text.splitlines()
    head = next(ln for ln in lines if "voicecall" in ln)
    assert head.index(f"127.0.0.1:{node.gwa_port}") < head.index("voicecall"), r.text
    rows = [ln for ln in lines if ln.startswith("+")]
    assert re.search(r"\|-+ INVITE \+SDP -+>\|", rows[0]), r.text   # it called us
    assert any("200 OK (INVITE)" in ln for ln in rows) and any("BYE" in ln for ln in rows)
    r = await node.admin(f"/sip-traces/{inbound[0]['call_id']}")
    got = methods(r.json()["messages"])
    assert got[0] == ("in", "INVITE") and ("out", "200 INVITE") in got and ("in", "ACK") in got

    # both legs in one trace: the caller left of the switch, the callee right of it
    a_id, b_id = inbound[0]["call_id"], outbound[0]["call_id"]
    r = await node.admin(f"/sip-traces/{a_id}", params={"with": b_id})
    doc = r.json()
    assert doc["call_ids"] == [a_id, b_id], doc
    stamps = [m["timestamp"] for m in doc["messages"]]
    assert stamps == sorted(stamps)
    assert {m["call_id"] for m in doc["messages"]} == {a_id, b_id}
    # the B2BUA dials B on A's INVITE and answers A on B's 200
    order = [(m["call_id"], m["first_line"].split()[0] if not m["first_line"].startswith("SIP")
              else m["first_line"].split()[1]) for m in doc["messages"]]
    assert order.index((a_id, "INVITE")) < order.index((b_id, "INVITE"))
    assert order.index((b_id, "200")) < order.index((a_id, "200"))
    base = ("admin", "--api", f"http://127.0.0.1:{node.api_port}", "--token", ADMIN_TOKEN)
    code, out = await asyncio.to_thread(cli, *base, "trace", "--call-id", a_id,
                                        "--call-id", b_id)
    assert code == 0 and out.startswith(f"SIP trace of Call-ID {a_id} + {b_id}\n"), out
    head = next(ln for ln in out.splitlines() if "voicecall" in ln)
    assert (head.index(f"127.0.0.1:{node.gwa_port}") < head.index("voicecall")
            < head.index(f"127.0.0.1:{node.gwb_port}")), out
    r = await node.admin(f"/sip-traces/{a_id}", params={"with": "nope@nowhere"})
    assert r.status_code == 404 and "nope@nowhere" in r.json()["resultdesc"]


async def test_notification_trace_has_one_callee_leg_on_the_right(node: AdminNode) -> None:
    callee = node.party("B", trying_uas("nt_b").ring().answer().wait_bye().write(node.workdir))
    r = await node.post(CALLNOTIFY, {"displayNbr": DISPLAY, "calleeNbr": CALLEE,
                                     "playInfoList": [{"notifyVoice": "pre_05s.wav"}]})
    assert r.status_code == 200, r.text
    sid = r.json()["sessionId"]
    await wait_closed(node.receiver, sid, legs=1, timeout=30)
    res = await wait_peer(callee, 30)
    assert res.ok, res.explain() + node.log()[-4000:]
    doc = (await node.admin(f"/calls/{sid}/sip-trace")).json()
    assert [(g["leg"], g["role"], g["number"]) for g in doc["legs"]] == [("A", "callee", CALLEE)]
    # the switch plays the file and hangs up: its BYE goes out, the 200 comes back
    assert_in_order(methods(doc["messages"]), [
        ("out", "INVITE"), ("in", "100 INVITE"), ("in", "180 INVITE"), ("in", "200 INVITE"),
        ("out", "ACK"), ("out", "BYE"), ("in", "200 BYE")])
    r = await node.admin(f"/calls/{sid}/sip-trace", headers={"Accept": "text/plain"})
    lines = r.text.splitlines()
    head = next(ln for ln in lines if "voicecall" in ln and "A callee" in ln)
    assert head.index("voicecall") < head.index("A callee"), r.text
    rows = [ln for ln in lines if ln.startswith("+")]
    assert re.search(r"\|-+ INVITE \+SDP -+>\|", rows[0]), r.text
    assert re.search(r"\|<-+ 200 OK \(BYE\) -+\|", rows[-1]), r.text
