"""Two real baresip 1.0 softphones through the running daemon.

1001 and 1002 register with digest auth (the node challenges REGISTER with 401), 1001
dials 1002 over ctrl_tcp, the INVITE is challenged with 407 and answered, the B2BUA calls
1002's registered contact, 1002 auto-answers, both see CALL_ESTABLISHED (and RTP), 1001
hangs up, both see CALL_CLOSED.

Interop finding: baresip 1.0 (libre) fails the whole challenge with ENOSYS ("Function not
implemented") as soon as ONE WWW-Authenticate in the 401 names an algorithm other than MD5,
even when an MD5 challenge comes first — so the node's default is
``sip.digest_algorithms = ["MD5"]``; ``test_sha256_challenge_defeats_baresip`` records the
failure with ``["MD5", "SHA-256"]`` as a strict xfail (it starts passing when baresip learns
RFC 8760).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.baresip import Baresip, make_wav
from tests.integration.test_rfc4475_daemon import node_config, start_node

pytestmark = pytest.mark.integration

MD5_ONLY = 'digest_algorithms = ["MD5"]'


class Phones:
    def __init__(self, workdir: Path, extra_sip: str) -> None:
        wav = make_wav(workdir / "tone.wav")
        self.daemon, self.port = start_node(
            workdir, lambda p: node_config(p, extra_sip=extra_sip))
        registrar = f"127.0.0.1:{self.port}"
        self.a = Baresip(workdir, "a", "1001", "secret1001", registrar, wav=wav)
        self.b = Baresip(workdir, "b", "1002", "secret1002", registrar, wav=wav,
                         auto_answer=True)

    def start(self) -> None:
        self.a.start()
        self.b.start()

    def stop(self) -> None:
        self.a.stop()
        self.b.stop()
        self.daemon.stop()

    def explain(self) -> str:
        return (f"--- daemon ---\n{self.daemon.drain()[-4000:]}\n--- a ---\n"
                f"{self.a.log()[-2000:]}\n--- b ---\n{self.b.log()[-2000:]}")


@pytest.fixture
def phones_md5(workdir: Path) -> Iterator[Phones]:
    p = Phones(workdir, MD5_ONLY)
    try:
        p.start()
        yield p
    finally:
        p.stop()
    assert "NETGUARD" not in p.daemon.drain()


@pytest.fixture
def phones_default(workdir: Path) -> Iterator[Phones]:
    p = Phones(workdir, "")
    try:
        p.start()
        yield p
    finally:
        p.stop()


@pytest.fixture
def phones_sha256(workdir: Path) -> Iterator[Phones]:
    p = Phones(workdir, 'digest_algorithms = ["MD5", "SHA-256"]')
    try:
        p.start()
        yield p
    finally:
        p.stop()


def test_call_between_two_registered_baresip_phones(phones_md5: Phones) -> None:
    p = phones_md5
    for phone in (p.a, p.b):
        reg = phone.register()
        assert reg["type"] == "REGISTER_OK", (reg, p.explain())
    log = p.daemon.drain()
    assert "registrar.challenge" in log and "registrar.ok" in log  # 401 first, then 200

    resp = p.a.command("dial", f"sip:1002@127.0.0.1:{p.port}", token="t1")
    assert resp.get("ok") is True, resp

    a_est = p.a.wait_event("CALL_ESTABLISHED", 15)
    b_est = p.b.wait_event("CALL_ESTABLISHED", 15)
    assert a_est["direction"] == "outgoing" and b_est["direction"] == "incoming"
    # The callee sees the caller's number (the B2BUA's own dialog, not 1001's Call-ID).
    assert "+8610001001" in b_est["peeruri"]
    assert a_est["id"] != b_est["id"]
    # Media flows both ways through the switch.
    p.a.wait_event("CALL_RTPESTAB", 10)
    p.b.wait_event("CALL_RTPESTAB", 10)
    time.sleep(1.0)

    resp = p.a.command("hangup", "", token="t2")
    assert resp.get("ok") is True, resp
    p.a.wait_event("CALL_CLOSED", 10)
    b_closed = p.b.wait_event("CALL_CLOSED", 10)
    assert b_closed["id"] == b_est["id"]
    assert "b2bua call ended" in p.daemon.drain(), p.explain()
    assert "Traceback" not in p.daemon.drain(), p.explain()


def test_registers_with_default_digest_algorithms(phones_default: Phones) -> None:
    reg = phones_default.a.register()
    assert reg["type"] == "REGISTER_OK", reg


@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "baresip 1.0/libre aborts digest auth with ENOSYS when any challenge in the 401 uses "
    "SHA-256, even after an MD5 one; the node's default offers MD5 only for it"))
def test_sha256_challenge_defeats_baresip(phones_sha256: Phones) -> None:
    reg = phones_sha256.a.register()
    # Observed: {"type": "REGISTER_FAIL", "param": "Function not implemented"}
    assert reg["type"] == "REGISTER_OK", reg
