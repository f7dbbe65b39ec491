# ruff: noqa: E501  (the expected ladders are terminal-wide text)
"""The SIP ladder renderer and the trace documents of switch.trace, on fixed messages."""

from __future__ import annotations

from switch.trace import (
    CallTraces,
    Column,
    TracedLeg,
    TraceEntry,
    arrow_label,
    dialog_document,
    dialog_ladder,
    dialogs_ladder,
    recent_dialogs,
    render_ladder,
    session_document,
)

SW = "127.0.0.1:5060"
A = "127.0.0.1:5071"
B = "127.0.0.1:5072"
T0 = 1_790_000_000.0   # 2026-09-21T14:13:20Z


def msg(t: float, direction: str, remote: str, first: str, *, cseq: str = "1 INVITE",
        to_tag: bool = True, sdp: bool = False) -> TraceEntry:
    body = "v=0\r\n" if sdp else ""
    head = [first, "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1",
            "To: <sip:x@h>" + (";tag=t1" if to_tag else ""), "Call-ID: c1", f"CSeq: {cseq}"]
    if sdp:
        head.append("Content-Type: application/sdp")
    head.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(head) + "\r\n\r\n" + body).encode()
    return TraceEntry(T0 + t, direction, "udp", SW, remote, first, data)


def a_leg() -> list[TraceEntry]:
    return [
        msg(0.0, "out", A, "INVITE sip:+8613800000011@127.0.0.1:5071 SIP/2.0", to_tag=False,
            sdp=True),
        msg(0.004, "in", A, "SIP/2.0 100 Trying", to_tag=False),
        msg(0.120, "in", A, "SIP/2.0 180 Ringing"),
        msg(1.5, "in", A, "SIP/2.0 200 OK", sdp=True),
        msg(1.501, "out", A, "ACK sip:gw@127.0.0.1:5071 SIP/2.0", cseq="1 ACK"),
        msg(9.25, "out", A, "BYE sip:gw@127.0.0.1:5071 SIP/2.0", cseq="2 BYE"),
        msg(9.26, "in", A, "SIP/2.0 200 OK", cseq="2 BYE"),
    ]


def b_leg() -> list[TraceEntry]:
    return [
        msg(1.6, "out", B, "INVITE sip:+8613900000022@127.0.0.1:5072 SIP/2.0", to_tag=False),
        msg(2.1, "out", B, "INVITE sip:+8613900000022@127.0.0.1:5072 SIP/2.0", to_tag=False),
        msg(2.2, "in", B, "SIP/2.0 486 Busy Here"),
        msg(2.201, "out", B, "ACK sip:+8613900000022@127.0.0.1:5072 SIP/2.0", cseq="1 ACK"),
    ]


def test_arrow_labels() -> None:
    e = a_leg()
    assert [arrow_label(x) for x in e] == [
        "INVITE +SDP", "100 Trying (INVITE)", "180 Ringing (INVITE)", "200 OK (INVITE) +SDP",
        "ACK", "BYE", "200 OK (BYE)"]


def test_two_party_ladder_exact_text() -> None:
    cols = [Column("A", "A caller", f"udp:{A}", "left"),
            Column("B", "B callee", f"udp:{B}", "right")]
    entries = [("B", e) for e in b_leg()] + [("A", e) for e in a_leg()]
    got = render_ladder(entries, cols)
    expected = """\
                     A caller                      voicecall                     B callee
                udp:127.0.0.1:5071              127.0.0.1:5060              udp:127.0.0.1:5072
                         |                             |                             |
+0.000s                  |<------- INVITE +SDP --------|                             |   INVITE sip:+8613800000011@127.0.0.1:5071
+0.004s                  |---- 100 Trying (INVITE) --->|                             |
+0.120s                  |--- 180 Ringing (INVITE) --->|                             |
+1.500s                  |--- 200 OK (INVITE) +SDP --->|                             |
+1.501s                  |<----------- ACK ------------|                             |
+1.600s                  |                             |---------- INVITE ---------->|   INVITE sip:+8613900000022@127.0.0.1:5072
+2.100s                  |                             |---------- INVITE ---------->|   INVITE sip:+8613900000022@127.0.0.1:5072; retransmission
+2.200s                  |                             |<- 486 Busy Here (INVITE) ---|
+2.201s                  |                             |------------ ACK ----------->|
+9.250s                  |<----------- BYE ------------|                             |
+9.260s                  |------- 200 OK (BYE) ------->|                             |"""
    assert got == expected, "\n" + got


