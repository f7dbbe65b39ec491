"""Hostile and broken input against the running daemon: service must go on.

* A UDP flood of 20,000 garbage datagrams in a few seconds from a separate process (random
  bytes, truncated INVITEs, 65,507-octet datagrams — the largest IPv4 UDP payload, so
  "64 KiB+" is capped there —, NUL/0xFF junk, fake responses, SIP-looking header soup):
  OPTIONS from a good client during and after the flood are answered 200 (the client
  retransmits like a UAC, RFC 3261 Timer E, since a flooded socket may drop datagrams), and
  a full SIPp call succeeds right after.
* TCP: an oversized message (Content-Length beyond ``max_message_bytes``, or a header
  section that never ends) closes that connection only; a client that sends half a
  message and stalls blocks nobody, and its message is answered once the rest arrives.
* A malformed INVITE gets 400 whose reason phrase names the problem.

Observed numbers are printed (run with ``-s``); no timing is asserted beyond liveness bounds.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import free_port, running, uac, uas
from tests.integration.test_rfc4475_daemon import (
    GuardedDaemon,
    Tcp,
    Udp,
    node_config,
    options,
    start_node,
)
from tests.paths import REPO

pytestmark = pytest.mark.integration

CALLEE = "+8675512345678"

# Run in a child process so the flood does not share the test's GIL.
FLOODER = r"""
import os, random, socket, sys, time
port, total, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
rnd = random.Random(4475)
invite = (b"INVITE sip:+8675512345678@127.0.0.1 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKflood;rport\r\nMax-Forwards: 70\r\n"
          b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\nCall-ID: flood\r\n"
          b"CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:9>\r\nContent-Type: application/sdp\r\n"
          b"Content-Length: 60\r\n\r\n"
          b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n")
big = bytes(rnd.getrandbits(8) for _ in range(65507))
def junk(i):
    k = i % 8
    if k == 0:
        return os.urandom(rnd.randint(1, 1400))
    if k == 1:
        cut = invite[:rnd.randint(1, len(invite) - 1)]
        return cut.replace(b"flood", b"flood%d" % i).replace(b"tag=1", b"tag=%d" % i)
    if k == 2:
        return big if i % 40 == 2 else big[:rnd.randint(1500, 65507)]
    if k == 3:
        return b"\x00" * rnd.randint(1, 2000)
    if k == 4:
        return b"\xff\xfe" * rnd.randint(1, 700)
    if k == 5:
        return b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK%d\r\n\r\n" % i
    if k == 6:
        head = b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n"
        return head + b"".join(os.urandom(rnd.randint(1, 40)).replace(b"\r\n", b"")
                               + b": " + os.urandom(8) + b"\r\n" for _ in range(20)) + b"\r\n"
    return b"REGISTER " + os.urandom(rnd.randint(1, 300))
socks = []
for _ in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    socks.append(s)
sent = errors = octets = answers = 0
def drain(s):
    global answers
    try:
        while s.recv(70000):
            answers += 1
    except OSError:
        pass
start = time.monotonic()
for i in range(total):
    due = start + seconds * i / total
    now = time.monotonic()
    if due > now:
        time.sleep(due - now)
    data = junk(i)
    try:
        socks[i % 4].sendto(data, ("127.0.0.1", port))
        sent += 1
        octets += len(data)
    except OSError:
        errors += 1
    if i % 64 == 0:
        for s in socks:  # count (and drain) what the daemon sends back
            drain(s)
elapsed = time.monotonic() - start
time.sleep(1.0)
for s in socks:
    drain(s)
print(f"FLOOD sent={sent} errors={errors} octets={octets} seconds={elapsed:.2f} "
      f"answers={answers}", flush=True)
"""


def config(sip_port: int, uac_port: int, uas_port: int) -> str:
    gateways = (f'[[gateways]]\nname = "uac"\naddress = "udp:127.0.0.1:{uac_port}"\n'
                f"ping_interval_s = 0\n\n"
                f'[[gateways]]\nname = "carrier"\naddress = "udp:127.0.0.1:{uas_port}"\n'
                f"ping_interval_s = 0\n")
    routes = '[[routes]]\nprefix = "+86"\ngateways = ["carrier"]\n'
    return node_config(sip_port, gateways=gateways, routes=routes)


def options_rtt(port: int, budget: float = 5.0) -> tuple[float | None, int]:
    """Send one OPTIONS, retransmitting at 0.5, 1, 2 s (Timer E, T1 = 500 ms) until a 200
    or ``budget``; (seconds to the 200 or None, transmissions)."""
    c = Udp(port)
    try:
        msg, call_id = options(c.port)
        start = time.monotonic()
        interval, sends = 0.5, 0
        while (left := budget - (time.monotonic() - start)) > 0:
            c.send(msg)
            sends += 1
            r = c.final(min(interval, left), call_id)
            if r is not None:
                assert r.status == 200, r.raw[:300]
                return time.monotonic() - start, sends
            interval = min(interval * 2, 4.0)
        return None, sends
    finally:
        c.close()


def test_udp_garbage_flood_does_not_stop_service(workdir: Path) -> None:
    uac_port, uas_port = free_port(), free_port()
    daemon, sip_port = start_node(workdir, lambda p: config(p, uac_port, uas_port))
    with daemon:
        flood = subprocess.Popen([sys.executable, "-c", FLOODER, str(sip_port), "20000", "4"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 cwd=workdir, env={"PYTHONPATH": str(REPO)})
        rtts: list[tuple[float | None, int]] = []
        try:
            while flood.poll() is None:
                rtts.append(options_rtt(sip_port))
                time.sleep(0.1)
            out, _ = flood.communicate(timeout=30)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.communicate(timeout=5)
        after = options_rtt(sip_port, budget=3.0)
        answered = [r for r, _ in rtts if r is not None]
        print(f"\n{out.strip()}\nOPTIONS during flood: {len(rtts)} sent, {len(answered)} "
              f"answered, max {max(answered, default=0):.3f}s, "
              f"retransmitted {sum(1 for _, n in rtts if n > 1)}; after: {after}")
        assert "FLOOD sent=" in out, out
        # The garbage reached the daemon: it answered the parseable part (400s, 407s).
        assert int(out.rsplit("answers=", 1)[1].split()[0]) > 100, out
        assert len(rtts) >= 3, "the flood ended before the good client could probe it"
        assert all(r is not None for r, _ in rtts), rtts
        assert after[0] is not None and after[0] < 1.0, after
        assert daemon.alive(), daemon.drain()[-3000:]

        # A full call right after.
        callee = uas(workdir, "uas_basic.xml", port=uas_port, extra=("-mp", str(free_port())))
        caller = uac(workdir, "uac_basic.xml", f"127.0.0.1:{sip_port}", port=uac_port,
                     service=CALLEE, extra=("-mp", str(free_port()), "-d", "500"))
        with running(caller, callee):
            callee.start()
            time.sleep(0.3)
            caller.start()
            r_uac = caller.wait(40)
            r_uas = callee.wait(40)
        log = daemon.drain()
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert "NETGUARD" not in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]


def _tcp_options_ok(port: int, conn: Tcp | None = None) -> bool:
    c = conn or Tcp(port)
    try:
        msg, call_id = options(c.port, "TCP")
        c.send(msg)
        got = c.finals(1, 5.0)
        return bool(got) and got[0].status == 200 and call_id in got[0].get("call-id")[0]
    finally:
        if conn is None:
            c.close()


@pytest.fixture
def node(workdir: Path) -> Iterator[tuple[GuardedDaemon, int]]:
    d, port = start_node(workdir, node_config)
    try:
        yield d, port
    finally:
        d.stop()


def test_oversized_tcp_message_closes_only_that_connection(node: tuple[GuardedDaemon, int]) -> None:
    daemon, port = node
    with daemon:
        bystander = Tcp(port)
        try:
            assert _tcp_options_ok(port, bystander)
            # 1. Content-Length beyond max_message_bytes (65,535): closed at once.
            big_cl = Tcp(port)
            msg, _ = options(big_cl.port, "TCP")
            big_cl.send(msg.replace(b"Content-Length: 0", b"Content-Length: 200000"))
            assert not big_cl.read(5.0) and big_cl.eof, "oversized Content-Length kept open"
            big_cl.close()
            # 2. A header section that never ends: closed once it passes the limit.
            endless = Tcp(port)
            sent = 0
            endless.send(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n")
            try:
                while sent < 1_000_000 and not endless.eof:
                    endless.send(b"X-Junk: " + b"a" * 1000 + b"\r\n")
                    sent += 1010
            except (BrokenPipeError, ConnectionResetError):
                endless.eof = True
            endless.read(5.0)
            assert endless.eof, "a 1 MB header section did not close the connection"
            endless.close()
            # The other connection and UDP are untouched.
            assert _tcp_options_ok(port, bystander)
            assert options_rtt(port, budget=2.0)[0] is not None
        finally:
            bystander.close()
        log = daemon.drain()
    assert "closing stream after framing error" in log
    assert "Traceback" not in log and "NETGUARD" not in log, log[-3000:]


def test_stalled_half_message_blocks_nobody(node: tuple[GuardedDaemon, int]) -> None:
    daemon, port = node
    with daemon:
        staller = Tcp(port)
        try:
            msg, call_id = options(staller.port, "TCP")
            staller.send(msg[:60])   # half a request line and a Via, then silence
            started = time.monotonic()
            for _ in range(5):
                assert _tcp_options_ok(port)                     # new TCP connections
                assert options_rtt(port, budget=2.0)[0] is not None  # and UDP
            elapsed = time.monotonic() - started
            print(f"\n5 TCP + 5 UDP OPTIONS beside a stalled connection: {elapsed:.3f}s")
            assert not staller.read(0.3), "answered half a message"
            # The stalled client finishes its message: it is answered on that connection.
            staller.send(msg[60:])
            got = staller.finals(1, 5.0)
            assert got and got[0].status == 200 and call_id in got[0].get("call-id")[0]
        finally:
            staller.close()
        assert "Traceback" not in daemon.drain()


@pytest.mark.parametrize(("line", "reason_word"), [
    ("CSeq: abc INVITE", "CSeq"),
    ("Max-Forwards: many", "Max-Forwards"),
    ("From: <sip:caller@127.0.0.1;tag=1", "From"),
])
def test_malformed_invite_gets_400_with_reason(node: tuple[GuardedDaemon, int], line: str,
                                               reason_word: str) -> None:
    daemon, port = node
    with daemon:
        c = Udp(port)
        try:
            call_id = f"bad-{secrets.token_hex(6)}"
            headers = {
                "Via": f"SIP/2.0/UDP 127.0.0.1:{c.port};branch=z9hG4bK{secrets.token_hex(6)}",
                "Max-Forwards": "70",
                "From": "<sip:caller@127.0.0.1>;tag=1",
                "To": "<sip:+8675512345678@127.0.0.1>",
                "Call-ID": call_id,
                "CSeq": "1 INVITE",
                "Contact": f"<sip:caller@127.0.0.1:{c.port}>",
            }
            name, _, value = line.partition(": ")
            headers[name] = value
            msg = ("INVITE sip:+8675512345678@127.0.0.1 SIP/2.0\r\n"
                   + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                   + "Content-Length: 0\r\n\r\n")
            c.send(msg.encode())
            r = c.final(5.0)
        finally:
            c.close()
        assert r is not None, daemon.drain()[-2000:]
        assert r.status == 400, r.raw[:500]
        assert reason_word.lower() in r.reason.lower(), r.reason
        assert call_id in r.get("call-id")[0]
        assert options_rtt(port, budget=2.0)[0] is not None


def test_stalled_connections_are_closed_after_the_message_read_timeout(
        node: tuple[GuardedDaemon, int]) -> None:
    """Slowloris bound: a connection whose message stays incomplete (or that never sends a
    first message) is closed after the 20 s message read timeout — before the fix they
    were kept for the 3600 s idle timeout, and 10,000 of them (``max_connections``) locked
    every new TCP client out. A connection that completed its message and then idles is
    left alone."""
    daemon, port = node
    with daemon:
        half, silent, regular = Tcp(port), Tcp(port), Tcp(port)
        try:
            msg, _ = options(half.port, "TCP")
            half.send(msg[:80])
            assert _tcp_options_ok(port, regular)
            started = time.monotonic()
            closed_after: dict[str, float] = {}
            while len(closed_after) < 2 and time.monotonic() - started < 45:
                for name, conn in (("half", half), ("silent", silent)):
                    if name not in closed_after:
                        conn.read(0.25)
                        if conn.eof:
                            closed_after[name] = time.monotonic() - started
            print(f"\nstalled connections closed after: {closed_after}")
            assert set(closed_after) == {"half", "silent"}, closed_after
            assert min(closed_after.values()) > 15, closed_after   # not before the timeout
            assert not regular.read(0.2) and not regular.eof
            assert _tcp_options_ok(port, regular)
        finally:
            for c in (half, silent, regular):
                c.close()
        log = daemon.drain()
    assert "incomplete message timed out" in log, log[-2000:]
