"""RFC 4475 torture messages over the wire: every one of the 49 files is sent to the RUNNING
daemon over UDP and over TCP, and the outcome its section prescribes is asserted — the exact
status (and the header that goes with it: Unsupported, Accept, Allow, WWW-/Proxy-
Authenticate), or no answer at all within a bounded wait — and each time the daemon must
still answer an OPTIONS with 200 afterwards.

Node profile (``node_config`` below): a plain UA/registrar with users 1001/1002 and no
gateways, so a valid INVITE from a test socket (not a gateway) is challenged with 407, a
REGISTER with 401, an OPTIONS gets 200, a request with a To tag and no dialog 481, MESSAGE
(known, not implemented) 405 + Allow, unknown methods 501.

Via rewrite (the machine may send to 127.0.0.1 only): before sending a *request*, the
sent-by (host[:port]) of its top Via is replaced byte-wise by ``127.0.0.1:<port of the
test socket>`` — nothing else is touched (folding, transport, version, parameters,
separators and the other Vias stay as the RFC gives them), so what each message tests is
kept: ``badbranch`` keeps its bare ``z9hG4bK`` branch, ``transports`` its SCTP/TLS/UNKNOWN
Vias below the top one, ``badvers`` its ``SIP/7.0/UDP``, ``badinv01`` its ``;;,;,,``.
Responses (``bcast``, ``bigcode``, ``scalarlg``, ``unreason``, ``noreason``) are sent
unchanged: a UA never sends anything back for a response. Without the rewrite the daemon
would still not send to 192.0.2.x: a sent-by that differs from the packet source gets
``received=127.0.0.1`` (§18.2.1) and the answer goes to that address at the *sent-by port*
(§18.2.2; 5060 when absent) — i.e. to whatever else listens on 127.0.0.1:5060, not to the
test. The daemon runs under a small network guard (``GUARD`` below): any send to a
non-loopback address is refused and printed as ``NETGUARD``; every test asserts there was
none, and a control test shows the guard trips on a ``maddr=192.0.2.99`` Via.

Stream transport (RFC 3261 §18.3: Content-Length is mandatory on streams; RFC 4475 §3.1.2.2
notes the stream case differs). Per file, where TCP differs from UDP:

* ``clerr`` (Content-Length 9999, far beyond the data): over TCP the framer cannot know the
  message is short — it waits for the rest of the body. Correct behaviour: no response and
  the connection stays open (other connections unaffected) until the client closes it or
  the 20 s incomplete-message timeout of the transport does.
* ``ncl`` (negative Content-Length), ``mcl01`` (two different Content-Length values),
  ``inv2543`` (no Content-Length, RFC 2543 style): the stream cannot be framed any more, so
  the daemon closes the connection without a response (a 400 cannot be tied to a message
  boundary).
* ``dblreq``: on a stream the bytes after the REGISTER are simply the next message — the
  REGISTER gets 401, the INVITE (Content-Length 150) gets 407, and the 7 octets left after
  the INVITE's body start a message with no Content-Length: the connection is closed.
* every other file: the same answer as over UDP, on the same connection, which stays
  usable (the alive-check OPTIONS is sent on it).
"""

from __future__ import annotations

import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, free_port
from tests.paths import CONFORMANCE, REPO

pytestmark = pytest.mark.integration

FILES = sorted(p.stem for p in CONFORMANCE.glob("*.dat"))

# A tiny wrapper run as the daemon's main: refuse (and report) any SIP send to a
# non-loopback address, then run the real CLI.
GUARD = r"""
import ipaddress, sys
from switch.aio import transports as _t
_orig_send = _t.TransportManager.send
def _loopback(host):
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
def _guarded_send(self, data, peer):
    if not _loopback(peer.host):
        print(f"NETGUARD blocked send to {peer}: {bytes(data[:80])!r}", flush=True)
        return None
    return _orig_send(self, data, peer)
_t.TransportManager.send = _guarded_send
from control_api.cli import main
sys.exit(main(sys.argv[1:]))
"""


