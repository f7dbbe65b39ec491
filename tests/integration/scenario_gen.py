"""SIPp scenarios that differ only in a status code, written on the fly (the callee side
is built with the step builder ``tests.integration.services.scen.Uas``)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.services.scen import Uas

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
    scenario = Uas(f"uas_reject_{status}")
    if ring_first:
        scenario.ring()
    return scenario.reject(status, reason).write(workdir)


def uas_ring_until_cancel(workdir: Path) -> Path:
    """A callee gateway that rings until it is CANCELled (no answer)."""
    return Uas("uas_no_answer").ring().until_cancel().write(workdir)
