"""Voice notification (SVC-NT) and verification code (SVC-VC) end to end: the callee is a
SIPp gateway (RFC 4733 digits from SIPp's sample pcaps) or a registered baresip softphone
keying digits over ctrl_tcp; what the callee hears is checked on the wire."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
import soundfile

from tests.integration.baresip import Baresip, make_wav
from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    CALLEE,
    CALLNOTIFY,
    CALLVERIFY,
    DISPLAY,
    ServiceNode,
    assert_leg_lifecycle,
    statuses,
    wait_closed,
    wait_peer,
)
from tests.integration.services.rtpsniff import RtpSniffer
from tests.integration.services.scen import SAMPLE_PCAP, Uas
from tests.integration.services.test_callback_media import stretches

pytestmark = pytest.mark.integration


def dtmf(d: str) -> Path:
    return SAMPLE_PCAP / f"dtmf_2833_{d}.pcap"


def notify(items: list[dict[str, Any]], callee: str = CALLEE) -> dict[str, object]:
    return {"displayNbr": DISPLAY, "calleeNbr": callee, "playInfoList": items}


async def _call(svc: ServiceNode, receiver: Receiver, tmp_path: Path, callee: Uas,
                path: str, body: dict[str, object], *, timeout: float = 40,
                ) -> tuple[str, dict[str, Any], RtpSniffer]:
    p = svc.party("B", callee.write(tmp_path))
    sn = RtpSniffer(p.media_port).start()    # type: ignore[attr-defined]
    try:
        r = await svc.post(path, body)
        assert r.status_code == 200, r.text
        sid = r.json()["sessionId"]
        cdr = await wait_closed(receiver, sid, legs=1, timeout=timeout)
        res = await wait_peer(p, 20)
        assert res.ok, res.explain() + svc.log()[-3000:]
    finally:
        sn.stop()
    return sid, cdr, sn


def collected(receiver: Receiver, sid: str) -> list[str]:
    return [i["digitInfo"] for k, i in statuses(receiver, sid) if k == "collectInfo"]


async def test_notification_tts_then_file(node_factory: Any, receiver: Receiver,
                                          tmp_path: Path) -> None:
    """Two items in order, a TTS template and a file (600 Hz, 1 s); hang-up after the last
    (DTMF-4), by us: the callee gets our BYE right after the file ends."""
    svc = node_factory()
    sid, cdr, sn = await _call(svc, receiver, tmp_path, Uas("n").ring().answer().wait_bye(),
                               CALLNOTIFY, notify([
                                   {"templateId": "tpl_code", "templateParas": ["123456"]},
                                   {"notifyVoice": "tone600_1s.wav"}]))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLEE: 0})
    assert [k for k, _ in statuses(receiver, sid)] == ["callout", "alerting", "answer",
                                                       "disconnect"]
    runs = stretches(sn, [600.0])
    assert len(runs) == 1 and 0.85 <= runs[0][2] - runs[0][1] <= 1.2, runs
    speech = sn.audio(sn.packets[0][0], runs[0][1])
    assert len(speech) / 8000 >= 1.0                       # the TTS played first
    assert sn.packets[-1][0] - runs[0][2] < 0.5             # nothing after the last item
    assert cdr["serviceType"] == "001" and cdr["ttsPlayTimes"] == 1, cdr
    assert cdr["recordFlag"] == 0


async def test_notification_collects_two_digits(node_factory: Any, receiver: Receiver,
                                                tmp_path: Path) -> None:
    svc = node_factory()
    callee = (Uas("n").ring().answer().pause(1200).rtp(dtmf("4")).pause(600)
              .rtp(dtmf("2")).wait_bye())
    sid, cdr, _ = await _call(svc, receiver, tmp_path, callee, CALLNOTIFY, notify([
        {"notifyVoice": "pre_05s.wav", "collectInd": 2}]))
    assert collected(receiver, sid) == ["42"]
    assert_leg_lifecycle(statuses(receiver, sid), {CALLEE: 0})
    assert cdr["ulFailReason"] == 0


async def test_notification_nothing_keyed_is_8008(node_factory: Any, receiver: Receiver,
                                                  tmp_path: Path) -> None:
    """DTMF-1: no key within 5 s after the item → 8008, teardown point 100, our BYE."""
    svc = node_factory()
    sid, cdr, _sn = await _call(svc, receiver, tmp_path, Uas("n").ring().answer().wait_bye(),
                               CALLNOTIFY, notify([{"notifyVoice": "pre_05s.wav",
                                                    "collectInd": 1}]))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLEE: 8008})
    assert collected(receiver, sid) in ([], [""])
    assert cdr["ulFailReason"] == 100, cdr
    # The item (0.5 s), then 5 s of waiting for a key, then the BYE.
    from datetime import datetime
    fmt = "%Y-%m-%d %H:%M:%S"
    held = (datetime.strptime(cdr["callEndTime"], fmt)
            - datetime.strptime(cdr["callOutAnswerTime"], fmt)).total_seconds()
    assert 4 <= held <= 8, cdr


async def test_notification_replays_on_trigger_digit(node_factory: Any, receiver: Receiver,
                                                     tmp_path: Path) -> None:
    """DTMF-2: "1" (= collectContentTriggerReplaying) replays the item; "2" ends the call."""
    svc = node_factory()
    callee = (Uas("n").ring().answer().pause(1500).rtp(dtmf("1")).pause(2300)
              .rtp(dtmf("2")).wait_bye())
    sid, _cdr, sn = await _call(svc, receiver, tmp_path, callee, CALLNOTIFY, notify([
        {"notifyVoice": "tone600_1s.wav", "collectInd": 1, "replayAfterCollection": "true",
         "collectContentTriggerReplaying": "1"},
        {"notifyVoice": "tone800_2s.wav"}]))
    assert collected(receiver, sid) == ["1", "2"]
    assert_leg_lifecycle(statuses(receiver, sid), {CALLEE: 0})
    runs = stretches(sn, [600.0, 800.0])
    assert [f for f, _, _ in runs] == [600.0, 600.0], runs   # played twice, never item 2


async def test_notification_with_baresip_keying_over_ctrl_tcp(
        node_factory: Any, receiver: Receiver, tmp_path: Path) -> None:
    """A registered baresip softphone is the callee (auto-answer) and keys "73" with
    ``sndcode`` over ctrl_tcp while the item's collection runs."""
    number = "+8613700001234"
    svc = node_factory(
        sip_extra='digest_algorithms = ["MD5"]',
        extra_toml=f'\n[[users]]\nusername = "2001"\npassword = "pw2001"\nnumber = "{number}"\n')
    phone = Baresip(tmp_path, "callee", "2001", "pw2001", f"127.0.0.1:{svc.sip_port}",
                    wav=make_wav(tmp_path / "mic.wav"), auto_answer=True)
    try:
        phone.start()
        reg = await asyncio.to_thread(phone.register)
        assert reg["type"] == "REGISTER_OK", reg
        r = await svc.post(CALLNOTIFY, notify([{"notifyVoice": "pre_05s.wav",
                                                "collectInd": 2}], callee=number))
        assert r.status_code == 200, r.text
        sid = r.json()["sessionId"]
        await asyncio.to_thread(phone.wait_event, "CALL_ESTABLISHED", 15)
        await asyncio.sleep(1.0)                 # the 0.5 s item has played
        for digit in "73":
            resp = await asyncio.to_thread(phone.command, "sndcode", digit, f"dtmf{digit}")
            assert resp.get("ok") is True, resp
            await asyncio.sleep(0.4)
        await wait_closed(receiver, sid, legs=1, timeout=20)
        await asyncio.to_thread(phone.wait_event, "CALL_CLOSED", 10)
    finally:
        phone.stop()
    assert collected(receiver, sid) == ["73"], statuses(receiver, sid)
    assert_leg_lifecycle(statuses(receiver, sid), {number: 0})


