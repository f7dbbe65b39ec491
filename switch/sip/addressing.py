"""Where SIP messages go: the transport-level peer of a message, the server's Via rewrite
(RFC 3261 §18.2.1, RFC 3581 ``rport``), where responses are sent (§18.2.2) and where
requests are sent (§8.1.2 / RFC 3263 without DNS).

DNS NAPTR/SRV (RFC 3263) is deliberately not implemented: :func:`request_destination`
returns a :class:`Peer` whose ``host`` may be a host name, and the asyncio adapter resolves
it with ``getaddrinfo`` (A/AAAA only). Sans-I/O: nothing here touches the network.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from switch.sip.message import Request
from switch.sip.timers import is_reliable
from switch.sip.uri import SipUri, Via

DEFAULT_PORT = 5060
DEFAULT_TLS_PORT = 5061
SUPPORTED_TRANSPORTS = ("udp", "tcp", "tls")


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of one hop. ``connection_id`` names the stream connection a message
    arrived on (TCP/TLS) so responses go back over it (§18.2.2); None for UDP and for
    destinations the adapter must connect to."""

    transport: str  # "udp" | "tcp" | "tls" (lower case)
    host: str  # IP literal without brackets, or a host name the adapter resolves
    port: int
    connection_id: int | None = None

    @property
    def reliable(self) -> bool:
        return is_reliable(self.transport)

    def same_endpoint(self, other: Peer) -> bool:
        """Same transport/host/port; connection ids are compared only when both are known."""
        if (self.transport, _bare(self.host).lower(), self.port) != (
            other.transport,
            _bare(other.host).lower(),
            other.port,
        ):
            return False
        if self.connection_id is not None and other.connection_id is not None:
            return self.connection_id == other.connection_id
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        conn = f"#{self.connection_id}" if self.connection_id is not None else ""
        return f"{self.transport}:{host}:{self.port}{conn}"


def _bare(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _same_host(a: str, b: str) -> bool:
    a, b = _bare(a), _bare(b)
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower() == b.lower()


def is_numeric_host(host: str) -> bool:
    try:
        ipaddress.ip_address(_bare(host))
    except ValueError:
        return False
    return True


def _get_param(params: tuple[tuple[str, str | None], ...], name: str) -> tuple[bool, str | None]:
    for key, value in params:
        if key.lower() == name:
            return True, value
    return False, None


def _set_param(
    params: tuple[tuple[str, str | None], ...], name: str, value: str | None
) -> tuple[tuple[str, str | None], ...]:
    out: list[tuple[str, str | None]] = []
    done = False
    for key, old in params:
        if key.lower() == name:
            if not done:
                out.append((key, value))
                done = True
            continue
        out.append((key, old))
    if not done:
        out.append((name, value))
    return tuple(out)


def _default_port(transport: str) -> int:
    return DEFAULT_TLS_PORT if transport.lower() == "tls" else DEFAULT_PORT


def stamp_via(via: Via, source: Peer) -> Via:
    """The server's rewrite of the top Via of a received request (§18.2.1, RFC 3581 §4).

    ``received`` is added when the sent-by host differs from the packet's source address,
    and always when the client asked for ``rport`` (RFC 3581: "even if it is identical");
    an empty ``rport`` is filled with the source port. Idempotent.
    """
    params = tuple(via.params)
    has_rport, rport_value = _get_param(params, "rport")
    if has_rport or not _same_host(via.host, source.host):
        params = _set_param(params, "received", _bare(source.host))
    if has_rport and not rport_value:
        params = _set_param(params, "rport", str(source.port))
    if params == tuple(via.params):
        return via
    return replace(via, params=params)


def stamp_via_received(req: Request, source: Peer) -> Request:
    """``req`` with its top Via rewritten by :func:`stamp_via` (other Vias untouched)."""
    vias = req.vias
    if not vias:
        return req
    top = stamp_via(vias[0], source)
    if top is vias[0]:
        return req
    headers = req.headers.remove("Via")
    for via in reversed((top, *vias[1:])):
        headers = headers.prepend("Via", str(via))
    return replace(req, headers=headers)


def response_destination(top_via: Via, source: Peer) -> Peer:
    """Where a response to a request with this top Via goes (§18.2.2, RFC 3581 §4).

    Reliable transports: back over the connection the request came in on. Otherwise the
    ``maddr`` if present, else the ``received`` address (or the source address when
    ``rport`` was requested) at the ``rport`` port if present, else at the sent-by port
    (default 5060; 5061 for TLS).
    """
    transport = (top_via.transport or source.transport).lower()
    if source.reliable or is_reliable(transport):
        # §18.2.2: "the response MUST be sent using the existing connection to the source of
        # the original request"; the adapter reconnects to received/sent-by if it is gone.
        return source
    params = tuple(top_via.params)
    sent_by_port = top_via.port if top_via.port else _default_port(transport)
    has_maddr, maddr = _get_param(params, "maddr")
    if has_maddr and maddr:
        return Peer(source.transport, _bare(maddr), sent_by_port)
    has_rport, rport = _get_param(params, "rport")
    has_received, received = _get_param(params, "received")
    host = _bare(top_via.host)
    if has_received and received:
        host = _bare(received)
    elif has_rport:
        host = _bare(source.host)
    port = sent_by_port
    if has_rport:
        port = int(rport) if rport and rport.isdigit() else source.port
    return Peer(source.transport, host, port)


def request_destination(uri: SipUri) -> Peer:
    """Next hop of a request sent to ``uri`` (the Request-URI, or the first Route URI when
    a route set is present): ``maddr`` over the host, ``transport`` param (``sips:`` means
    TLS), default port 5060 / 5061. Host names are returned as they are (no DNS here)."""
    scheme = uri.scheme.lower()
    if scheme not in ("sip", "sips") or not uri.host:
        raise ValueError(f"cannot route to {uri} (needs a sip:/sips: URI with a host)")
    params = tuple(uri.params)
    has_t, transport = _get_param(params, "transport")
    t = (transport or "").lower() if has_t else ""
    if scheme == "sips":
        t = "tls"
    elif t not in SUPPORTED_TRANSPORTS:
        if t:
            raise ValueError(f"unsupported transport {transport!r} in {uri}")
        t = "udp"
    has_maddr, maddr = _get_param(params, "maddr")
    host = _bare(maddr) if has_maddr and maddr else _bare(uri.host)
    port = uri.port if uri.port else _default_port(t)
    return Peer(t, host, port)


def next_hop_uri(req: Request) -> SipUri:
    """§8.1.2 / §16.12: the first Route URI when a route set is present, else the
    Request-URI. (Strict routers — a first route without ``lr`` — get the request sent to
    them too; rewriting the Request-URI for them is the dialog layer's job, §12.2.1.1.)"""
    routes = req.route
    if routes:
        return routes[0].uri
    return req.uri
