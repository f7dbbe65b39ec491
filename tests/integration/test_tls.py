"""SIP over TLS (RFC 3261 §26.2.1, §18) against the running daemon.

The Debian SIPp (3.6.1) is built without OpenSSL (``-t l1`` answers "To use a TLS transport
you must compile SIPp with OpenSSL"), so the TLS caller is a small Python UAC on
``ssl``: it places a whole call (INVITE with SDP → 180/200 → ACK → BYE → 200) over one TLS
connection to the node, the B2BUA calls a real SIPp UAS over UDP, and both sides must
complete. The client verifies the node's certificate (a throwaway self-signed one made
with ``cryptography`` in tmp, used as the only CA) and the hostname (IP SAN 127.0.0.1).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import secrets
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.integration.harness import free_port, running, uas
from tests.integration.test_rfc4475_daemon import (
    GuardedDaemon,
    Reply,
    node_config,
    parse_reply,
    split_stream,
    start_node,
)

pytestmark = pytest.mark.integration

CALLEE = "+8675512345678"


def make_cert(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "voicecall test node")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "node.crt", directory / "node.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsUac:
    """A minimal SIP UAC over one TLS connection bound to a fixed local port."""

    def __init__(self, ca: Path, local_port: int, server_port: int) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        raw.bind(("127.0.0.1", local_port))
        raw.settimeout(5)
        raw.connect(("127.0.0.1", server_port))
        self.sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.port = local_port
        self.buf = bytearray()
        self.requests: list[bytes] = []

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def reply(self, call_id: str, method: str, timeout: float = 10.0,
              final: bool = True) -> Reply:
        """The next (final, unless ``final`` is False) response to ``method``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in split_stream(self.buf):
                if not m.startswith(b"SIP/2.0"):
                    self.requests.append(m)
                    continue
                r = parse_reply(m)
                if (call_id in r.get("call-id")[0] and r.get("cseq")[0].endswith(method)
                        and (r.status >= 200 or not final)):
                    return r
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise ConnectionError("the node closed the TLS connection")
            self.buf += chunk
        raise TimeoutError(f"no response to {method} within {timeout} s")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _sdp(port: int) -> str:
    return ("v=0\r\no=uac 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n")


def _tls_config(workdir: Path, sip_port: int, tls_port: int, client_port: int,
                uas_port: int) -> str:
    cert, key = make_cert(workdir)
    gateways = (f'[[gateways]]\nname = "tlsclient"\naddress = "tls:127.0.0.1:{client_port}"\n'
                f"ping_interval_s = 0\n\n"
                f'[[gateways]]\nname = "carrier"\naddress = "udp:127.0.0.1:{uas_port}"\n'
                f"ping_interval_s = 0\n")
    routes = '[[routes]]\nprefix = "+86"\ngateways = ["carrier"]\n'
    return node_config(sip_port, tls_port=tls_port, gateways=gateways, routes=routes,
                       extra_sip=f'tls_cert = "{cert}"\ntls_key = "{key}"')


def _start(workdir: Path, client_port: int, uas_port: int) -> tuple[GuardedDaemon, int]:
    """The node (retried on a port race); returns it and its TLS port."""
    tls: list[int] = []

    def make(sip_port: int) -> str:
        tls.append(free_port())
        return _tls_config(workdir, sip_port, tls[-1], client_port, uas_port)

    daemon, _ = start_node(workdir, make)
    return daemon, tls[-1]


def test_call_from_tls_caller_to_udp_gateway(workdir: Path) -> None:
    client_port, uas_port = free_port(), free_port()
    daemon, tls_port = _start(workdir, client_port, uas_port)
    callee = uas(workdir, "uas_basic.xml", port=uas_port, extra=("-mp", str(free_port())))
    with daemon, running(callee):
        callee.start()
        time.sleep(0.3)
        c = TlsUac(workdir / "node.crt", client_port, tls_port)
        try:
            version = c.sock.version()
            assert version in ("TLSv1.2", "TLSv1.3"), version
            call_id = f"tls-{secrets.token_hex(6)}"
            ftag = secrets.token_hex(4)
            via = f"SIP/2.0/TLS 127.0.0.1:{client_port};rport;branch=z9hG4bK"
            contact = f"<sip:caller@127.0.0.1:{client_port};transport=tls>"
            sdp = _sdp(free_port())
            c.send(f"INVITE sip:{CALLEE}@127.0.0.1:{tls_port};transport=tls SIP/2.0\r\n"
                   f"Via: {via}{secrets.token_hex(6)}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:+8613800000001@127.0.0.1>;tag={ftag}\r\n"
                   f"To: <sip:{CALLEE}@127.0.0.1>\r\nCall-ID: {call_id}\r\n"
                   f"CSeq: 1 INVITE\r\nContact: {contact}\r\n"
                   f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n{sdp}")
            ringing = c.reply(call_id, "INVITE", final=False)
            ok = ringing if ringing.status >= 200 else c.reply(call_id, "INVITE")
            assert ok.status == 200, ok.raw[:800]
            assert b"m=audio" in ok.raw
            to = ok.get("to")[0]
            m = re.search(r"<([^>]+)>", ok.get("contact")[0])
            assert m is not None, ok.raw
            target = m.group(1)
            assert "transport=tls" in target.lower(), target  # the node's TLS Contact
            c.send(f"ACK {target} SIP/2.0\r\nVia: {via}{secrets.token_hex(6)}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:+8613800000001@127.0.0.1>;tag={ftag}\r\n"
                   f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
            time.sleep(0.5)
            c.send(f"BYE {target} SIP/2.0\r\nVia: {via}{secrets.token_hex(6)}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:+8613800000001@127.0.0.1>;tag={ftag}\r\n"
                   f"To: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
            bye_ok = c.reply(call_id, "BYE")
            assert bye_ok.status == 200, bye_ok.raw[:600]
        finally:
            c.close()
        r_uas = callee.wait(30)
        log = daemon.drain()
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert "NETGUARD" not in log and "Traceback" not in log, log[-3000:]


def test_options_over_tls_and_plaintext_on_tls_port_does_not_hurt(workdir: Path) -> None:
    daemon, tls_port = _start(workdir, free_port(), free_port())
    with daemon:
        # Plain SIP to the TLS port: the handshake fails and only that connection is lost.
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as plain:
            plain.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            plain.settimeout(5)
            try:
                data = plain.recv(4096)
            except (ConnectionResetError, TimeoutError):
                data = b""
            assert not data.startswith(b"SIP/2.0"), data
        c = TlsUac(workdir / "node.crt", free_port(), tls_port)
        try:
            call_id = f"tls-opt-{secrets.token_hex(6)}"
            c.send(f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
                   f"Via: SIP/2.0/TLS 127.0.0.1:{c.port};rport;branch=z9hG4bK{secrets.token_hex(6)}\r\n"
                   f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=1\r\n"
                   f"To: <sip:probe@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
                   f"Content-Length: 0\r\n\r\n")
            r = c.reply(call_id, "OPTIONS")
            assert r.status == 200, r.raw[:500]
        finally:
            c.close()
        log = daemon.drain()
    assert "NETGUARD" not in log and "Traceback" not in log, log[-3000:]