@dataclass
class GuardedDaemon(Daemon):
    """:class:`Daemon` whose SIP sends are confined to loopback (see ``GUARD``)."""

    def start(self, timeout: float = 20.0) -> GuardedDaemon:
        import os

        cfg = self.workdir / "voicecall.toml"
        cfg.write_text(self.config_text, encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        env.pop("VOICECALL_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GUARD, "serve", "--config", str(cfg)],
            cwd=self.workdir, env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        # Fail fast when the process exits (e.g. a port taken meanwhile) instead of waiting.
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                break
        if self._ready.is_set() and self.proc.poll() is None:
            return self
        self.stop()
        raise RuntimeError("daemon did not become ready:\n" + "".join(self.output[-50:]))

    def __enter__(self) -> GuardedDaemon:
        # Started already by start_node() (which retries on a port race); enter only once.
        return self if self.alive() else self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def start_node(workdir: Path, make_config: Callable[[int], str],
               attempts: int = 4) -> tuple[GuardedDaemon, int]:
    """Start a guarded daemon on a fresh SIP port; retry with another port when the one
    ``free_port`` found was taken by another process before the daemon could bind it
    (tests of other areas run in parallel on this machine)."""
    error = ""
    for _ in range(attempts):
        port = free_port()
        d = GuardedDaemon(make_config(port), workdir)
        try:
            return d.start(), port
        except RuntimeError as e:
            error = str(e)
            if "cannot start" not in error and "in use" not in error.lower():
                raise
    raise RuntimeError(f"no usable port after {attempts} attempts: {error}")


def node_config(sip_port: int, *, extra_sip: str = "", tls_port: int | None = None,
                gateways: str = "", routes: str = "") -> str:
    listen = [f"udp:127.0.0.1:{sip_port}", f"tcp:127.0.0.1:{sip_port}"]
    if tls_port is not None:
        listen.append(f"tls:127.0.0.1:{tls_port}")
    listen_toml = ", ".join(f'"{a}"' for a in listen)
    return f"""
[node]
name = "torture"
data_dir = "./data"

[api]
listen = "127.0.0.1:{free_port()}"

[sip]
listen = [{listen_toml}]
advertise = "127.0.0.1"
t1_ms = 100
{extra_sip}

[[users]]
username = "1001"
password = "secret1001"
number = "+8610001001"

[[users]]
username = "1002"
password = "secret1002"
number = "+8610001002"

{gateways}
{routes}
"""


# ----------------------------------------------------------------------------- messages
_VIA_NAME = re.compile(rb"(?im)^(via|v)[ \t]*:")
_SENT_BY = re.compile(
    rb"SIP[ \t\r\n]*/[ \t\r\n]*[^ \t\r\n/]+[ \t\r\n]*/[ \t\r\n]*[A-Za-z0-9_-]+[ \t\r\n]+"
    rb"(\[[0-9A-Fa-f:.]+\]|[^ \t\r\n;:,]+)([ \t]*:[ \t]*[0-9]+)?")


def rewrite_top_via(data: bytes, port: int) -> bytes:
    """Replace the sent-by of the first Via header value by 127.0.0.1:port (byte-wise)."""
    head_end = data.find(b"\r\n\r\n")
    head = data if head_end < 0 else data[:head_end]
    m = _VIA_NAME.search(head)
    assert m is not None, "request without a Via"
    s = _SENT_BY.search(data, m.end())
    assert s is not None, f"no sent-by after {data[m.start():m.start() + 80]!r}"
    return data[:s.start(1)] + f"127.0.0.1:{port}".encode() + data[s.end():]


def load(name: str) -> bytes:
    data = (CONFORMANCE / f"{name}.dat").read_bytes()
    return data


def is_response(data: bytes) -> bool:
    return data.startswith(b"SIP/")


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    headers: dict[str, list[str]]
    raw: bytes

    def get(self, name: str) -> list[str]:
        return self.headers.get(name.lower(), [])


_COMPACT = {"v": "via", "f": "from", "t": "to", "i": "call-id", "l": "content-length",
            "m": "contact", "c": "content-type", "k": "supported", "e": "content-encoding"}


def parse_reply(raw: bytes) -> Reply:
    """A deliberately independent, minimal parse of the daemon's response."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", lines[0])
    assert m is not None, f"not a SIP response: {raw[:200]!r}"
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers.setdefault(_COMPACT.get(key, key), []).append(value.strip())
    return Reply(int(m.group(1)), m.group(2), headers, raw)


def split_stream(buf: bytearray) -> list[bytes]:
    """Whole responses out of a TCP byte buffer (Content-Length framing)."""
    out: list[bytes] = []
    while True:
        while buf.startswith(b"\r\n"):
            del buf[:2]
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        m = re.search(rb"(?im)^(content-length|l)[ \t]*:[ \t]*(\d+)", bytes(buf[:end]))
        clen = int(m.group(2)) if m else 0
        total = end + 4 + clen
        if len(buf) < total:
            return out
        out.append(bytes(buf[:total]))
        del buf[:total]


def options(port: int, transport: str = "UDP") -> tuple[bytes, str]:
    call_id = f"alive-{secrets.token_hex(6)}"
    msg = (f"OPTIONS sip:probe@127.0.0.1 SIP/2.0\r\n"
           f"Via: SIP/2.0/{transport} 127.0.0.1:{port};branch=z9hG4bK{secrets.token_hex(6)};rport\r\n"
           f"Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag={secrets.token_hex(4)}\r\n"
           f"To: <sip:probe@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\n"
           f"Accept: application/sdp\r\nContent-Length: 0\r\n\r\n")
    return msg.encode(), call_id


class Udp:
    def __init__(self, daemon_port: int) -> None:
        self.dest = ("127.0.0.1", daemon_port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]

    def send(self, data: bytes) -> None:
        self.sock.sendto(data, self.dest)

    def final(self, timeout: float, call_id: str | None = None) -> Reply | None:
        """The first final response (1xx skipped) within ``timeout``, else None."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data, _ = self.sock.recvfrom(70000)
            except TimeoutError:
                return None
            r = parse_reply(data)
            if r.status >= 200 and (call_id is None or call_id in r.get("call-id")):
                return r
        return None

    def anything(self, timeout: float) -> bytes | None:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recvfrom(70000)[0]
        except TimeoutError:
            return None

    def close(self) -> None:
        self.sock.close()


class Tcp:
    def __init__(self, daemon_port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.sock.settimeout(5)
        self.sock.connect(("127.0.0.1", daemon_port))
        self.buf = bytearray()
        self.eof = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self, timeout: float) -> list[Reply]:
        """Responses arriving within ``timeout``; returns as soon as some arrived, or at
        EOF."""
        out: list[Reply] = []
        deadline = time.monotonic() + timeout
        while not self.eof and (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                self.eof = True
                break
            if not chunk:
                self.eof = True
                break
            self.buf += chunk
            out += [parse_reply(m) for m in split_stream(self.buf)]
            if out:
                break
        return out

    def finals(self, count: int, timeout: float) -> list[Reply]:
        got: list[Reply] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and not self.eof and time.monotonic() < deadline:
            got += [r for r in self.read(min(0.2, deadline - time.monotonic()))
                    if r.status >= 200]
        return got

    def close(self) -> None:
        self.sock.close()


# ----------------------------------------------------------------------------- verdicts
# The status the daemon must send for each message (None: nothing at all). The comment
# gives the RFC 4475 section and why this node answers that way.
EXPECTED: dict[str, int | None] = {
    "wsinv": 481,       # §3.1.1.1 parses; To has a tag and no dialog matches (§12.2.2)
    "intmeth": 501,     # §3.1.1.2 unknown method
    "esc01": 407,       # §3.1.1.3 valid INVITE from a non-gateway: challenged
    "escnull": 401,     # §3.1.1.4 valid REGISTER: challenged
    "esc02": 501,       # §3.1.1.5 method RE%47IST%45R is not REGISTER
    "lwsdisp": 200,     # §3.1.1.6
    "longreq": 407,     # §3.1.1.7
    "dblreq": 401,      # §3.1.1.8 the REGISTER only (UDP)
    "semiuri": 200,     # §3.1.1.9
    "transports": 200,  # §3.1.1.10
    "mpart01": 405,     # §3.1.1.11 parses; MESSAGE is known but not implemented here
    "unreason": None,   # §3.1.1.12 a response: no transaction, nothing sent
    "noreason": None,   # §3.1.1.13 idem
    "badinv01": 400,    # §3.1.2.1
    "clerr": 400,       # §3.1.2.2 (UDP)
    "ncl": 400,         # §3.1.2.3
    "scalar02": 400,    # §3.1.2.4
    "scalarlg": None,   # §3.1.2.5 bad response: dropped
    "quotbal": 400,     # §3.1.2.6
    "ltgtruri": 400,    # §3.1.2.7
    "lwsruri": 400,     # §3.1.2.8
    "lwsstart": 407,    # §3.1.2.9 tolerated (RFC allows), then challenged
    "trws": 200,        # §3.1.2.10 tolerated
    "escruri": 400,     # §3.1.2.11
    "baddate": 407,     # §3.1.2.12 Date ignored
    "regbadct": 400,    # §3.1.2.13
    "badaspec": 200,    # §3.1.2.14 tolerated
    "baddn": 200,       # §3.1.2.15 tolerated
    "badvers": 505,     # §3.1.2.16
    "mismatch01": 400,  # §3.1.2.17
    "mismatch02": 400,  # §3.1.2.18
    "bigcode": None,    # §3.1.2.19 bad response: dropped
    "badbranch": 200,   # §3.2.1 processed (RFC 2543 matching)
    "insuf": 400,       # §3.3.1
    "unkscm": 416,      # §3.3.2
    "novelsc": 416,     # §3.3.3
    "unksm2": 401,      # §3.3.4 accepted, then challenged
    "bext01": 420,      # §3.3.5 + Unsupported
    "invut": 415,       # §3.3.6 + Accept
    "regaut01": 401,    # §3.3.7 unknown scheme: challenge
    "multi01": 400,     # §3.3.8
    "mcl01": 400,       # §3.3.9
    "bcast": None,      # §3.3.10 dropped
    "zeromf": 200,      # §3.3.11 a UAS answers normally
    "cparam01": 401,    # §3.3.12
    "cparam02": 401,    # §3.3.13
    "regescrt": 401,    # §3.3.14
    "sdp01": 406,       # §3.3.15
    "inv2543": 407,     # §3.4.1 accepted (RFC 2543 syntax), then challenged
}

# TCP outcomes that differ from UDP (see the module docstring): a list of statuses answered
# on the connection, then "close" (the daemon closes it) or "wait" (no answer, stays open).
TCP_EXPECTED: dict[str, tuple[list[int], str]] = {
    "clerr": ([], "wait"),
    "ncl": ([], "close"),
    "mcl01": ([], "close"),
    "inv2543": ([], "close"),
    "dblreq": ([401, 407], "close"),
}

NO_ANSWER_WAIT_S = 1.0
ANSWER_WAIT_S = 5.0


def check_details(name: str, r: Reply) -> None:
    """The header each error status must carry, and a reason phrase for 400s."""
    if r.status == 400:
        assert r.reason.strip() not in ("", "Bad Request"), f"{name}: 400 without a reason"
    elif r.status == 401:
        assert any(v.startswith("Digest ") for v in r.get("www-authenticate")), r.raw
        assert r.get("to") and ";tag=" in r.get("to")[0]
    elif r.status == 407:
        assert any(v.startswith("Digest ") for v in r.get("proxy-authenticate")), r.raw
    elif r.status == 405:
        assert "INVITE" in ",".join(r.get("allow")), r.raw
    elif r.status == 415:
        assert "application/sdp" in ",".join(r.get("accept")), r.raw
    elif r.status == 420:
        unsupported = ",".join(r.get("unsupported"))
        assert "nothingSupportsThis" in unsupported
        assert "nothingSupportsThisEither" in unsupported
        # §3.3.5: Proxy-Require is for proxies; a UAS does not list its tags.
        assert "noProxiesSupportThis" not in unsupported
    elif r.status == 406:
        assert "application/sdp" in ",".join(r.get("accept")), r.raw
    elif r.status == 200:
        assert "INVITE" in ",".join(r.get("allow")), r.raw


def _run_daemon(tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[GuardedDaemon, int]]:
    workdir = tmp_path_factory.mktemp("rfc4475")
    d, port = start_node(workdir, node_config)
    try:
        yield d, port
    finally:
        d.stop()
    assert "NETGUARD" not in d.drain(), d.drain()[-3000:]


# One daemon per transport: the same torture request sent over UDP and then over TCP while
# the UDP transaction still lives would rightly be a merged request (§8.2.2.2 → 482).
@pytest.fixture(scope="module")
def udp_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GuardedDaemon, int]]:
    yield from _run_daemon(tmp_path_factory)


@pytest.fixture(scope="module")
def tcp_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GuardedDaemon, int]]:
    yield from _run_daemon(tmp_path_factory)


