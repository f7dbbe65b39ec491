"""What the parties of a callback hear, checked on the wire (a passive capture of the RTP
arriving at each SIPp party, decoded and analysed by frequency):

* preVoice to A before B is dialled, then waitVoice looped to A while B is being called;
* ``calleeMedia``: ``all`` relays B's early media as soon as RTP really arrives (183 with
  RTP, also reliable 183 + PRACK), but a 183 without RTP keeps waitVoice; ``none`` keeps
  waitVoice until B answers; ``fail`` relays only an announcement of failure;
* the recording holds both parties (A sends 440 Hz, B 1000 Hz) for the talk time;
* maxDuration=1 ends the call with 8010 after 60 s and lastMinVoice reaches only ``tob``.

Tones: waitVoice = 600 Hz (looped 1 s file), preVoice = 800 Hz (2 s), B's early media and
talk = 1000 Hz, A's talk = 440 Hz."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    CALLEE,
    CALLER,
    CLICK2CALL,
    ServiceNode,
    assert_leg_lifecycle,
    callback_body,
    recording_status,
    statuses,
    wait_closed,
    wait_peer,
)
from tests.integration.services.rtpsniff import RtpSniffer, rms, tone_energy
from tests.integration.services.scen import Uas, tone_pcap

pytestmark = pytest.mark.integration

WAIT, PRE, B_HZ, A_HZ = 600.0, 800.0, 1000.0, 440.0


def stretches(sn: RtpSniffer, freqs: list[float], win: float = 0.1,
              ) -> list[tuple[float, float, float]]:
    """(freq, start, end) runs of 100 ms windows dominated (> 60 % of the energy) by one of
    ``freqs``, in arrival order; short gaps (< 0.3 s) inside a run are bridged."""
    if not sn.packets:
        return []
    t0, t_end = sn.packets[0][0], sn.packets[-1][0]
    runs: list[list[float]] = []
    t = t0
    while t < t_end:
        x = sn.audio(t, t + win)
        hit = next((f for f in freqs if tone_energy(x, f, bw=40) > 0.6), None) \
            if rms(x) > 0.01 else None
        if hit is not None:
            if runs and runs[-1][0] == hit and t - runs[-1][2] < 0.3:
                runs[-1][2] = t + win
            else:
                runs.append([hit, t, t + win])
        t += win
    return [(f, a, b) for f, a, b in runs]


def first(runs: list[tuple[float, float, float]], freq: float) -> tuple[float, float] | None:
    for f, a, b in runs:
        if f == freq:
            return a, b
    return None


async def _run_call(svc: ServiceNode, receiver: Receiver, tmp_path: Path, a: Uas, b: Uas,
                    body: dict[str, Any], *, legs: int = 2, timeout_s: int = 30,
                    ) -> tuple[str, dict[str, Any], RtpSniffer, RtpSniffer]:
    pa = svc.party("A", a.write(tmp_path), timeout_s=timeout_s)
    b.name = "b_" + b.name
    pb = svc.party("B", b.write(tmp_path), timeout_s=timeout_s)
    sa = RtpSniffer(pa.media_port).start()   # type: ignore[attr-defined]
    sb = RtpSniffer(pb.media_port).start()   # type: ignore[attr-defined]
    try:
        r = await svc.post(CLICK2CALL, body)
        assert r.status_code == 200, r.text
        sid = r.json()["sessionId"]
        cdr = await wait_closed(receiver, sid, legs=legs, timeout=90)
        for p in (pa, pb):
            res = await wait_peer(p, 20)
            assert res.ok, res.explain() + svc.log()[-3000:]
    finally:
        sa.stop()
        sb.stop()
    return sid, cdr, sa, sb


@pytest.fixture
def tones(tmp_path: Path) -> dict[str, Path]:
    return {"a": tone_pcap(tmp_path / "a440.pcap", A_HZ, 16.0),
            "b": tone_pcap(tmp_path / "b1000.pcap", B_HZ, 14.0, ssrc=0x4321)}


def answer_wait() -> Uas:
    return Uas("a_answer").ring().answer().wait_bye()


# B's RTP starts 1 s after its 183: until then A must hear waitVoice (the 183 alone
# changes nothing), then — only where relayed — B's audio at once.
EARLY = {
    # case: (B's scenario, calleeMedia, is B's audio relayed before the answer?)
    "all-183-rtp": (lambda p: Uas("em").ring(code=183, sdp=True).pause(1000).rtp(p)
                    .pause(2000), "all", True),
    "all-183-no-rtp": (lambda p: Uas("em").ring(code=183, sdp=True).pause(3000), "all",
                       False),
    "all-100rel-rtp": (lambda p: Uas("em").ring_reliable().pause(1000).rtp(p).pause(2000),
                       "all", True),
    "none-183-rtp": (lambda p: Uas("em").ring(code=183, sdp=True).pause(1000).rtp(p)
                     .pause(2000), "none", False),
    "fail-183-rtp-ringback": (lambda p: Uas("em").ring(code=183, sdp=True).pause(1000)
                              .rtp(p).pause(2000), "fail", False),
}


@pytest.mark.parametrize("case", list(EARLY), ids=list(EARLY))
async def test_callee_early_media(node_factory: Any, receiver: Receiver, tmp_path: Path,
                                  tones: dict[str, Path], case: str) -> None:
    make_b, mode, relayed = EARLY[case]
    svc = node_factory()
    # B rings 3 s (early media as the case says), answers, talks 1 s more, hangs up.
    b = make_b(tones["b"]).answer().pause(1000).bye()
    sid, _cdr, sa, _ = await _run_call(svc, receiver, tmp_path, answer_wait(), b,
                                      callback_body(waitVoice="tone600_1s.wav",
                                                    calleeMedia=mode))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 0, CALLEE: 0})
    runs = stretches(sa, [WAIT, B_HZ])
    wait = first(runs, WAIT)
    assert wait is not None, runs           # A heard waitVoice while B was dialled
    b_audio = first(runs, B_HZ)
    if relayed:
        # waitVoice until B's RTP really flowed (1 s after the 183), then B's early audio,
        # well before B answered (3 s after its 183).
        assert 0.7 <= wait[1] - wait[0] <= 1.5, runs
        assert b_audio is not None and wait[1] - 0.15 <= b_audio[0] <= wait[1] + 0.3, runs
        assert b_audio[1] - b_audio[0] >= 2.5, runs
    else:
        # waitVoice went on until the answer: ≥ 2.5 s of it, and no 1000 Hz before.
        assert wait[1] - wait[0] >= 2.5, runs
        if b_audio is not None:
            assert b_audio[0] >= wait[1] - 0.15, runs
    if case == "all-183-no-rtp":
        assert b_audio is None, runs        # B never sent RTP at all


async def test_callee_failure_announcement_relayed_with_fail(
        node_factory: Any, receiver: Receiver, tmp_path: Path, tones: dict[str, Path]) -> None:
    """``calleeMedia=fail``: a 183 saying the call will fail (Reason: Q.850 cause) with RTP
    is relayed; the 486 that follows ends B with 8102 (A: 8102 too, the call failed)."""
    svc = node_factory()
    b = (Uas("ann").ring(code=183, sdp=True, extra='Reason: Q.850;cause=17;text="busy"')
         .pause(1000).rtp(tones["b"]).pause(2500).reject(486, "Busy Here"))
    sid, cdr, sa, _ = await _run_call(svc, receiver, tmp_path, answer_wait(), b,
                                      callback_body(waitVoice="tone600_1s.wav",
                                                    calleeMedia="fail"))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 8102, CALLEE: 8102})
    assert cdr["fwdUnaswRsn"] == 17
    runs = stretches(sa, [WAIT, B_HZ])
    b_audio, wait = first(runs, B_HZ), first(runs, WAIT)
    assert b_audio is not None and wait is not None, runs
    assert 0.7 <= wait[1] - wait[0] <= 1.5, runs
    assert b_audio[0] <= wait[1] + 0.3 and b_audio[1] - b_audio[0] >= 2.0, runs


async def test_prevoice_then_waitvoice(node_factory: Any, receiver: Receiver,
                                       tmp_path: Path) -> None:
    """PR-PRE then PR-WAIT: A hears the whole preVoice (800 Hz, 2 s) before B is dialled,
    then waitVoice (600 Hz) loops until B answers (after 2.5 s of ringing)."""
    svc = node_factory()
    b = Uas("ring").ring().pause(2500).answer().pause(500).bye()
    sid, cdr, sa, _sb = await _run_call(
        svc, receiver, tmp_path, answer_wait(), b,
        callback_body(playPreVoice="true", preVoice="tone800_2s.wav",
                      waitVoice="tone600_1s.wav"))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 0, CALLEE: 0})
    runs = stretches(sa, [PRE, WAIT])
    pre, wait = first(runs, PRE), first(runs, WAIT)
    assert pre is not None and wait is not None, runs
    assert 1.8 <= pre[1] - pre[0] <= 2.3, runs
    assert wait[0] >= pre[1] - 0.15, runs
    assert 2.2 <= wait[1] - wait[0] <= 3.5, runs
    assert cdr["callOutAnswerTime"] <= cdr["fwdStartTime"]


async def test_recording_has_both_parties_for_the_talk_time(
        node_factory: Any, receiver: Receiver, tmp_path: Path, tones: dict[str, Path]) -> None:
    """REC-1/2: A sends 440 Hz, B 1000 Hz; after the record hint both are bridged and
    recorded until B's BYE. Talk time = the recorder's span, measured on the wire as the
    span of B's 1000 Hz relayed to A (the bridge starts when the hint ends and stops at
    B's BYE, exactly when the recorder starts and stops). The WAV lasts that ± 0.1 s and
    has both tones in each half."""
    svc = node_factory()
    a = Uas("a_talk").ring().answer(pcap=tones["a"]).wait_bye()
    b = Uas("b_talk").ring().answer(pcap=tones["b"]).pause(10000).bye()
    sid, cdr, sa, _sb = await _run_call(svc, receiver, tmp_path, a, b,
                                       callback_body(recordFlag="true"))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 0, CALLEE: 0})
    relayed = [t for t, pt, p in sa.packets if pt == 8 and len(p) >= 160
               and tone_energy(_pcm(p), B_HZ, bw=150) > 0.8]
    assert relayed, "B's audio never reached A"
    talk = relayed[-1] + 0.02 - relayed[0]
    assert cdr["recordFlag"] == 1 and cdr.get("recordObjectName"), cdr
    files = list((svc.workdir / "data" / "recordings").rglob("*.wav"))
    assert len(files) == 1, files
    info = soundfile.info(str(files[0]))
    assert (info.samplerate, info.channels, info.subtype, info.format) == (8000, 1, "ALAW",
                                                                           "WAV")
    assert abs(info.duration - talk) <= 0.1, (info.duration, talk)
    data, _ = soundfile.read(str(files[0]))
    half = len(data) // 2
    for part in (data[:half], data[half:]):
        assert tone_energy(part, A_HZ) > 0.1, tone_energy(part, A_HZ)
        assert tone_energy(part, B_HZ) > 0.1, tone_energy(part, B_HZ)
    rec = await svc.get("/rest/provision/voice/record/v1.0", fileName=cdr["recordObjectName"],
                        recordDomain=cdr["recordDomain"])
    assert rec.status_code == 301, rec.text
    # Extension: the recordingStatus push points at the same file.
    await receiver.wait_for(lambda: len(recording_status(receiver, sid)) == 1, timeout=5)
    st = recording_status(receiver, sid)[0]
    assert st["recordingStatus"] == "completed", st
    assert st["recordObjectName"] == cdr["recordObjectName"]
    assert st["recordFileDownloadUrl"] == cdr.get("recordFileDownloadUrl", ""), (st, cdr)
    assert abs(st["recordDuration"] - info.duration) <= 0.05, (st, info.duration)


def _pcm(payload: bytes) -> np.ndarray:
    from media.g711 import alaw_decode
    return alaw_decode(payload).astype(np.float64) / 32768.0


async def test_max_duration_with_last_minute_prompt_to_b(
        node_factory: Any, receiver: Receiver, tmp_path: Path) -> None:
    """DUR-1 + PR-LAST: maxDuration=1 → the call ends 60 s after B's answer with 8010 on
    both legs; lastMinVoice (800 Hz, 2 s) is due at once (one minute before the end) and
    reaches B only (lastMinToUE=tob)."""
    # Both parties are silent SIPp UASs: no media timeout for this one.
    svc = node_factory(extra_toml="\n[media]\nrtp_timeout_s = 0\n")
    sid, cdr, sa, sb = await _run_call(
        svc, receiver, tmp_path, answer_wait(), Uas("b").ring().answer().wait_bye(),
        callback_body(maxDuration=1, lastMinToUE="tob", lastMinVoice="tone800_2s.wav"),
        timeout_s=75)
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 8010, CALLEE: 8010})
    to_b, to_a = first(stretches(sb, [PRE]), PRE), first(stretches(sa, [PRE]), PRE)
    assert to_b is not None and 1.7 <= to_b[1] - to_b[0] <= 2.3, to_b
    assert to_a is None, to_a
    from datetime import datetime
    fmt = "%Y-%m-%d %H:%M:%S"
    talk = (datetime.strptime(cdr["callEndTime"], fmt)
            - datetime.strptime(cdr["fwdAnswerTime"], fmt)).total_seconds()
    assert 59 <= talk <= 62, cdr


async def test_media_timeout_while_talking_releases_both(
        node_factory: Any, receiver: Receiver, tmp_path: Path, tones: dict[str, Path]) -> None:
    """A's RTP stops after 1.5 s of talk ([media] rtp_timeout_s = 2): the call ends with
    8020 on both legs, both get our BYE, one CDR."""
    svc = node_factory(extra_toml="\n[media]\nrtp_timeout_s = 2\n")
    short = tone_pcap(tmp_path / "a_short.pcap", A_HZ, 1.5)
    a = Uas("a_short").ring().answer(pcap=short).wait_bye()
    b = Uas("b_long").ring().answer(pcap=tones["b"]).wait_bye()
    sid, cdr, _sa, _sb = await _run_call(svc, receiver, tmp_path, a, b, callback_body())
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 8020, CALLEE: 8020})
    assert cdr.get("fwdAnswerTime") and cdr.get("callEndTime"), cdr


async def test_no_recording_file_under_three_seconds_of_talk(
        node_factory: Any, receiver: Receiver, tmp_path: Path, tones: dict[str, Path]) -> None:
    """REC-3: recordFlag, a 0.5 s record hint, then B hangs up ~1.5 s into the talk: no
    file is kept and the CDR says not recorded (no object name, no download URL)."""
    svc = node_factory()
    a = Uas("a_talk").ring().answer(pcap=tones["a"]).wait_bye()
    b = Uas("b_short").ring().answer(pcap=tones["b"]).pause(2200).bye()
    sid, cdr, _sa, _sb = await _run_call(svc, receiver, tmp_path, a, b,
                                         callback_body(recordFlag="true",
                                                       recordHintTone="pre_05s.wav"))
    assert_leg_lifecycle(statuses(receiver, sid), {CALLER: 0, CALLEE: 0})
    assert cdr["recordFlag"] == 0, cdr
    assert not cdr.get("recordObjectName") and not cdr.get("recordFileDownloadUrl"), cdr
    assert not list((svc.workdir / "data" / "recordings").rglob("*.wav"))
    assert "recording_finished" in svc.log() and "kept=False" in svc.log()
    await receiver.wait_for(lambda: len(recording_status(receiver, sid)) == 1, timeout=5)
    st = recording_status(receiver, sid)[0]
    assert st["recordingStatus"] == "absent" and "recordObjectName" not in st, st
    assert 0 < st["recordDuration"] < 3, st
