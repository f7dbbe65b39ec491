"""Pure rules: numbers (NUM-1/2/7), templates (TPL-1/2), billing (BILL-1/2, EV-6), FeeInfo,
push signatures and receiver success, CDR batching, recording URLs and names."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path

import pytest

from control_api import numbers as nums
from control_api import templates as tpl
from control_api.billing import charge_call, leg_minutes, monthly_rent_milli, number_pays_rent
from control_api.cdr import build_fee_info, fmt_time
from control_api.outbox import group_batches
from control_api.playfiles import check_name
from control_api.pusher import PushTarget, push_headers, receiver_accepted
from control_api.recordings import RecordingStore, object_name_for, safe_name
from switch.events import CallEnded, LegTimes


def ts(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: float = 0) -> float:
    return calendar.timegm((y, mo, d, h, mi, 0, 0, 0, 0)) + s


# -- numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("n", ["+8613800000001", "+8619912345678", "+8675528000002",
                               "+861012345678", "+862112345678", "+867311234567"])
def test_dialable_mainland(n: str) -> None:
    assert nums.check_dialable(n) is None


@pytest.mark.parametrize(("n", "why"), [
    ("+85212345678", "Hong Kong"), ("+85361234567", "Macao"), ("+886912345678", "Taiwan"),
    ("+14155550100", "International"), ("+447911123456", "International"),
    ("+8695588123", "95xxx"), ("+869501234567", "95xxx"), ("+8696123456", "96xxx"),
    ("+869911234567", "Xinjiang"), ("+869981234567", "Xinjiang"), ("+869031234567", "Xinjiang"),
    ("+868911234567", "Tibet"), ("+868971234567", "Tibet"),
])
def test_forbidden_regions(n: str, why: str) -> None:
    p = nums.check_dialable(n)
    assert p is not None and p.forbidden and why in p.reason


def test_every_table_row_is_rejected() -> None:
    for prefix, why in nums.FORBIDDEN_PREFIXES:
        p = nums.check_dialable(prefix + "1234567")
        assert p is not None and p.forbidden and p.reason.startswith(why), prefix


def test_extra_forbidden_prefixes_from_config() -> None:
    assert nums.check_dialable("+8613899100000") is None
    p = nums.check_dialable("+8613899100000", ["+8613899"])
    assert p is not None and p.forbidden


@pytest.mark.parametrize("n", ["8613800000001", "+86138", "+86abc12345678", "", "+0861380000",
                               "+86138000000011", "+8612345"])
def test_malformed(n: str) -> None:
    p = nums.check_dialable(n)
    assert p is not None and not p.forbidden


def test_provisionable_is_fixed_line_only() -> None:
    assert nums.check_provisionable("+8675500000001") is None
    assert "mobile" in (nums.check_provisionable("+8613800000001") or "")
    assert nums.check_provisionable("+85212345678") is not None


# -- templates ---------------------------------------------------------------------------------

def test_template_examples_render() -> None:
    assert tpl.render("尊敬的${TXT_8}您的初始密码为${NUM_6}。", ["张三", "123456"]) == \
        "尊敬的张三您的初始密码为123456。"
    assert tpl.render("请于${DATE},${TIME}前领取您的快递。", ["2017/07/16", "18:30"]) == \
        "请于2017/07/16,18:30前领取您的快递。"


@pytest.mark.parametrize(("text", "why"), [
    ("a" * 901, "900"), ("你" * 301, "900"), ("${FOO}", "unknown"), ("${TXT_0}", "length"),
    ("${TXT_33}", "length"), ("${DATE}${TIME}", "comma"), ("${DATE} ${TIME}", "comma"),
    ("abc ${TXT_3", "unterminated"), ("", "empty"),
])
def test_template_rules(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        tpl.parse_template(text)


def test_template_byte_count_is_utf8() -> None:
    tpl.parse_template("你" * 300)            # 900 bytes exactly
    assert tpl.utf8_len("你a") == 4


@pytest.mark.parametrize(("text", "params", "why"), [
    ("${NUM_4}", ["12a4"], "digits"), ("${NUM_4}", ["12345"], "digits"),
    ("${TXT_3}", ["abcd"], "characters"), ("${TXT_32}", ["你" * 11], "32 bytes"),
    ("${DATE}", ["2017-07-16"], "YYYY/MM/DD"), ("${TIME}", ["25:00"], "HH:MM"),
    ("${NUM_2}", [], "needs 1"), ("${NUM_2}", ["1", "2"], "needs 1"),
])
def test_template_params(text: str, params: list[str], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        tpl.render(text, params)


# -- billing -----------------------------------------------------------------------------------

def test_leg_minutes_round_up_per_started_minute() -> None:
    assert leg_minutes(None, 100.0) == 0
    assert leg_minutes(100.0, 100.0) == 0
    assert leg_minutes(100.0, 100.001) == 1
    assert leg_minutes(100.0, 160.0) == 1
    assert leg_minutes(100.0, 160.001) == 2
    assert leg_minutes(100.0, 99.0) == 0


def test_callback_billed_on_both_legs() -> None:
    c = charge_call("002", a_answer=0.0, b_answer=10.0, end=130.0, rate_per_minute=0.18)
    assert (c.caller_minutes, c.callee_minutes, c.talk_minutes, c.billed_minutes) == (3, 2, 2, 5)
    assert c.charge == Decimal("0.9")


def test_notification_billed_on_one_leg_and_unanswered_is_free() -> None:
    c = charge_call("001", a_answer=5.0, b_answer=None, end=66.0, rate_per_minute="0.18")
    assert (c.billed_minutes, c.charge_milli) == (2, 360)
    c = charge_call("002", a_answer=None, b_answer=None, end=66.0, rate_per_minute=0.18)
    assert c.billed_minutes == 0 and c.charge_milli == 0


def test_number_rent_rules() -> None:
    march = (2026, 3)
    assert number_pays_rent(ts(2026, 1, 5), None, *march)            # in use on day 1
    assert number_pays_rent(ts(2026, 3, 20), None, *march)           # issued during month
    assert number_pays_rent(ts(2026, 1, 5), ts(2026, 3, 2), *march)  # released in month
    assert not number_pays_rent(ts(2026, 1, 5), ts(2026, 2, 27), *march)
    assert not number_pays_rent(ts(2026, 4, 1), None, *march)
    assert monthly_rent_milli([(ts(2026, 1, 5), None), (ts(2026, 4, 2), None)],
                              2026, 3, 30) == 30_000


# -- FeeInfo -----------------------------------------------------------------------------------

CALL = {"session_id": "vc1_1_42_20260301120000@vc1", "app_key": "k", "account_id": "sp1",
        "service_type": "002", "display_nbr": "+8675500000001", "caller": "+8613800000001",
        "callee": "+8613800000002", "display_callee_nbr": "+8675500000002", "bind_nbr": "",
        "user_data": "u1", "created_at": int(ts(2026, 3, 1, 12) * 1000)}


def test_fee_info_callback_fields() -> None:
    t0 = ts(2026, 3, 1, 12)
    ended = CallEnded(session_id=CALL["session_id"], end_time=t0 + 200.4,
                      a=LegTimes(t0, t0 + 2, t0 + 5.5, t0 + 200.4),
                      b=LegTimes(t0 + 6, t0 + 8, t0 + 12, t0 + 200.4), tts_play_times=0)
    fee = build_fee_info(CALL, ended, host_name="vc1", record_object_name="x.wav",
                         record_domain="127.0.0.1:8080", record_download_url="http://u")
    assert fee["callOutStartTime"] == "2026-03-01 12:00:00"
    assert fee["callOutAnswerTime"] == "2026-03-01 12:00:05"
    assert fee["fwdAnswerTime"] == "2026-03-01 12:00:12"
    assert fee["callEndTime"] == "2026-03-01 12:03:20"
    assert fee["callerNum"] == "+8675500000001" and fee["calleeNum"] == "+8613800000001"
    assert fee["fwdDisplayNum"] == "+8675500000002" and fee["fwdDstNum"] == "+8613800000002"
    assert fee["serviceType"] == "002" and fee["direction"] == 0 and fee["spId"] == "sp1"
    assert fee["recordFlag"] == 1 and fee["recordObjectName"] == "x.wav"
    assert fee["recordDomain"] == "127.0.0.1:8080" and fee["userData"] == "u1"
    assert fee["bindNum"] == "+8675500000001" and fee["hostName"] == "vc1"
    assert "failTime" not in fee
    json.dumps(fee)


def test_fee_info_notification_has_no_forward_fields() -> None:
    call = {**CALL, "service_type": "001", "caller": CALL["display_nbr"], "user_data": ""}
    t0 = ts(2026, 3, 1)
    ended = CallEnded(session_id="s", end_time=t0 + 9, a=LegTimes(t0, t0 + 1, None, t0 + 9, 19),
                      state_code=8101, ul_fail_reason=514, sip_status_code=480, fail_time=t0 + 9)
    fee = build_fee_info(call, ended, host_name="h", record_object_name=None, record_domain=None,
                         record_download_url=None)
    assert not any(k.startswith("fwd") for k in fee)
    assert fee["calleeNum"] == CALL["callee"] and fee["callOutUnaswRsn"] == 19
    assert fee["failTime"] == "2026-03-01 00:00:09" and fee["recordFlag"] == 0
    assert "userData" not in fee and fmt_time(None) is None


# -- pushes ------------------------------------------------------------------------------------

def test_push_signature_formula() -> None:
    target = PushTarget("http://127.0.0.1:9/status", "k", "sec", newlines=True)
    h = push_headers(target, ts(2026, 3, 1), beijing_time=True)
    attrs = dict(p.split("=", 1) for p in h["X-AKSK"].removeprefix("UsernameToken ").split(", "))
    nonce, created = attrs["Nonce"].strip('"'), attrs["Created"].strip('"')
    assert created == "2026-03-01T08:00:00Z"
    want = base64.b64encode(hmac.new(b"sec", f"{target.url}\n{nonce}\n{created}".encode(),
                                     hashlib.sha256).digest()).decode()
    assert attrs["PasswordDigest"].strip('"') == want
    h2 = push_headers(PushTarget(target.url, "k", "sec", newlines=False), 0, beijing_time=False)
    a2 = dict(p.split("=", 1) for p in h2["X-AKSK"].removeprefix("UsernameToken ").split(", "))
    want2 = base64.b64encode(hmac.new(b"sec", (target.url + a2["Nonce"].strip('"')
                                               + a2["Created"].strip('"')).encode(),
                                      hashlib.sha256).digest()).decode()
    assert a2["PasswordDigest"].strip('"') == want2


@pytest.mark.parametrize(("status", "body", "ok"), [
    (200, b"", True), (200, b'{"resultcode":"0"}', True), (200, b'{"resultcode":0}', True),
    (200, b'{"resultcode":"1"}', False), (200, b"not json", True), (200, b"[1]", True),
    (201, b"", False), (500, b'{"resultcode":"0"}', False), (200, b'{"other":1}', True),
])
def test_receiver_success_rule(status: int, body: bytes, ok: bool) -> None:
    assert receiver_accepted(status, body)[0] is ok


def test_group_batches_same_app_same_end_time_max_50() -> None:
    rows = [{"id": i, "app_key": "a", "fee_url": "u", "call_end_time": "t1"} for i in range(120)]
    rows += [{"id": 1000, "app_key": "a", "fee_url": "u", "call_end_time": "t2"},
             {"id": 1001, "app_key": "b", "fee_url": "u", "call_end_time": "t1"}]
    sizes = sorted(len(b) for b in group_batches(rows))
    assert sizes == [1, 1, 20, 50, 50]


# -- recordings and names ----------------------------------------------------------------------

def test_recording_urls(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path, b"k", "http://127.0.0.1:8080/", 60)
    url = store.signed_url("a.wav", now=1000)
    q = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert url.startswith("http://127.0.0.1:8080/recordings/a.wav?")
    assert store.verify("a.wav", q["expires"], q["sig"], now=1059)
    assert not store.verify("a.wav", q["expires"], q["sig"], now=1061)
    assert not store.verify("b.wav", q["expires"], q["sig"], now=1000)
    assert not store.verify("a.wav", str(int(q["expires"]) + 1), q["sig"], now=1000)


@pytest.mark.parametrize("name", ["../etc/passwd", "a/b.wav", "..", ".hidden", "a\\b", "",
                                  "x" * 129, "a..wav", "a%2e.wav"])
def test_unsafe_names(name: str) -> None:
    assert not safe_name(name)
    assert check_name(name) is not None


def test_object_name_is_safe() -> None:
    assert safe_name(object_name_for("vc1_1_4294967295_20260301120000@vc1.example.com"))


def test_recording_shorter_than_3s_is_dropped(tmp_path: Path) -> None:
    store = RecordingStore(tmp_path / "rec", b"k", "http://h", 60)
    src = tmp_path / "in.wav"
    src.write_bytes(b"x" * 100)
    assert store.accept(str(src), 2.9, "a.wav") is None and not src.exists()
    src.write_bytes(b"x" * 100)
    assert store.accept(str(src), 3.0, "a.wav") == "a.wav"
    assert (tmp_path / "rec" / "a.wav").is_file()
