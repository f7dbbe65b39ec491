"""Callback legs that never connect: each SIP failure of A or B gives the exact stateCode on
that leg's disconnect and the RFC 3398 Q.850 cause in the CDR (``callOutUnaswRsn`` for A,
``fwdUnaswRsn`` for B), one disconnect per dialled leg and one CDR."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    CALLEE,
    CALLER,
    CLICK2CALL,
    assert_leg_lifecycle,
    callback_body,
    wait_closed,
    wait_peer,
)
from tests.integration.services.scen import Uas

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Case:
    failure: str          # "486", "404", "480", "noanswer", "down"
    state_code: int
    q850: int
    sip: int              # sipStatusCode in the CDR


def failing(name: str, failure: str) -> Uas | None:
    """The gateway of the failing party; None = nobody listens (gateway down)."""
    u = Uas(name)
    if failure == "486":
        return u.ring().reject(486, "Busy Here")
    if failure == "404":
        return u.reject(404, "Not Found")
    if failure == "480":
        return u.ring().reject(480, "Temporarily Unavailable")
    if failure == "noanswer":
        return u.ring().until_cancel()
    assert failure == "down"
    return None


B_CASES = [
    Case("486", 8102, 17, 486),
    Case("404", 8100, 1, 404),
    Case("480", 8103, 18, 480),
    Case("noanswer", 8101, 19, 487),
    Case("down", 8103, 102, 408),
]
A_CASES = [
    Case("486", 8108, 17, 486),
    Case("404", 8106, 1, 404),
    Case("480", 8109, 18, 480),
    Case("noanswer", 8107, 19, 487),
    Case("down", 8109, 102, 408),
]


@pytest.mark.parametrize("case", B_CASES, ids=lambda c: f"B-{c.failure}")
async def test_callee_failure(node_factory, receiver: Receiver, tmp_path, case: Case) -> None:
    svc = node_factory()
    a = svc.party("A", Uas("a_answer").ring().answer().wait_bye().write(tmp_path))
    scen = failing("b_fail", case.failure)
    b = svc.party("B", scen.write(tmp_path)) if scen else None
    r = await svc.post(CLICK2CALL, callback_body())
    assert r.status_code == 200, r.text
    sid = r.json()["sessionId"]
    cdr = await wait_closed(receiver, sid, legs=2, timeout=40)
    ra = await wait_peer(a)
    assert ra.ok, ra.explain() + svc.log()[-3000:]
    if b is not None:
        rb = await wait_peer(b)
        assert rb.ok, rb.explain() + svc.log()[-3000:]
    assert_leg_lifecycle(await _events(receiver, sid), {CALLER: case.state_code,
                                                        CALLEE: case.state_code})
    assert cdr["fwdUnaswRsn"] == case.q850, cdr
    assert cdr["callOutUnaswRsn"] == 0, cdr
    assert cdr["sipStatusCode"] == case.sip, cdr
    assert cdr.get("callOutAnswerTime") and cdr.get("fwdStartTime"), cdr
    assert not cdr.get("fwdAnswerTime"), cdr
    assert cdr.get("failTime"), cdr
    assert cdr["recordFlag"] == 0


@pytest.mark.parametrize("case", A_CASES, ids=lambda c: f"A-{c.failure}")
async def test_caller_failure(node_factory, receiver: Receiver, tmp_path, case: Case) -> None:
    svc = node_factory()
    scen = failing("a_fail", case.failure)
    a = svc.party("A", scen.write(tmp_path)) if scen else None
    r = await svc.post(CLICK2CALL, callback_body())
    assert r.status_code == 200, r.text
    sid = r.json()["sessionId"]
    cdr = await wait_closed(receiver, sid, legs=1, timeout=40)
    if a is not None:
        ra = await wait_peer(a)
        assert ra.ok, ra.explain() + svc.log()[-3000:]
    # B is never called: only A's events.
    assert_leg_lifecycle(await _events(receiver, sid), {CALLER: case.state_code})
    assert cdr["callOutUnaswRsn"] == case.q850, cdr
    assert cdr["sipStatusCode"] == case.sip, cdr
    assert not cdr.get("callOutAnswerTime") and not cdr.get("fwdStartTime"), cdr
    assert cdr.get("failTime"), cdr


async def _events(receiver: Receiver, sid: str):  # type: ignore[no-untyped-def]
    from tests.integration.services.node import statuses
    return statuses(receiver, sid)
