"""The hang-up matrix: every service × every state a call can be in when it is torn down,
by the far party (BYE / decline) or by callStop. In every case each dialled leg gets
exactly one disconnect (with the expected stateCode), the CDR arrives, and the app's only
concurrency slot (``max_concurrent_calls = 1``) is held during the call and released
after it: a second request is refused while the call runs and accepted once it ended."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    CALLEE,
    CALLER,
    CALLNOTIFY,
    CALLSTOP,
    CALLVERIFY,
    CLICK2CALL,
    DISPLAY,
    ServiceNode,
    assert_leg_lifecycle,
    callback_body,
    statuses,
    wait_closed,
    wait_peer,
)
from tests.integration.services.scen import SAMPLE_PCAP, Uas

pytestmark = pytest.mark.integration

G711 = SAMPLE_PCAP / "g711a.pcap"


def notify_body(**kw: object) -> dict[str, object]:
    b: dict[str, object] = {"displayNbr": DISPLAY, "calleeNbr": CALLEE,
                            "playInfoList": [{"notifyVoice": "long_8s.wav"}]}
    b.update(kw)
    return b


def verify_body(**kw: object) -> dict[str, object]:
    b: dict[str, object] = {"displayNbr": DISPLAY, "calleeNbr": CALLEE, "languageType": 1,
                            "preTone": "long_8s.wav", "verifyCode": "123456", "times": 2}
    b.update(kw)
    return b


@dataclass(frozen=True)
class Case:
    id: str
    path: str
    body: dict[str, object]
    a: Callable[[], Uas] | None          # party A's gateway (callback) — None: not dialled
    b: Callable[[], Uas] | None          # party B (callback) / the callee (notify, verify)
    expect: dict[str, int]               # called number → stateCode of its disconnect
    # callStop once this status event (kind, called) arrived, after a delay
    stop_after: tuple[str, str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def answer_wait() -> Uas:
    return Uas("answer_wait").ring().answer().wait_bye()


def answer_bye(ms: int) -> Callable[[], Uas]:
    return lambda: Uas(f"answer_bye_{ms}").ring().answer().pause(ms).bye()


def ring_cancel() -> Uas:
    return Uas("ring_cancel").ring().until_cancel()


def early_cancel() -> Uas:
    return Uas("early_cancel").ring(code=183, pcap=G711).until_cancel()


CB = CLICK2CALL
CASES = [
    # ---- callback: A ringing
    Case("cb-A-ringing-callStop", CB, callback_body(), ring_cancel, None, {CALLER: 8017},
         stop_after=("alerting", CALLER, 0.3)),
    Case("cb-A-ringing-decline", CB, callback_body(),
         lambda: Uas("decline").ring().pause(300).reject(603, "Decline"), None,
         {CALLER: 8111}),
    # ---- callback: A hears preVoice
    Case("cb-preVoice-A-bye", CB, callback_body(playPreVoice="true"), answer_bye(500), None,
         {CALLER: 8009}),
    Case("cb-preVoice-callStop", CB, callback_body(playPreVoice="true"), answer_wait, None,
         {CALLER: 8017}, stop_after=("answer", CALLER, 0.3)),
    # ---- callback: B ringing (A hears waitVoice)
    Case("cb-B-ringing-A-bye", CB, callback_body(), answer_bye(1500), ring_cancel,
         {CALLER: 8009, CALLEE: 8009}),
    Case("cb-B-ringing-callStop", CB, callback_body(), answer_wait, ring_cancel,
         {CALLER: 8017, CALLEE: 8017}, stop_after=("alerting", CALLEE, 0.3)),
    # ---- callback: B's early media relayed to A
    Case("cb-B-early-media-A-bye", CB, callback_body(), answer_bye(2000), early_cancel,
         {CALLER: 8009, CALLEE: 8009}),
    Case("cb-B-early-media-callStop", CB, callback_body(), answer_wait, early_cancel,
         {CALLER: 8017, CALLEE: 8017}, stop_after=("alerting", CALLEE, 0.8)),
    # ---- callback: record hint tone playing to both
    Case("cb-recordHint-B-bye", CB, callback_body(recordFlag="true"), answer_wait,
         answer_bye(800), {CALLER: 0, CALLEE: 0}),
    Case("cb-recordHint-callStop", CB, callback_body(recordFlag="true"), answer_wait,
         answer_wait, {CALLER: 8017, CALLEE: 8017}, stop_after=("answer", CALLEE, 0.5)),
    # ---- callback: talking (bridged)
    Case("cb-talking-A-bye", CB, callback_body(), answer_bye(2000), answer_wait,
         {CALLER: 0, CALLEE: 0}),
    Case("cb-talking-B-bye", CB, callback_body(), answer_wait, answer_bye(1500),
         {CALLER: 0, CALLEE: 0}),
    Case("cb-talking-callStop", CB, callback_body(), answer_wait, answer_wait,
         {CALLER: 8017, CALLEE: 8017}, stop_after=("answer", CALLEE, 1.0)),
    # ---- callback: last minute (maxDuration = 1: the last minute starts at B's answer)
    Case("cb-lastMinute-B-bye", CB, callback_body(maxDuration=1, lastMinToUE="both"),
         answer_wait, answer_bye(1500), {CALLER: 0, CALLEE: 0}),
    Case("cb-lastMinute-callStop", CB, callback_body(maxDuration=1, lastMinToUE="toa"),
         answer_wait, answer_wait, {CALLER: 8017, CALLEE: 8017},
         stop_after=("answer", CALLEE, 1.0)),
    # ---- notification
    Case("nt-ringing-callStop", CALLNOTIFY, notify_body(), None, ring_cancel, {CALLEE: 8017},
         stop_after=("alerting", CALLEE, 0.3)),
    Case("nt-ringing-decline", CALLNOTIFY, notify_body(), None,
         lambda: Uas("decline").ring().pause(300).reject(603, "Decline"), {CALLEE: 8105}),
    Case("nt-playing-bye", CALLNOTIFY, notify_body(), None, answer_bye(1000), {CALLEE: 0}),
    Case("nt-playing-callStop", CALLNOTIFY, notify_body(), None, answer_wait, {CALLEE: 8017},
         stop_after=("answer", CALLEE, 0.5)),
    Case("nt-collecting-bye", CALLNOTIFY,
         notify_body(playInfoList=[{"notifyVoice": "pre_05s.wav", "collectInd": 2}]), None,
         answer_bye(2000), {CALLEE: 0}),
    Case("nt-collecting-callStop", CALLNOTIFY,
         notify_body(playInfoList=[{"notifyVoice": "pre_05s.wav", "collectInd": 2}]), None,
         answer_wait, {CALLEE: 8017}, stop_after=("answer", CALLEE, 1.5)),
    # ---- verification code
    Case("vc-ringing-callStop", CALLVERIFY, verify_body(), None, ring_cancel, {CALLEE: 8017},
         stop_after=("alerting", CALLEE, 0.3)),
    Case("vc-playing-bye", CALLVERIFY, verify_body(times=0), None, answer_bye(1500),
         {CALLEE: 0}),
    Case("vc-playing-callStop", CALLVERIFY, verify_body(times=0), None, answer_wait,
         {CALLEE: 8017}, stop_after=("answer", CALLEE, 1.0)),
]


async def _stop_when(svc: ServiceNode, receiver: Receiver, sid: str,
                     when: tuple[str, str, float]) -> None:
    kind, called, delay = when
    await receiver.wait_for(lambda: any(k == kind and i.get("called") == called
                                        for k, i in statuses(receiver, sid)), timeout=15)
    await asyncio.sleep(delay)
    r = await svc.post(CALLSTOP, {"sessionid": sid, "signal": "call_stop"})
    assert r.status_code == 200 and r.json()["resultcode"] == "0", r.text


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
async def test_hangup_matrix(node_factory: Any, receiver: Receiver, tmp_path: Path,
                             case: Case) -> None:
    svc: ServiceNode = node_factory(app_extra="max_concurrent_calls = 1")
    peers = []
    if case.a is not None:
        peers.append(svc.party("A", case.a().write(tmp_path)))
    if case.b is not None:
        scen = case.b()
        scen.name = "b_" + scen.name
        peers.append(svc.party("B", scen.write(tmp_path)))
    r = await svc.post(case.path, case.body)
    assert r.status_code == 200, r.text
    sid = r.json()["sessionId"]
    # The only slot is taken while the call runs (APP-2).
    busy = await svc.post(case.path, case.body)
    assert busy.json().get("resultcode") == "1020165", busy.text
    if case.stop_after is not None:
        await _stop_when(svc, receiver, sid, case.stop_after)
    cdr = await wait_closed(receiver, sid, legs=len(case.expect), timeout=30)
    for p in peers:
        res = await wait_peer(p, 20)
        assert res.ok, res.explain() + svc.log()[-4000:]
    events = statuses(receiver, sid)
    assert_leg_lifecycle(events, dict(case.expect))
    assert cdr["sessionId"] == sid
    # The slot is free again: the next request is accepted and dials (then is stopped).
    first = "A" if case.path == CLICK2CALL else "B"
    nxt = svc.party(first, Uas("next_ring_cancel").ring().until_cancel().write(tmp_path))
    again = await svc.post(case.path, case.body)
    assert again.status_code == 200 and again.json()["resultcode"] == "0", again.text
    sid2 = again.json()["sessionId"]
    await _stop_when(svc, receiver, sid2, ("alerting", CALLER if first == "A" else CALLEE, 0))
    await wait_closed(receiver, sid2, legs=1)
    res = await wait_peer(nxt, 10)
    assert res.ok, res.explain()