def assert_alive_udp(d: GuardedDaemon, port: int) -> None:
    c = Udp(port)
    try:
        msg, call_id = options(c.port)
        c.send(msg)
        r = c.final(ANSWER_WAIT_S, call_id)
    finally:
        c.close()
    assert d.alive(), d.drain()[-3000:]
    assert r is not None and r.status == 200, f"daemon no longer answers OPTIONS: {r}"


def assert_clean(d: GuardedDaemon) -> None:
    log = d.drain()
    assert "NETGUARD" not in log, log[-3000:]
    assert "Traceback" not in log, log[-5000:]


def test_corpus_is_complete() -> None:
    assert len(FILES) == 49
    assert set(FILES) == set(EXPECTED)


def test_rewrite_is_minimal() -> None:
    """Only the top Via's sent-by changes; the other Vias and the rest stay."""
    for name in FILES:
        data = load(name)
        if is_response(data):
            continue
        out = rewrite_top_via(data, 40000)
        assert out.count(b"127.0.0.1:40000") >= 1
        i = out.find(b"127.0.0.1:40000")
        # everything before the rewritten sent-by is unchanged, so is everything after it
        assert out[:i] == data[:i], name
        tail = out[i + len(b"127.0.0.1:40000"):]
        assert data.endswith(tail), name
    # the subject of badbranch / transports / badvers survives
    assert b"branch=z9hG4bK\r\n" in rewrite_top_via(load("badbranch"), 1)
    assert b"SIP/2.0/SCTP t2.example.com" in rewrite_top_via(load("transports"), 1)
    assert b"SIP/7.0/UDP 127.0.0.1:1;" in rewrite_top_via(load("badvers"), 1)
    assert b"SIP/2.0/UDP 127.0.0.1:1;;,;,," in rewrite_top_via(load("badinv01"), 1)
    assert b"/UDP\r\n    127.0.0.1:1;branch=390skdjuw" in rewrite_top_via(load("wsinv"), 1)