def test_single_dialog_ladder_puts_a_caller_on_the_left() -> None:
    # A softphone calls in (B2BUA leg A): its INVITE arrives, so it is drawn left of the switch.
    phone = "127.0.0.1:40000"
    entries = [
        msg(0.0, "in", phone, "INVITE sip:1002@127.0.0.1:5060 SIP/2.0", to_tag=False),
        msg(0.001, "out", phone, "SIP/2.0 100 Trying", to_tag=False),
        msg(3.0, "in", phone, "CANCEL sip:1002@127.0.0.1:5060 SIP/2.0", to_tag=False,
            cseq="1 CANCEL"),
        msg(3.001, "out", phone, "SIP/2.0 200 OK", cseq="1 CANCEL"),
        msg(3.002, "out", phone, "SIP/2.0 487 Request Terminated"),
    ]
    got = dialog_ladder(entries)
    expected = """\
                       127.0.0.1:40000                            voicecall
                     udp:127.0.0.1:40000                       127.0.0.1:5060
                              |                                       |
+0.000s                       |--------------- INVITE --------------->|   INVITE sip:1002@127.0.0.1:5060
+0.001s                       |<-------- 100 Trying (INVITE) ---------|
+3.000s                       |--------------- CANCEL --------------->|   CANCEL sip:1002@127.0.0.1:5060
+3.001s                       |<---------- 200 OK (CANCEL) -----------|
+3.002s                       |<-- 487 Request Terminated (INVITE) ---|"""
    assert got == expected, "\n" + got


def test_long_labels_are_cut_and_a_foreign_remote_is_noted() -> None:
    cols = [Column("B", "B", f"udp:{B}", "right")]
    e = msg(0.0, "in", "10.0.0.9:5060", "SIP/2.0 183 Session Progress with a very long reason "
            "phrase indeed and more", sdp=True)
    got = render_ladder([("B", e)], cols).splitlines()[-1]
    assert got.endswith("|   from udp:10.0.0.9:5060"), got
    assert "~" in got and len(got.split("|")[1]) == 47, got     # widest gap (48) kept


def test_session_document_merges_legs_in_time_order() -> None:
    traces = CallTraces()
    for e in a_leg():
        traces.add("call-a", e)
    for e in b_leg():
        traces.add("call-b", e)
    legs = [TracedLeg("A", "caller", "+8613800000011", "call-a"),
            TracedLeg("B", "callee", "+8613900000022", "call-b")]
    doc = session_document(traces, "sid1", legs)
    assert doc is not None
    assert doc["legs"] == [
        {"leg": "A", "role": "caller", "number": "+8613800000011", "call_id": "call-a",
         "messages": 7},
        {"leg": "B", "role": "callee", "number": "+8613900000022", "call_id": "call-b",
         "messages": 4}]
    stamps = [m["timestamp"] for m in doc["messages"]]
    assert stamps == sorted(stamps) and len(stamps) == 11
    first = doc["messages"][0]
    assert first["leg"] == "A" and first["call_id"] == "call-a"
    assert first["time"] == "2026-09-21T14:13:20.000Z" and first["direction"] == "out"
    assert first["text"].startswith("INVITE sip:+8613800000011@") and "v=0" in first["text"]
    assert [m["leg"] for m in doc["messages"]][4:7] == ["A", "B", "B"]
    ladder = doc["ladder"]
    assert ladder.startswith("SIP trace of session sid1\n"
                             "  A caller +8613800000011   Call-ID call-a\n"
                             "  B callee +8613900000022   Call-ID call-b\n"
                             "  t0 = 2026-09-21T14:13:20.000Z\n\n")
    assert "A caller +8613800000011" in ladder.splitlines()[5]


def test_session_without_traces_is_none_and_unknown_dialog_is_none() -> None:
    traces = CallTraces()
    assert session_document(traces, "s", [TracedLeg("A", "callee", "1", "gone")]) is None
    assert dialog_document(traces, "gone") is None
    empty = session_document(traces, "s", [])   # accepted, nothing dialled yet
    assert empty is not None and empty["messages"] == [] and empty["legs"] == []


def test_recent_dialogs_newest_first_with_sessions() -> None:
    traces = CallTraces(max_calls=2)
    for cid, t in (("old", 0.0), ("x", 1.0), ("y", 2.0)):
        traces.add(cid, msg(t, "in", A, "INVITE sip:1@h SIP/2.0", to_tag=False))
    got = recent_dialogs(traces, {"x": "sid-x"})
    assert [(d["call_id"], d["session_id"], d["direction"]) for d in got] == [
        ("y", None, "inbound"), ("x", "sid-x", "inbound")]
    assert got[0]["remote"] == f"udp:{A}" and got[0]["messages"] == 1
    assert recent_dialogs(traces, limit=1)[0]["call_id"] == "y"


