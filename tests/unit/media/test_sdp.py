"""SDP offer/answer (RFC 3264 / RFC 4566) for G.711 + telephone-event."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.errors import SdpError
from media.sdp import Direction, LocalMedia, answer, apply_answer, build_offer, parse_sdp

LOCAL = LocalMedia(address="192.0.2.10", port=20000, session_id=1, version=1)


def sdp(*media: str, session: str = "c=IN IP4 198.51.100.7\r\n") -> str:
    head = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\n" + session + "t=0 0\r\n"
    return head + "".join(media)


AUDIO = "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"


def test_offer_lists_codecs_in_config_order_with_telephone_event_and_ptime() -> None:
    text = build_offer(LOCAL)
    parsed = parse_sdp(text)
    m = parsed.media[0]
    assert m.formats == ("8", "0", "101")
    assert m.ptime == 20
    assert m.direction is Direction.SENDRECV
    assert parsed.connection is not None and parsed.connection.address == "192.0.2.10"
    assert "a=fmtp:101 0-16" in text
    assert text.endswith("\r\n")


def test_answer_takes_offerers_preference_and_static_types_without_rtpmap() -> None:
    text, neg = answer(parse_sdp(sdp(AUDIO)), LOCAL)
    assert neg.codec == "PCMU" and neg.payload_type == 0
    assert neg.te_payload_type == 101
    assert (neg.remote_ip, neg.remote_port, neg.remote_rtcp_port) == ("198.51.100.7", 4000, 4001)
    m = parse_sdp(text).media[0]
    assert m.formats == ("0", "101") and m.port == 20000


def test_dynamic_payload_type_for_pcma_uses_the_offered_number() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 96\r\na=rtpmap:96 pcma/8000\r\n")
    text, neg = answer(parse_sdp(offer), LOCAL)
    assert (neg.codec, neg.payload_type, neg.te_payload_type) == ("PCMA", 96, None)
    assert "a=rtpmap:96 PCMA/8000" in text


def test_media_level_connection_overrides_session_level() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 8\r\nc=IN IP4 203.0.113.9\r\n")
    _, neg = answer(parse_sdp(offer), LOCAL)
    assert neg.remote_ip == "203.0.113.9"


def test_session_level_connection_is_inherited() -> None:
    _, neg = answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 8\r\n")), LOCAL)
    assert neg.remote_ip == "198.51.100.7"


def test_missing_connection_is_rejected() -> None:
    with pytest.raises(SdpError, match="no c= line"):
        answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 8\r\n", session="")), LOCAL)


def test_ptime_and_rtcp_attribute() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 8\r\na=ptime:30\r\na=rtcp:4100\r\n")
    _, neg = answer(parse_sdp(offer), LOCAL)
    assert neg.ptime == 30 and neg.remote_rtcp_port == 4100


@pytest.mark.parametrize(
    ("attr", "ours", "hold"),
    [
        ("a=sendrecv", Direction.SENDRECV, False),
        ("a=sendonly", Direction.RECVONLY, True),  # they put us on hold
        ("a=recvonly", Direction.SENDONLY, False),
        ("a=inactive", Direction.INACTIVE, True),
    ],
)
def test_direction_attributes(attr: str, ours: Direction, hold: bool) -> None:
    text, neg = answer(parse_sdp(sdp(f"m=audio 4000 RTP/AVP 8\r\n{attr}\r\n")), LOCAL)
    assert neg.direction is ours and neg.on_hold is hold
    assert f"a={ours.value}" in text


def test_session_level_direction_applies_when_media_has_none() -> None:
    offer = sdp("m=audio 4000 RTP/AVP 8\r\n", session="c=IN IP4 198.51.100.7\r\na=sendonly\r\n")
    _, neg = answer(parse_sdp(offer), LOCAL)
    assert neg.direction is Direction.RECVONLY


def test_old_style_hold_with_zero_address() -> None:
    _, neg = answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 8\r\n", session="c=IN IP4 0.0.0.0\r\n")),
                    LOCAL)
    assert neg.on_hold and not neg.direction.sends


def test_hold_then_resume_via_reoffer() -> None:
    _, held = answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 8\r\na=sendonly\r\n")), LOCAL)
    _, resumed = answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 8\r\na=sendrecv\r\n")), LOCAL)
    assert held.on_hold and not resumed.on_hold and resumed.direction is Direction.SENDRECV


def test_port_zero_audio_is_rejected() -> None:
    with pytest.raises(SdpError, match="port 0"):
        answer(parse_sdp(sdp("m=audio 0 RTP/AVP 8\r\n")), LOCAL)


def test_other_streams_are_rejected_with_port_zero_in_order() -> None:
    offer = sdp("m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n", AUDIO)
    text, neg = answer(parse_sdp(offer), LOCAL)
    media = parse_sdp(text).media
    assert [m.media for m in media] == ["video", "audio"]
    assert media[0].port == 0 and media[1].port == 20000
    assert neg.codec == "PCMU"


def test_no_common_codec() -> None:
    with pytest.raises(SdpError, match="no common codec"):
        answer(parse_sdp(sdp("m=audio 4000 RTP/AVP 18 9\r\n")), LOCAL)


def test_srtp_only_offer_is_rejected() -> None:
    with pytest.raises(SdpError, match="unsupported transport"):
        answer(parse_sdp(sdp("m=audio 4000 RTP/SAVP 8\r\n")), LOCAL)


def test_apply_answer() -> None:
    neg = apply_answer(parse_sdp(sdp("m=audio 4002 RTP/AVP 8 101\r\n"
                                     "a=rtpmap:101 telephone-event/8000\r\n")), LOCAL)
    assert (neg.codec, neg.remote_port, neg.te_payload_type) == ("PCMA", 4002, 101)


def test_apply_answer_rejected_stream() -> None:
    with pytest.raises(SdpError, match="rejected"):
        apply_answer(parse_sdp(sdp("m=audio 0 RTP/AVP 8\r\n")), LOCAL)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "garbage",
        "v=1\r\nm=audio 1 RTP/AVP 8\r\n",
        "v=0\r\ns=-\r\n",  # no m=
        "v=0\r\nm=audio notaport RTP/AVP 8\r\n",
        "v=0\r\nm=audio 99999 RTP/AVP 8\r\n",
        "v=0\r\nm=audio\r\n",
        "v=0\r\nc=IN IP4 999.1.1.1\r\nm=audio 4000 RTP/AVP 8\r\n",
        "v=0\r\nc=IN\r\nm=audio 4000 RTP/AVP 8\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 8\r\na=rtpmap:x\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 8\r\na=ptime:abc\r\n",
        "v=0\r\nm=audio 4000 RTP/AVP 8\r\nthis is not sdp\r\n",
        "v=0\r\n" + "m=audio 4000 RTP/AVP 8\r\n" * 40,
        "v=0\r\n" + "a=x\r\n" * 70000,
        "v=0\r\nc=IN IP6 ::1\r\nm=audio 4000 RTP/AVP 8\r\n",
        "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 8\x00\r\n",
    ],
)
def test_hostile_sdp_gives_sdp_error(text: str) -> None:
    with pytest.raises(SdpError):
        answer(parse_sdp(text), LOCAL)


def test_invalid_utf8_bytes_are_tolerated_in_free_text() -> None:
    raw = sdp("m=audio 4000 RTP/AVP 8\r\n").replace("s=-", "s=\udcff").encode(
        "utf-8", "surrogateescape")
    _, neg = answer(parse_sdp(raw), LOCAL)
    assert neg.codec == "PCMA"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400) | st.binary(max_size=400).map(lambda b: b.decode("latin-1")))
def test_fuzz_never_raises_anything_but_sdp_error(text: str) -> None:
    try:
        answer(parse_sdp("v=0\r\nc=IN IP4 1.2.3.4\r\n" + text), LOCAL)
    except SdpError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([
    "m=audio 4000 RTP/AVP 8 0 101", "m=audio 0 RTP/AVP 8", "m=video 1 RTP/AVP 31",
    "a=rtpmap:101 telephone-event/8000", "a=rtpmap:8", "a=sendonly", "a=ptime:0",
    "c=IN IP4 10.0.0.1", "c=IN IP6 ::1", "a=rtcp:70000", "a=fmtp:101", "m=audio 1 RTP/AVP",
    "a=rtpmap:0 PCMU/8000/2", "b=AS:64", "a=ptime:20",
]), max_size=12))
def test_fuzz_structured(lines: list[str]) -> None:
    try:
        answer(parse_sdp("v=0\r\n" + "\r\n".join(lines)), LOCAL)
    except SdpError:
        pass