@pytest.mark.parametrize("name", FILES)
def test_over_udp(udp_daemon: tuple[GuardedDaemon, int], name: str) -> None:
    d, port = udp_daemon
    c = Udp(port)
    try:
        data = load(name)
        if not is_response(data):
            data = rewrite_top_via(data, c.port)
        c.send(data)
        expected = EXPECTED[name]
        if expected is None:
            got = c.anything(NO_ANSWER_WAIT_S)
            assert got is None, f"{name}: expected silence, got {got[:200]!r}"
        else:
            r = c.final(ANSWER_WAIT_S)
            assert r is not None, f"{name}: no response\n{d.drain()[-3000:]}"
            assert r.status == expected, f"{name}: {r.status} {r.reason}\n{r.raw[:600]!r}"
            check_details(name, r)
            if name == "dblreq":
                # §3.1.1.8: the INVITE after the REGISTER in the datagram is ignored
                assert c.final(NO_ANSWER_WAIT_S) is None
    finally:
        c.close()
    assert_alive_udp(d, port)
    assert_clean(d)


@pytest.mark.parametrize("name", FILES)
def test_over_tcp(tcp_daemon: tuple[GuardedDaemon, int], name: str) -> None:
    d, port = tcp_daemon
    c = Tcp(port)
    reuse = False
    try:
        data = load(name)
        if not is_response(data):
            data = rewrite_top_via(data, c.port)
        c.send(data)
        expected = EXPECTED[name]
        statuses, after = TCP_EXPECTED.get(
            name, ([] if expected is None else [expected], "open"))
        got = c.finals(len(statuses), ANSWER_WAIT_S) if statuses else []
        assert [r.status for r in got] == statuses, (
            f"{name}: {[(r.status, r.reason) for r in got]}\n{d.drain()[-2000:]}")
        for r in got:
            check_details(name, r)
        if after == "close":
            extra = c.read(ANSWER_WAIT_S)
            assert c.eof, f"{name}: the daemon should close an unframeable stream"
            assert not [r for r in extra if r.status >= 200], extra
        else:
            extra = c.read(NO_ANSWER_WAIT_S)
            assert not [r for r in extra if r.status >= 200], (
                f"{name}: unexpected {[(r.status, r.reason) for r in extra]}")
            assert not c.eof, f"{name}: the daemon closed the connection"
            reuse = after == "open"
        if reuse:
            # The same connection still carries requests after the answer.
            msg, call_id = options(c.port, "TCP")
            c.send(msg)
            (r,) = c.finals(1, ANSWER_WAIT_S)
            assert r.status == 200 and call_id in r.get("call-id")[0]
    finally:
        c.close()
    assert_alive_udp(d, port)
    assert_clean(d)


