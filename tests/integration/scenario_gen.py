"""SIPp scenarios that differ only in a status code, written on the fly."""

from __future__ import annotations

from pathlib import Path

_SDP_OFFER = """      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 0 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000"""


def uac_expect_failure(workdir: Path, status: int, *, provisional: bool = True) -> Path:
    """A caller that expects the final ``status`` (and ACKs it)."""
    opt = '  <recv response="180" optional="true"/>\n  <recv response="183" optional="true"/>\n' \
        if provisional else ""
    text = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac_expect_{status}">
  <send retrans="500">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "caller" <sip:+8613811112222@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:+8613811112222@[local_ip]:[local_port];transport=[transport]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

{_SDP_OFFER}
    ]]>
  </send>
  <recv response="100" optional="true"/>
{opt}  <recv response="{status}"/>
  <send>
    <![CDATA[
      ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [last_From:]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <timewait milliseconds="300"/>
</scenario>
"""
    p = workdir / f"uac_expect_{status}.xml"
    p.write_text(text)
    return p


def uas_reject(workdir: Path, status: int, reason: str, *, ring_first: bool = True) -> Path:
    """A callee gateway that (optionally rings, then) rejects with ``status``."""
    ring = """  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
""" if ring_first else ""
    text = f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas_reject_{status}">
  <recv request="INVITE" crlf="true"/>
{ring}  <send>
    <![CDATA[
      SIP/2.0 {status} {reason}
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
  <timewait milliseconds="300"/>
</scenario>
"""
    p = workdir / f"uas_reject_{status}.xml"
    p.write_text(text)
    return p


def uas_ring_until_cancel(workdir: Path) -> Path:
    """A callee gateway that rings until it is CANCELled (no answer)."""
    text = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uas_no_answer">
  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="inv_via"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="inv_to"/>
      <ereg regexp="([0-9]+) INVITE" search_in="hdr" header="CSeq:" assign_to="junk,inv_cseq"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      SIP/2.0 180 Ringing
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0
    ]]>
  </send>
  <recv request="CANCEL"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
  <send>
    <![CDATA[
      SIP/2.0 487 Request Terminated
      Via:[$inv_via]
      [last_From:]
      To:[$inv_to];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      CSeq: [$inv_cseq] INVITE
      Content-Length: 0
    ]]>
  </send>
  <recv request="ACK"/>
  <timewait milliseconds="300"/>
  <Reference variables="junk"/>
</scenario>
"""
    p = workdir / "uas_no_answer.xml"
    p.write_text(text)
    return p
