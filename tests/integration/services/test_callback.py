"""Voice callback end to end: a signed click2Call makes real SIP calls to SIPp gateways (A,
then B), bridges real RTP, records, and the status/CDR webhooks arrive at a real receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    CALLEE,
    CALLER,
    DISPLAY,
    DISPLAY_B,
    ServiceNode,
    fees,
    statuses,
    wait_peer,
)

pytestmark = pytest.mark.integration

CLICK2CALL = "/rest/httpsessions/click2Call/v2.0"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def svc(tmp_path: Path, receiver: Receiver) -> ServiceNode:
    node = ServiceNode(tmp_path, receiver).start()
    yield node
    node.stop()


def body(**kw: object) -> dict[str, object]:
    b: dict[str, object] = {"displayNbr": DISPLAY, "callerNbr": CALLER,
                            "displayCalleeNbr": DISPLAY_B, "calleeNbr": CALLEE}
    b.update(kw)
    return b


async def test_callback_bridges_records_and_reports(svc: ServiceNode, receiver: Receiver) -> None:
    a = svc.party("A", "uas_basic.xml")
    # B talks 9 s after answering: the record hint (~3 s) plays first, then the bridge.
    b = svc.party("B", "uas_talk_bye.xml", extra=("-d", "9000"))
    r = await svc.post(CLICK2CALL, body(recordFlag="true", partyTypeRequiredInDisconnect="true",
                                        userData="order-42"))
    assert r.status_code == 200, r.text
    sid = r.json()["sessionId"]
    ra, rb = await wait_peer(a), await wait_peer(b)
    assert rb.ok, rb.explain() + svc.log()[-4000:]
    assert ra.ok, ra.explain() + svc.log()[-4000:]
    # A is called first showing displayNbr, B second showing displayCalleeNbr (NUM-3).
    assert f"From: <sip:{DISPLAY}@" in ra.messages or f"sip:{DISPLAY}@" in ra.messages
    assert f"sip:{DISPLAY_B}@" in rb.messages
    await receiver.wait_for(lambda: len(fees(receiver, sid)) == 1, timeout=15)
    events = statuses(receiver, sid)
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["callout", "answer", "callout"] or kinds[:4] == [
        "callout", "alerting", "answer", "callout"], kinds
    assert kinds.count("disconnect") == 2, kinds
    assert kinds.index("answer") < kinds.index("callout", 1)
    a_events = [i for k, i in events if i.get("called") == CALLER]
    b_events = [i for k, i in events if i.get("called") == CALLEE]
    assert all(i["caller"] == DISPLAY for i in a_events)
    assert all(i["caller"] == DISPLAY_B for i in b_events)
    disconnects = [i for k, i in events if k == "disconnect"]
    assert {d["stateCode"] for d in disconnects} == {0}
    assert {d.get("partyType") for d in disconnects} == {"1"}   # B hung up first
    assert all(i.get("userData") == "order-42" for _, i in events)
    cdr = fees(receiver, sid)[0]
    assert cdr["serviceType"] == "002"
    assert cdr["callerNum"] == DISPLAY and cdr["calleeNum"] == CALLER
    assert cdr["fwdDisplayNum"] == DISPLAY_B and cdr["fwdDstNum"] == CALLEE
    for f in ("callOutStartTime", "callOutAnswerTime", "fwdStartTime", "fwdAnswerTime",
              "callEndTime"):
        assert cdr.get(f), f
    (svc.workdir / "daemon.log").write_text(svc.log())
    assert cdr["recordFlag"] == 1 and cdr.get("recordObjectName"), cdr
    # The recording: A-law 8 kHz mono WAV, about as long as the talk time.
    rec = await svc.get("/rest/provision/voice/record/v1.0", fileName=cdr["recordObjectName"],
                        recordDomain=cdr["recordDomain"])
    assert rec.status_code == 301, rec.text
    files = list((svc.workdir / "data" / "recordings").rglob("*.wav"))
    assert len(files) == 1
    info = soundfile.info(str(files[0]))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ALAW")
    data, _ = soundfile.read(str(files[0]))
    assert 3.0 <= info.duration <= 9.0, info.duration
    assert float(np.sqrt(np.mean(data ** 2))) > 0.001   # B's pcap audio is in it
