"""UDP, TCP and TLS transports for SIP (RFC 3261 §18) as thin asyncio adapters.

They deliver whole messages as bytes (a UDP datagram, or one message framed by
``StreamFramer`` on a stream) together with the ``Peer`` they came from, and send bytes to a
``Peer``. Responses go back over the connection a request came in on (``connection_id``);
requests to a stream peer reuse a connection to that address or open one.

Limits: ``max_message_bytes`` per message (larger datagrams are dropped, a larger stream
message closes the connection), at most ``max_connections`` stream connections, inbound
stream connections idle for ``idle_timeout_s`` are closed, and so is a connection whose
current message (or, for an inbound one, whose first message) stays incomplete for
``message_timeout_s`` — otherwise clients that connect and stall (slowloris) hold
``max_connections`` for an hour and lock every new stream client out (Kamailio's
``tcp_msg_read_timeout`` does the same, 20 s by default).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog

from switch.config import Address, Transport
from switch.sip.addressing import Peer
from switch.sip.parser import SipFramingError, StreamFramer

log = structlog.get_logger("voicecall.transport")

MessageHandler = Callable[[bytes, Peer], None]
ErrorHandler = Callable[[Peer, str], None]

_KEEPALIVE_PONG = b"\r\n"


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: TransportManager, local: Address) -> None:
        self.owner = owner
        self.local = local
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if len(data) > self.owner.max_message_bytes:
            self.owner.dropped_oversize += 1
            return
        if not data.strip(b"\r\n\x00 "):
            return  # keep-alive (RFC 5626 §3.5.1 CRLF) or padding
        self.owner.on_message(data, Peer("udp", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP errors are not tied to a destination here; transactions time out instead.
        log.debug("udp error", error=str(exc))


@dataclass(eq=False)
class _StreamConn(asyncio.Protocol):
    owner: TransportManager
    transport_kind: str
    conn_id: int
    outbound: bool
    remote: tuple[str, int] | None = None
    transport: asyncio.Transport | None = None
    framer: StreamFramer = field(init=False)
    last_activity: float = 0.0
    partial_since: float | None = None  # an incomplete message waits since then
    pending: list[bytes] = field(default_factory=list)
    connected: asyncio.Future[None] | None = None

    def __post_init__(self) -> None:
        self.framer = StreamFramer(max_size=self.owner.max_message_bytes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if peer is not None:
            self.remote = (str(peer[0]), int(peer[1]))
        self.owner._register(self)
        self.last_activity = self.owner.loop.time()
        if not self.outbound:
            self.partial_since = self.last_activity  # the first message must come in time
        for data in self.pending:
            self.transport.write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        try:
            messages = self.framer.feed(data)
        except SipFramingError as e:
            log.info("closing stream after framing error", conn=self.conn_id, reason=str(e))
            self.owner.dropped_oversize += 1
            # Whole messages ahead of the bad bytes are still handled (their answers are
            # written before the close, which flushes them).
            self._deliver(e.framed)
            if self.transport is not None:
                self.transport.close()
            return
        if self.framer.buffered:
            if self.partial_since is None or messages:
                self.partial_since = self.last_activity
        else:
            self.partial_since = None
        self._deliver(messages)

    def _deliver(self, messages: Sequence[bytes]) -> None:
        peer = self.peer
        for m in messages:
            if m == b"":  # double-CRLF ping → single-CRLF pong (RFC 5626 §3.5.1)
                if self.transport is not None:
                    self.transport.write(_KEEPALIVE_PONG)
                continue
            self.owner.on_message(m, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._unregister(self)

    @property
    def peer(self) -> Peer:
        host, port = self.remote if self.remote is not None else ("0.0.0.0", 0)
        return Peer(self.transport_kind, host, port, self.conn_id)

    def write(self, data: bytes) -> None:
        self.last_activity = self.owner.loop.time()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)


class TransportManager:
    """All listening sockets and stream connections of one node."""

    def __init__(
        self,
        on_message: MessageHandler,
        on_error: ErrorHandler,
        *,
        max_message_bytes: int = 65535,
        tls_context: ssl.SSLContext | None = None,
        max_connections: int = 10_000,
        idle_timeout_s: float = 3600.0,
        message_timeout_s: float = 20.0,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.on_message = on_message
        self.on_error = on_error
        self.max_message_bytes = max_message_bytes
        self.tls_server_context = tls_context
        self.tls_client_context = _client_tls_context()
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.message_timeout_s = message_timeout_s
        self.dropped_oversize = 0
        self._udp: dict[int, _UdpProtocol] = {}          # by address family
        self._servers: list[asyncio.AbstractServer] = []
        self._conns: dict[int, _StreamConn] = {}
        self._by_remote: dict[tuple[str, str, int], _StreamConn] = {}
        self._ids = itertools.count(1)
        self.listening: list[Address] = []
        self._reaper: asyncio.TimerHandle | None = None

    async def listen(self, address: Address) -> Address:
        """Bind one listener; returns the bound address (port 0 → the real port)."""
        if address.transport is Transport.UDP:
            transport, proto = await self.loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self, address), local_addr=(address.host, address.port),
                reuse_port=False,
            )
            sock = transport.get_extra_info("socket")
            # Bigger buffers absorb bursts of retransmissions at high call rates.
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
                except OSError:
                    pass
            port = sock.getsockname()[1]
            self._udp[sock.family] = proto
        else:
            ctx = self.tls_server_context if address.transport is Transport.TLS else None
            if address.transport is Transport.TLS and ctx is None:
                raise ValueError("tls listener without a TLS context (sip.tls_cert/tls_key)")
            kind = address.transport.value
            server = await self.loop.create_server(
                lambda: _StreamConn(self, kind, next(self._ids), outbound=False),
                host=address.host, port=address.port, ssl=ctx, reuse_address=True,
            )
            self._servers.append(server)
            port = server.sockets[0].getsockname()[1]
        bound = Address(address.transport, address.host, port)
        self.listening.append(bound)
        if self._reaper is None:
            self._schedule_reaper()
        return bound

    def local_port(self, transport: str) -> int:
        for a in self.listening:
            if a.transport.value == transport:
                return a.port
        for a in self.listening:
            if a.transport is Transport.UDP:
                return a.port
        return 5060

    def has_transport(self, transport: str) -> bool:
        return any(a.transport.value == transport for a in self.listening)

    def send(self, data: bytes, peer: Peer) -> None:
        if peer.transport == "udp":
            family = socket.AF_INET6 if ":" in peer.host else socket.AF_INET
            proto = self._udp.get(family)
            if proto is None or proto.transport is None:
                self.on_error(peer, "no udp listener for this address family")
                return
            proto.transport.sendto(data, (peer.host, peer.port))
            return
        conn = None
        if peer.connection_id is not None:
            conn = self._conns.get(peer.connection_id)
        if conn is None:
            conn = self._by_remote.get((peer.transport, peer.host, peer.port))
        if conn is None:
            if peer.connection_id is not None and peer.transport in ("tcp", "tls"):
                # RFC 3261 §18.2.2: the connection is gone; try a new one to the same address.
                pass
            conn = self._connect(peer)
            if conn is None:
                return
        conn.write(data)

    def _connect(self, peer: Peer) -> _StreamConn | None:
        if len(self._conns) >= self.max_connections:
            self.on_error(peer, "too many connections")
            return None
        conn = _StreamConn(self, peer.transport, next(self._ids), outbound=True,
                           remote=(peer.host, peer.port))
        self._by_remote[(peer.transport, peer.host, peer.port)] = conn
        ctx = self.tls_client_context if peer.transport == "tls" else None

        async def connect() -> None:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(lambda: conn, peer.host, peer.port, ssl=ctx),
                    timeout=10,
                )
            except (OSError, TimeoutError, ssl.SSLError) as e:
                self._by_remote.pop((peer.transport, peer.host, peer.port), None)
                conn.pending.clear()
                self.on_error(peer, f"connect failed: {e}")

        task = self.loop.create_task(connect())
        task.add_done_callback(lambda t: None)
        return conn

    def _register(self, conn: _StreamConn) -> None:
        if len(self._conns) >= self.max_connections and conn.transport is not None:
            conn.transport.close()
            return
        self._conns[conn.conn_id] = conn
        if conn.remote is not None:
            self._by_remote.setdefault((conn.transport_kind, *conn.remote), conn)

    def _unregister(self, conn: _StreamConn) -> None:
        self._conns.pop(conn.conn_id, None)
        if conn.remote is not None:
            key = (conn.transport_kind, *conn.remote)
            if self._by_remote.get(key) is conn:
                del self._by_remote[key]

    def _schedule_reaper(self) -> None:
        interval = min(30.0, max(0.5, self.message_timeout_s / 4))
        self._reaper = self.loop.call_later(interval, self._reap)

    def _reap(self) -> None:
        now = self.loop.time()
        for conn in list(self._conns.values()):
            if conn.transport is None:
                continue
            if now - conn.last_activity > self.idle_timeout_s:
                conn.transport.close()
            elif (conn.partial_since is not None
                  and now - conn.partial_since > self.message_timeout_s):
                log.info("closing stream: incomplete message timed out", conn=conn.conn_id,
                         buffered=conn.framer.buffered, remote=str(conn.peer))
                conn.transport.close()
        self._schedule_reaper()

    @property
    def connection_count(self) -> int:
        return len(self._conns)

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for proto in self._udp.values():
            if proto.transport is not None:
                proto.transport.close()
        for conn in list(self._conns.values()):
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            server.close()
            await server.wait_closed()


def _client_tls_context() -> ssl.SSLContext:
    # Lab gateways commonly present self-signed certificates; peers are identified by the
    # configured address, not by certificate. Documented in the README (TLS section).
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx
