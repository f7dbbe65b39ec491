"""One signalling node: transports, the SIP stack, registrar, router, gateway health and
registration, the user agent and the B2BUA, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog

from switch.aio.stack import SipStack
from switch.aio.transports import TransportManager, server_tls_context
from switch.b2bua import B2bua
from switch.config import Address, GatewayConfig, NodeConfig, RouteConfig, SipConfig, UserConfig
from switch.metrics import SwitchMetrics
from switch.registrar import Registrar
from switch.routing import Router
from switch.sip.addressing import Peer
from switch.sip.digest import Algorithm, DigestClient
from switch.sip.headers import Headers
from switch.sip.message import Request, Response
from switch.sip.timers import TimerSettings
from switch.sip.uri import SipUri
from switch.trace import CallTraces
from switch.trunks import GatewayHealth
from switch.ua import UserAgent, send_options

log = structlog.get_logger("voicecall.node")

_ALGORITHMS = {"MD5": Algorithm.MD5, "SHA-256": Algorithm.SHA_256}


@dataclass
class SwitchSettings:
    node: NodeConfig
    sip: SipConfig
    gateways: Sequence[GatewayConfig] = ()
    routes: Sequence[RouteConfig] = ()
    users: Sequence[UserConfig] = ()


@dataclass
class SwitchNode:
    settings: SwitchSettings
    metrics: SwitchMetrics = field(default_factory=SwitchMetrics)
    traces: CallTraces = field(init=False)
    stack: SipStack = field(init=False)
    transports: TransportManager = field(init=False)
    ua: UserAgent = field(init=False)
    b2bua: B2bua = field(init=False)
    registrar: Registrar = field(init=False)
    health: dict[str, GatewayHealth] = field(default_factory=dict)
    listening: list[Address] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        s = self.settings
        sip = s.sip
        self.traces = CallTraces(max_calls=sip.trace_calls)
        self.stack = SipStack(advertise=sip.advertise, user_agent=sip.user_agent,
                              settings=TimerSettings.from_ms(sip.t1_ms, sip.t2_ms, sip.t4_ms),
                              traces=self.traces, max_message_bytes=sip.max_message_bytes,
                              metrics=self.metrics)
        tls = server_tls_context(sip.tls_cert, sip.tls_key) if sip.tls_cert else None
        self.transports = TransportManager(self.stack.on_bytes, self.stack.on_transport_error,
                                           max_message_bytes=sip.max_message_bytes,
                                           tls_context=tls,
                                           message_timeout_s=sip.stream_message_timeout_s)
        # The digest key is derived from the node name + a per-start secret: nonces from a
        # previous run are "stale" (a fresh challenge), never accepted.
        key = hashlib.sha256(s.node.name.encode() + secrets.token_bytes(32)).digest()
        algorithms = tuple(_ALGORITHMS[a] for a in sip.digest_algorithms)
        self.registrar = Registrar.from_config(list(s.users), sip, key=key, algorithms=algorithms)
        router = Router(s.routes, s.users)
        self.health = {g.name: GatewayHealth(g.name) for g in s.gateways}
        self.metrics.declare_gateways(self.health)
        self.ua = UserAgent(self.stack, sip, registrar=self.registrar, router=router,
                            gateways=s.gateways, health=self.health, metrics=self.metrics)
        sources = self.metrics.sources
        sources.dialogs = self.ua.dialog_counts
        sources.registered = lambda: self.registrar.live_count(self.stack.loop.time())
        sources.gateways = lambda: {name: h.is_up for name, h in self.health.items()}
        sources.oversize = lambda: self.transports.dropped_oversize
        self.stack.attach(self.transports, self.ua)
        self.b2bua = B2bua(self.ua, metrics=self.metrics)
        for a in sip.listen_addresses:
            self.listening.append(await self.transports.listen(a))
        for g in s.gateways:
            if g.ping_interval_s > 0:
                self._tasks.append(asyncio.create_task(self._probe_loop(g)))
            if g.register_:
                self._tasks.append(asyncio.create_task(self._register_loop(g)))
        self._tasks.append(asyncio.create_task(self._sweep_loop()))

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.stack.close()

    # ---------------------------------------------------------------- background
    async def _probe_loop(self, g: GatewayConfig) -> None:
        timeout = 64 * self.stack.settings.t1
        while True:
            status = await send_options(self.stack, self.ua, g, timeout)
            h = self.health[g.name]
            if h.probe_result(status, self.stack.loop.time()):
                log.warning("gateway state changed", gateway=g.name, state=h.state.value,
                            status=status)
            await asyncio.sleep(g.ping_interval_s)

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(10)
            for b in self.registrar.expire(self.stack.loop.time()):
                log.info("registration expired", user=b.username, contact=b.contact)

    async def _register_loop(self, g: GatewayConfig) -> None:
        """Outbound registration to a gateway (RFC 3261 §10.2), refreshed before expiry,
        answering 401/407 with the gateway credentials; retried every 30 s on failure."""
        a = g.parsed_address
        peer = Peer(a.transport.value, a.host, a.port)
        domain = g.domain or a.host
        call_id = f"{secrets.token_hex(10)}@{self.settings.sip.advertise}"
        tag = secrets.token_hex(6)
        cseq = 0
        client = DigestClient(g.username, g.password)
        while True:
            authorization: tuple[tuple[str, str], ...] = ()
            expires = g.register_expires_s
            ok = False
            for _ in range(3):
                cseq += 1
                resp = await self._send_register(g, peer, domain, call_id, tag, cseq,
                                                 authorization, expires)
                if resp is None:
                    break
                if resp.status in (401, 407) and g.username:
                    hdr = "Proxy-Authenticate" if resp.status == 407 else "WWW-Authenticate"
                    value = client.respond(resp.headers.get_all(hdr), "REGISTER",
                                           f"sip:{domain}")
                    if value is None:
                        break
                    name = "Proxy-Authorization" if resp.status == 407 else "Authorization"
                    authorization = ((name, value),)
                    continue
                if 200 <= resp.status < 300:
                    ok = True
                    with contextlib.suppress(ValueError, TypeError):
                        expires = int(resp.headers.get("Expires") or expires)
                log.info("gateway registration", gateway=g.name, status=resp.status)
                break
            await asyncio.sleep(max(30.0, expires * 0.8) if ok else 30.0)

    async def _send_register(self, g: GatewayConfig, peer: Peer, domain: str, call_id: str,
                             tag: str, cseq: int, auth: tuple[tuple[str, str], ...],
                             expires: int) -> Response | None:
        user = g.username or "voicecall"
        contact = self.ua.local_endpoint(peer.transport, user=user).contact
        req = Request("REGISTER", SipUri("sip", host=domain), Headers([
            ("Via", "SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK" + secrets.token_hex(8)),
            ("From", f"<sip:{user}@{domain}>;tag={tag}"),
            ("To", f"<sip:{user}@{domain}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<{contact}>"),
            ("Expires", str(expires)),
            *auth,
            ("Content-Length", "0"),
        ]))
        fut: asyncio.Future[Response | None] = self.stack.loop.create_future()

        def on_response(resp: Response | None) -> None:
            if not fut.done() and (resp is None or resp.status >= 200):
                fut.set_result(resp)

        self.stack.send_request(req, peer, on_response)
        try:
            return await asyncio.wait_for(fut, 64 * self.stack.settings.t1 + 1)
        except TimeoutError:
            return None