def test_network_guard_catches_a_response_to_a_foreign_address(tmp_path: Path) -> None:
    """Control for the guard the tests above rely on. ``lwsdisp`` with ``maddr=192.0.2.99``
    added to its top Via: §18.2.2 sends the response to the maddr — the guard must refuse
    that send and report it. (A Via whose sent-by is a host name is NOT such a case: the
    daemon adds received=<source> and answers the source address at the sent-by port.)"""
    d, port = start_node(tmp_path, node_config)
    try:
        c = Udp(port)
        try:
            sent_by = f"127.0.0.1:{c.port};".encode()
            data = rewrite_top_via(load("lwsdisp"), c.port).replace(
                sent_by, sent_by + b"maddr=192.0.2.99;", 1)
            c.send(data)
            assert c.anything(NO_ANSWER_WAIT_S) is None  # the 200 was not sent to us
        finally:
            c.close()
        deadline = time.monotonic() + 5
        while "NETGUARD" not in d.drain() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert f"NETGUARD blocked send to udp:192.0.2.99:{c.port}" in d.drain(), d.drain()
    finally:
        d.stop()


# Valid INVITEs again, now from sockets configured as trusted gateways, so they pass the
# 407 challenge and reach the B2BUA and the router: no [[routes]] match these numbers.
TRUSTED_INVITES: dict[str, tuple[int, str]] = {
    "esc01": (404, "No route"),      # called number "sips:user@example.com" (unescaped)
    "longreq": (404, "No route"),
    "lwsstart": (404, "No route"),
    "baddate": (404, "No route"),
    # §3.4.1 asks RFC 3261 elements "that want to maintain backwards compatibility" to
    # accept RFC 2543 syntax; this node requires Contact in a dialog-creating INVITE
    # (RFC 3261 §8.1.1.8), so a gateway sending 2543-style INVITEs gets a clear 400.
    "inv2543": (400, "Missing Contact"),
}