def test_probes_and_registrations_do_not_push_calls_out() -> None:
    traces = CallTraces(max_calls=2)
    traces.add("call-1", msg(0.0, "out", B, "INVITE sip:1@h SIP/2.0", to_tag=False))
    for i in range(5):   # a gateway probed every 30 s: a Call-ID per probe
        traces.add(f"ping-{i}", msg(1.0 + i, "out", B, "OPTIONS sip:gw@h SIP/2.0",
                                    to_tag=False, cseq="1 OPTIONS"))
    traces.add("call-2", msg(9.0, "in", A, "INVITE sip:2@h SIP/2.0", to_tag=False))
    traces.add("call-1", msg(10.0, "in", B, "SIP/2.0 200 OK"))
    assert traces.call_ids(calls_only=True) == ["call-1", "call-2"]
    assert traces.call_ids() == ["call-1", "ping-3", "ping-4", "call-2"]   # by first message
    assert traces.get("call-1") is not None and len(traces.get("call-1") or []) == 2
    assert traces.get("ping-0") is None
    assert [d["call_id"] for d in recent_dialogs(traces)] == ["call-2", "call-1"]
    assert [d["call_id"] for d in recent_dialogs(traces, calls_only=False, limit=3)] == [
        "call-2", "ping-4", "ping-3"]


def b2bua_legs() -> tuple[list[TraceEntry], list[TraceEntry]]:
    phone_a, phone_b = "127.0.0.1:40000", "127.0.0.1:40002"
    a = [msg(0.0, "in", phone_a, "INVITE sip:1002@127.0.0.1:5060 SIP/2.0", to_tag=False,
             sdp=True),
         msg(0.001, "out", phone_a, "SIP/2.0 100 Trying", to_tag=False),
         msg(0.3, "out", phone_a, "SIP/2.0 180 Ringing"),
         msg(2.0, "out", phone_a, "SIP/2.0 200 OK", sdp=True),
         msg(2.01, "in", phone_a, "ACK sip:1002@127.0.0.1:5060 SIP/2.0", cseq="1 ACK")]
    b = [msg(0.002, "out", phone_b, "INVITE sip:1002@127.0.0.1:40002 SIP/2.0", to_tag=False,
             sdp=True),
         msg(0.29, "in", phone_b, "SIP/2.0 180 Ringing"),
         msg(1.99, "in", phone_b, "SIP/2.0 200 OK", sdp=True),
         msg(1.995, "out", phone_b, "ACK sip:1002@127.0.0.1:40002 SIP/2.0", cseq="1 ACK")]
    return a, b


def test_b2bua_dialogs_merge_caller_left_callee_right() -> None:
    a, b = b2bua_legs()
    got = dialogs_ladder([("ca", a), ("cb", b)])
    expected = """\
                 127.0.0.1:40000                voicecall                127.0.0.1:40002
               udp:127.0.0.1:40000           127.0.0.1:5060            udp:127.0.0.1:40002
                        |                           |                           |
+0.000s                 |------- INVITE +SDP ------>|                           |   INVITE sip:1002@127.0.0.1:5060
+0.001s                 |<-- 100 Trying (INVITE) ---|                           |
+0.002s                 |                           |------- INVITE +SDP ------>|   INVITE sip:1002@127.0.0.1:40002
+0.290s                 |                           |<- 180 Ringing (INVITE) ---|
+0.300s                 |<- 180 Ringing (INVITE) ---|                           |
+1.990s                 |                           |<- 200 OK (INVITE) +SDP ---|
+1.995s                 |                           |----------- ACK ---------->|
+2.000s                 |<- 200 OK (INVITE) +SDP ---|                           |
+2.010s                 |----------- ACK ---------->|                           |"""
    assert got == expected, "\n" + got


def test_dialog_document_merges_dialogs_and_needs_all_of_them() -> None:
    a, b = b2bua_legs()
    traces = CallTraces()
    for e in a:
        traces.add("ca", e)
    for e in b:
        traces.add("cb", e)
    doc = dialog_document(traces, "ca", None, ["cb", "ca"])
    assert doc is not None and doc["call_ids"] == ["ca", "cb"]
    assert [m["call_id"] for m in doc["messages"]] == [
        "ca", "ca", "cb", "cb", "ca", "cb", "cb", "ca", "ca"]
    assert doc["ladder"].startswith("SIP trace of Call-ID ca + cb\n  t0 = ")
    assert dialog_document(traces, "ca", None, ["gone"]) is None
