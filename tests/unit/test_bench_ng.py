"""bench/ng.py: the bencode codec and the rtpengine ng messages the anchor benchmark sends."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.ng import (
    BencodeError,
    answer,
    bdecode,
    bencode,
    delete,
    ng_message,
    ng_parse,
    offer,
    ping,
    sdp_audio_port,
    sdp_for,
)


def test_bencode_known_encodings() -> None:
    assert bencode(0) == b"i0e"
    assert bencode(-42) == b"i-42e"
    assert bencode(b"") == b"0:"
    assert bencode("spam") == b"4:spam"
    assert bencode("é") == b"2:\xc3\xa9"  # str goes out as UTF-8
    assert bencode([1, "a", [b"b"]]) == b"li1e1:al1:bee"
    # Keys sorted as raw bytes, whatever the insertion order.
    assert bencode({"to-tag": "t", "call-id": "c", "command": "answer"}) == (
        b"d7:call-id1:c7:command6:answer6:to-tag1:te")
    assert bencode({}) == b"de"


def test_bencode_rejects_what_it_cannot_express() -> None:
    with pytest.raises(BencodeError):
        bencode(True)
    with pytest.raises(BencodeError):
        bencode(1.5)
    with pytest.raises(BencodeError):
        bencode({1: "x"})


def test_bdecode_known_values() -> None:
    assert bdecode(b"i-7e") == -7
    assert bdecode(b"3:a:b") == b"a:b"
    assert bdecode(b"d6:result2:ok3:sdp3:v=0e") == {"result": b"ok", "sdp": b"v=0"}
    assert bdecode(b"ld1:xi1eelee") == [{"x": 1}, []]


@pytest.mark.parametrize("bad", [
    b"", b"i", b"ie", b"i-0e", b"i03e", b"i1", b"5:abc", b"01:a", b"l", b"d1:a", b"di1ei2ee",
    b"x", b"i1ei2e", b"4:spam ",
])
def test_bdecode_rejects_malformed(bad: bytes) -> None:
    with pytest.raises(BencodeError):
        bdecode(bad)


values = st.recursive(
    st.integers() | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(values)
def test_roundtrip(v: object) -> None:
    def as_decoded(x: object) -> object:  # dict keys come back as str, strings as bytes
        if isinstance(x, dict):
            return {k: as_decoded(w) for k, w in x.items()}
        if isinstance(x, list):
            return [as_decoded(w) for w in x]
        return x

    assert bdecode(bencode(v)) == as_decoded(v)


def test_ng_offer_answer_delete_on_the_wire() -> None:
    sdp = sdp_for(40000)
    msg = ng_message("c1", offer("call-1", "tag-a", sdp))
    cookie, body = msg.split(b" ", 1)
    assert cookie == b"c1"
    assert body == (b"d7:call-id6:call-17:command5:offer8:from-tag5:tag-a3:sdp"
                    + str(len(sdp)).encode() + b":" + sdp.encode() + b"e")
    assert ng_parse(ng_message("7", answer("call-1", "tag-a", "tag-b", sdp))) == (
        "7", {"command": b"answer", "call-id": b"call-1", "from-tag": b"tag-a",
              "to-tag": b"tag-b", "sdp": sdp.encode()})
    assert ng_parse(ng_message("x_9", delete("call-1", "tag-a"))) == (
        "x_9", {"command": b"delete", "call-id": b"call-1", "from-tag": b"tag-a"})
    assert ng_message("p", ping()) == b"p d7:command4:pinge"
    # Extra flags ride along (e.g. a list of ng flags).
    assert bdecode(bencode(offer("c", "f", sdp, flags=["trust-address"])))["flags"] == [  # type: ignore[index]
        b"trust-address"]


def test_ng_cookie_and_reply_parsing() -> None:
    with pytest.raises(ValueError):
        ng_message("", ping())
    with pytest.raises(ValueError):
        ng_message("a b", ping())
    with pytest.raises(BencodeError):
        ng_parse(b"nocookie")
    with pytest.raises(BencodeError):
        ng_parse(b"c li1ee")  # the body must be a dictionary
    # A reply as rtpengine sends it: the SDP to forward, with rtpengine's own port in it.
    reply = b"c1 d3:sdp" + str(len(sdp_for(41020))).encode() + b":" + sdp_for(41020).encode() \
        + b"6:result2:oke"
    cookie, body = ng_parse(reply)
    assert cookie == "c1" and body["result"] == b"ok"
    assert sdp_audio_port(body["sdp"]) == 41020  # type: ignore[arg-type]


def test_sdp_for_and_port() -> None:
    sdp = sdp_for(5004)
    assert "c=IN IP4 127.0.0.1\r\n" in sdp
    assert "m=audio 5004 RTP/AVP 8\r\n" in sdp
    assert sdp_audio_port(sdp) == 5004
    with pytest.raises(ValueError):
        sdp_audio_port("v=0\r\n")
