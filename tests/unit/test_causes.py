"""SIP final status → Q.850 (RFC 3398) and stateCode (control-api §5.4), both sides."""

from __future__ import annotations

import pytest

from switch.services.causes import leg_failure, q850_for


@pytest.mark.parametrize(("status", "rang", "callee", "caller", "q850"), [
    (486, True, 8102, 8108, 17),
    (600, False, 8102, 8108, 17),
    (404, False, 8100, 8106, 1),
    (484, False, 8100, 8106, 28),
    (480, True, 8103, 8109, 18),
    (503, False, 8103, 8109, 41),
    (408, False, 8103, 8109, 102),   # no response at all: unreachable, not "no answer"
    (410, False, 8104, 8110, 22),
    (603, True, 8105, 8111, 21),
    (403, False, 8105, 8111, 21),
])
def test_table(status: int, rang: bool, callee: int, caller: int, q850: int) -> None:
    b = leg_failure(status, caller_side=False, rang=rang)
    a = leg_failure(status, caller_side=True, rang=rang)
    assert (b.state_code, a.state_code) == (callee, caller)
    assert b.q850 == a.q850 == q850
    assert b.sip_code == status


def test_no_answer_after_ringing_is_8101_with_q850_19() -> None:
    f = leg_failure(487, caller_side=False, rang=True, timed_out=True)
    assert (f.state_code, f.q850) == (8101, 19)
    f = leg_failure(408, caller_side=True, rang=True)
    assert (f.state_code, f.q850) == (8107, 19)


def test_q850_defaults() -> None:
    assert q850_for(200) == 0
    assert q850_for(499) == 127
    assert q850_for(599) == 127