@pytest.mark.parametrize("language,voice", [(1, "en"), (2, "cmn")])
async def test_verification_code(node_factory: Any, receiver: Receiver, tmp_path: Path,
                                 language: int, voice: str) -> None:
    """SVC-VC: preTone (500 Hz, 0.5 s), the code read digit by digit in the language asked
    for, posTone (700 Hz, 0.5 s), all of it ``times`` = 2 times, then our BYE. The spoken
    part between the tones lasts as long as the TTS file rendered for the code (voice
    ``en`` for languageType 1, ``cmn`` for 2)."""
    svc = node_factory()
    sid, cdr, sn = await _call(svc, receiver, tmp_path, Uas("v").ring().answer().wait_bye(),
                               CALLVERIFY, {"displayNbr": DISPLAY, "calleeNbr": CALLEE,
                                            "languageType": language, "preTone": "pre_05s.wav",
                                            "posTone": "pos_05s.wav", "verifyCode": "2468",
                                            "times": 2})
    assert_leg_lifecycle(statuses(receiver, sid), {CALLEE: 0})
    runs = stretches(sn, [500.0, 700.0])
    assert [f for f, _, _ in runs] == [500.0, 700.0, 500.0, 700.0], runs
    # The console renderer sorts keys and the call's bound context (app_key, session_id)
    # lands between them, so read the key=value pairs of each tts_rendered line by name.
    rendered = [dict(re.findall(r"(\w+)=(\S+)", line.split("tts_rendered", 1)[1]))
                for line in svc.log().splitlines() if "tts_rendered" in line]
    code_tts = [(int(f["chars"]), f["path"], f["voice"]) for f in rendered
                if f.get("voice", "").startswith(voice) and int(f.get("chars", 0)) >= 4
                and "data/tts" in f.get("path", "")]
    assert code_tts, rendered
    _, path, _ = code_tts[-1]
    wav = Path(path) if Path(path).is_absolute() else svc.workdir / path
    spoken = soundfile.info(str(wav)).duration
    # Between the tones: 200 ms of silence (the player's gap between items), the code,
    # 200 ms again; the runs are measured in 100 ms windows.
    gap = runs[1][1] - runs[0][2]
    assert abs(gap - (spoken + 0.4)) <= 0.25, (gap, spoken, runs)
    assert cdr["ttsPlayTimes"] >= 1 and cdr["serviceType"] == "001", cdr