@pytest.fixture(scope="module")
def trusted(tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[GuardedDaemon, dict[str, Udp]]]:
    socks = {name: Udp(0) for name in TRUSTED_INVITES}
    gateways = "".join(
        f'[[gateways]]\nname = "{name}"\naddress = "udp:127.0.0.1:{s.port}"\n'
        f"ping_interval_s = 0\n\n" for name, s in socks.items())
    d, port = start_node(tmp_path_factory.mktemp("trusted"),
                         lambda p: node_config(p, gateways=gateways))
    for s in socks.values():
        s.dest = ("127.0.0.1", port)
    try:
        yield d, socks
    finally:
        for s in socks.values():
            s.close()
        d.stop()
    assert "NETGUARD" not in d.drain() and "Traceback" not in d.drain(), d.drain()[-3000:]


@pytest.mark.parametrize("name", sorted(TRUSTED_INVITES))
def test_valid_invite_from_trusted_gateway(
        trusted: tuple[GuardedDaemon, dict[str, Udp]], name: str) -> None:
    d, socks = trusted
    c = socks[name]
    data = rewrite_top_via(load(name), c.port)
    call_id = re.search(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)", data)
    assert call_id is not None
    c.send(data)
    r = c.final(ANSWER_WAIT_S, call_id.group(1).decode())
    status, reason = TRUSTED_INVITES[name]
    assert r is not None, f"{name}: no response\n{d.drain()[-3000:]}"
    assert (r.status, reason in r.reason) == (status, True), (r.status, r.reason)
    assert r.get("to") and ";tag=" in r.get("to")[0]
    assert d.alive()
