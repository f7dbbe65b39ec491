"""SIPp UAS scenarios for the gateways of the service tests, assembled from steps, and RTP
tone pcaps for them.

A gateway plays one party (A or B): it rings in some way (180, 183 with SDP, reliable 183,
early RTP or none), then answers, rejects, or rings until it is CANCELled; once answered it
may play audio and either hang up itself or wait for our BYE. Every response to the INVITE
uses the INVITE's own headers (saved at receipt), so a PRACK in between does not confuse
``[last_*]``."""

from __future__ import annotations

import struct
from pathlib import Path

import dpkt
import numpy as np

from media.g711 import alaw_encode

SAMPLE_PCAP = Path("/usr/share/sip-tester")

_SDP = """
      v=0
      o=gw 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15"""

_RECV_INVITE = """  <recv request="INVITE" crlf="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Via:" assign_to="inv_via"/>
      <ereg regexp=".*" search_in="hdr" header="From:" assign_to="inv_from"/>
      <ereg regexp=".*" search_in="hdr" header="To:" assign_to="inv_to"/>
      <ereg regexp="([0-9]+) INVITE" search_in="hdr" header="CSeq:" assign_to="junk,inv_cseq"/>
      <ereg regexp="sips?:[^>;]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>
    </action>
  </recv>
"""


def _response(status: str, *, sdp: bool = False, extra: str = "") -> str:
    body = f"Content-Type: application/sdp\n      Content-Length: [len]\n{_SDP}" if sdp \
        else "Content-Length: 0"
    extra_lines = "".join(f"      {h}\n" for h in extra.splitlines() if h.strip())
    return f"""  <send retrans="500">
    <![CDATA[
      SIP/2.0 {status}
      Via: [$inv_via]
      From: [$inv_from]
      To: [$inv_to];tag=[pid]gw[call_number]
      Call-ID: [call_id]
      CSeq: [$inv_cseq] INVITE
      Contact: <sip:gw@[local_ip]:[local_port];transport=[transport]>
{extra_lines}      {body}
    ]]>
  </send>
"""


def _provisional(status: str, *, sdp: bool = False, extra: str = "") -> str:
    # Unreliable provisionals are not retransmitted.
    return _response(status, sdp=sdp, extra=extra).replace(' retrans="500"', "")


def _pcap(path: Path) -> str:
    return f"""  <nop><action><exec play_pcap_audio="{path}"/></action></nop>
"""


class Uas:
    """A scenario under construction; each method appends a step and returns self."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: list[str] = [_RECV_INVITE]

    def ring(self, *, pcap: Path | None = None, sdp: bool = False, code: int = 180,
             extra: str = "") -> Uas:
        """180 (or 183 with ``sdp``); with ``pcap`` RTP follows as early media; ``extra``
        header lines (e.g. a ``Reason`` with a Q.850 cause)."""
        reason = "Ringing" if code == 180 else "Session Progress"
        self.steps.append(_provisional(f"{code} {reason}", sdp=sdp or pcap is not None,
                                       extra=extra))
        if pcap is not None:
            self.steps.append(_pcap(pcap))
        return self

    def ring_reliable(self, *, pcap: Path | None = None) -> Uas:
        """183 with SDP sent reliably (RFC 3262): expects the PRACK and answers it."""
        self.steps.append(_response("183 Session Progress", sdp=True,
                                    extra="Require: 100rel\nRSeq: 1"))
        self.steps.append("""  <recv request="PRACK" crlf="true"/>
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
""")
        if pcap is not None:
            self.steps.append(_pcap(pcap))
        return self

    def rtp(self, pcap: Path) -> Uas:
        """Start sending ``pcap``'s RTP now (to the media address of the INVITE's SDP)."""
        self.steps.append(_pcap(pcap))
        return self

    def pause(self, ms: int) -> Uas:
        self.steps.append(f'  <pause milliseconds="{ms}"/>\n')
        return self

    def answer(self, *, pcap: Path | None = None) -> Uas:
        self.steps.append(_response("200 OK", sdp=True))
        self.steps.append('  <recv request="ACK" crlf="true"/>\n')
        if pcap is not None:
            self.steps.append(_pcap(pcap))
        return self

    def reject(self, status: int, reason: str) -> Uas:
        self.steps.append(_response(f"{status} {reason}"))
        self.steps.append('  <recv request="ACK"/>\n')
        return self

    def until_cancel(self) -> Uas:
        """Ring on until the CANCEL: 200 to it, 487 to the INVITE, ACK."""
        self.steps.append("""  <recv request="CANCEL"/>
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
""")
        self.steps.append(_response("487 Request Terminated").replace(' retrans="500"', ""))
        self.steps.append('  <recv request="ACK"/>\n')
        return self

    def wait_bye(self) -> Uas:
        self.steps.append("""  <recv request="BYE"/>
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
""")
        return self

    def bye(self) -> Uas:
        self.steps.append("""  <send retrans="500">
    <![CDATA[
      BYE [$remote_contact] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: [$inv_to];tag=[pid]gw[call_number]
      To: [$inv_from]
      Call-ID: [call_id]
      CSeq: 1 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
""")
        return self

    def write(self, workdir: Path) -> Path:
        text = (f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<scenario name="{self.name}">\n'
                + "".join(self.steps)
                + '  <timewait milliseconds="300"/>\n'
                  '  <Reference variables="junk,inv_via,inv_from,inv_to,inv_cseq,'
                  'remote_contact"/>\n</scenario>\n')
        p = workdir / f"{self.name}.xml"
        p.write_text(text)
        return p


def tone_pcap(path: Path, freq_hz: float, seconds: float, *, amplitude: float = 8000.0,
              ssrc: int = 0x1234) -> Path:
    """An Ethernet/IPv4/UDP/RTP pcap of a PCMA sine tone in 20 ms packets (what SIPp's
    ``play_pcap_audio`` replays, re-addressed to the negotiated media address)."""
    n = int(seconds * 8000)
    t = np.arange(n) / 8000.0
    pcm = (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.int16)
    payload = alaw_encode(pcm)
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f)
        for i in range(0, n // 160):
            rtp = struct.pack("!BBHII", 0x80, 8 | (0x80 if i == 0 else 0), i & 0xFFFF,
                              (i * 160) & 0xFFFFFFFF, ssrc) + payload[i * 160:(i + 1) * 160]
            udp = dpkt.udp.UDP(sport=6000, dport=6002, data=rtp)
            udp.ulen = len(udp)
            ip = dpkt.ip.IP(src=b"\x7f\x00\x00\x01", dst=b"\x7f\x00\x00\x01", p=17, data=udp)
            ip.len = len(ip)
            eth = dpkt.ethernet.Ethernet(src=b"\x00" * 6, dst=b"\x00" * 6,
                                         type=dpkt.ethernet.ETH_TYPE_IP, data=ip)
            w.writepkt(bytes(eth), ts=1_000_000.0 + i * 0.02)
    return path
