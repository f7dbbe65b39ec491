"""The user agent core: dispatches requests from the transaction layer (RFC 3261 §8.2 checks,
OPTIONS, REGISTER, new INVITEs, in-dialog requests), owns every call leg's session and
originates outbound legs with routing, digest answers and gateway failover."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from switch.aio.session import SessionAdapter
from switch.aio.stack import SipStack
from switch.config import GatewayConfig, SipConfig, Transport
from switch.leg import Direction, Leg, LegEvent, LegFailed
from switch.metrics import SwitchMetrics
from switch.registrar import Challenge as RegChallenge
from switch.registrar import ContactSpec, RegisterRequest, Registrar
from switch.registrar import Rejected as RegRejected
from switch.routing import NoRoute, Router, ToGateways, ToUser
from switch.sip import invite_session as inv
from switch.sip import transaction_layer as tl
from switch.sip.addressing import Peer
from switch.sip.dialog import LocalEndpoint
from switch.sip.digest import DigestClient, Verdict
from switch.sip.headers import Headers
from switch.sip.message import Request, Response, make_response
from switch.sip.prack import PrackMode
from switch.sip.session_timer import SessionTimerConfig
from switch.sip.uri import NameAddr, SipParseError, SipUri, parse_uri
from switch.sip.validate import check_request
from switch.trunks import GatewayHealth, call_outcome

log = structlog.get_logger("voicecall.ua")

ALLOW = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE", "INFO", "REGISTER")
SUPPORTED = ("100rel", "timer", "replaces")
EXTENSIONS = frozenset({"100rel", "timer"})
ACCEPT = frozenset({"application/sdp", "application/dtmf-relay", "application/dtmf",
                    "multipart/mixed"})
FAILOVER_CODES = frozenset({408, 500, 502, 503, 504})
DIALOG_GRACE_S = 32.0   # keep a finished dialog this long to absorb retransmissions
_CONFIRMED_STATES = frozenset({inv.SessionState.CONNECTING, inv.SessionState.CONFIRMED,
                               inv.SessionState.TERMINATING})


@dataclass(frozen=True, slots=True)
class CallerIdentity:
    """Who placed an inbound call: a trusted gateway, or an authenticated softphone user."""

    number: str
    display_name: str | None
    gateway: str | None = None
    username: str | None = None


IncomingCallHandler = Callable[[Leg, str, CallerIdentity], None]


@dataclass(slots=True)
class Target:
    """One place an outbound leg may be sent: a gateway or a registered contact."""

    request_uri: SipUri
    peer: Peer | None            # None: resolve from the Request-URI
    gateway: GatewayConfig | None = None
    label: str = ""


def _number_of(uri: SipUri) -> str:
    if uri.scheme == "tel":
        return uri.user or ""
    return (uri.user_unescaped or "") if uri.user else ""


class UserAgent:
    def __init__(
        self,
        stack: SipStack,
        sip: SipConfig,
        *,
        registrar: Registrar,
        router: Router,
        gateways: Sequence[GatewayConfig],
        health: dict[str, GatewayHealth],
        metrics: SwitchMetrics | None = None,
    ) -> None:
        self.stack = stack
        self.metrics = metrics if metrics is not None else stack.metrics
        self.sip = sip
        self.registrar = registrar
        self.router = router
        self.gateways = {g.name: g for g in gateways}
        self.health = health
        self.legs: dict[tuple[str, str], Leg] = {}        # (Call-ID, local tag) → leg
        self.invite_txns: dict[object, Leg] = {}          # INVITE server transaction → leg
        # What each leg put in ``legs``/``invite_txns``, so forgetting it is O(1) and also
        # covers an outbound leg's earlier (failed-over) attempts.
        self._leg_keys: dict[Leg, list[tuple[str, str]]] = {}
        self._leg_txns: dict[Leg, object] = {}
        self.on_incoming_call: IncomingCallHandler | None = None
        self.timer_config = SessionTimerConfig(session_expires=sip.session_expires_s,
                                               min_se=sip.min_se_s)
        # One generator for every session (CSeq/RSeq starts, Retry-After, glare back-off: not
        # secrets; tags come from secrets). A Random() per session cost ~9 us to seed from
        # os.urandom, twice per bridged call.
        self.rng = random.Random()

    # ------------------------------------------------------------------ helpers
    @property
    def now(self) -> float:
        return self.stack.loop.time()

    def dialog_counts(self) -> tuple[int, int]:
        """(early, confirmed) dialogs of the legs still known (read at scrape time). A
        dialog counts as confirmed from the 2xx until it is gone (BYE answered)."""
        early = confirmed = 0
        for leg in self._leg_keys:
            adapter = leg.adapter
            if adapter is None:
                continue
            state = adapter.session.state
            if state is inv.SessionState.EARLY:
                early += 1
            elif state in _CONFIRMED_STATES:
                confirmed += 1
        return early, confirmed

    def local_endpoint(self, transport: str, user: str | None = None) -> LocalEndpoint:
        port = self.stack.transports.local_port(transport) if self.stack.transports else 5060
        params: tuple[tuple[str, str | None], ...] = ()
        if transport != "udp":
            params = (("transport", transport),)
        contact = SipUri("sip", user=user, host=self.sip.advertise, port=port, params=params)
        return LocalEndpoint(contact=contact, via_transport=transport.upper(),
                             user_agent=self.sip.user_agent, allow=ALLOW)

    def session_config(self, transport: str, user: str | None = None, *,
                       auth_retry: bool = False) -> inv.SessionConfig:
        s = self.stack.settings
        return inv.SessionConfig(local=self.local_endpoint(transport, user), t1=s.t1, t2=s.t2,
                                 prack=PrackMode.SUPPORTED, timer=self.timer_config,
                                 retransmit_2xx=True, auth_retry=auth_retry)

    def _register_leg(self, leg: Leg, session: inv.InviteSession) -> None:
        tag = session.local_tag
        call_id = session.call_id
        if tag and call_id:
            self.legs[(call_id, tag)] = leg
            self._leg_keys.setdefault(leg, []).append((call_id, tag))

    def _forget_later(self, leg: Leg, session: inv.InviteSession, adapter: SessionAdapter) -> None:
        def forget() -> None:
            for key in self._leg_keys.pop(leg, ()):
                if self.legs.get(key) is leg:
                    del self.legs[key]
            txn = self._leg_txns.pop(leg, None)
            if txn is not None and self.invite_txns.get(txn) is leg:
                del self.invite_txns[txn]
            adapter.close()
            # The leg is terminated (emit ignores everything now): dropping its listeners
            # and the adapter's sink breaks the leg → listener → BridgedCall → other leg and
            # leg → adapter → sink → leg cycles, so the call is freed by reference counting
            # instead of surviving into the oldest GC generation (whose full passes walk it).
            leg._listeners.clear()
            adapter.sink = _drop_session_event

        self.stack.loop.call_later(DIALOG_GRACE_S, forget)

    def _respond(self, txn: tl.ServerTransactionRef | None, resp: Response) -> None:
        if txn is not None:
            self.stack.send_response(txn, resp)

    # ------------------------------------------------------ TransactionUser API
    def on_request(self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer) -> None:
        try:
            self._on_request(req, txn, source)
        except SipParseError as e:
            if txn is not None and req.method != "ACK":
                self._respond(txn, make_response(req, 400, f"Bad Request ({e})"[:120]))
        except Exception:
            self.metrics.bad_message("handler_error")
            log.exception("request handling failed", call_id=req.headers.get("Call-ID"))
            if txn is not None and req.method != "ACK":
                self._respond(txn, make_response(req, 500, "Server Internal Error"))

    def _on_request(self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer) -> None:
        if req.method == "ACK":
            leg = self._leg_for_in_dialog(req)
            if leg is not None and leg.adapter is not None:
                leg.adapter.run(leg.adapter.session.on_request(req, None, self.now))
            return
        error = check_request(req, methods=frozenset(ALLOW), extensions=EXTENSIONS,
                              accept_types=ACCEPT)
        if error is not None:
            self._respond(txn, error)
            return
        if req.to.tag is not None:
            leg = self._leg_for_in_dialog(req)
            if leg is None or leg.adapter is None:
                self._respond(txn, make_response(req, 481, "Call/Transaction Does Not Exist"))
                return
            if leg.context is not None:
                leg.context.copy().run(self._in_dialog, leg, req, txn)
            else:
                self._in_dialog(leg, req, txn)
            return
        if req.method == "INVITE":
            self._on_invite(req, txn, source)
        elif req.method == "REGISTER":
            self._on_register(req, txn, source)
        elif req.method == "OPTIONS":
            self._respond(txn, self._options_response(req))
        elif req.method in ("BYE", "PRACK", "UPDATE", "INFO"):
            self._respond(txn, make_response(req, 481, "Call/Transaction Does Not Exist"))
        else:
            self._respond(txn, make_response(req, 405, headers=[("Allow", ", ".join(ALLOW))]))

    def _in_dialog(self, leg: Leg, req: Request, txn: tl.ServerTransactionRef | None) -> None:
        if leg.adapter is not None:
            leg.adapter.run(leg.adapter.session.on_request(req, txn, self.now))

    def on_cancel(self, cancel: Request, invite_txn: tl.ServerTransactionRef | None) -> None:
        leg = self.invite_txns.get(invite_txn) if invite_txn is not None else None
        if leg is not None and leg.adapter is not None:
            leg.adapter.run(leg.adapter.session.on_cancel(self.now))

    def on_server_failure(self, txn: tl.ServerTransactionRef, reason: str) -> None:
        log.info("server transaction failed", reason=reason, method=txn.request.method,
                 call_id=txn.request.call_id)

    def on_ack_timeout(self, resp: Response) -> None:
        leg = self.legs.get((resp.call_id, resp.to.tag or ""))
        if leg is not None and leg.adapter is not None:
            leg.adapter.run(leg.adapter.session.on_ack_not_received(self.now))

    def on_stray_response(self, resp: Response, source: Peer) -> None:
        # A retransmitted 2xx after the INVITE transaction is gone: re-ACK through the
        # session if we still know the dialog (§13.2.2.4).
        if resp.status // 100 == 2 and resp.cseq.method == "INVITE":
            leg = self.legs.get((resp.call_id, resp.from_.tag or ""))
            if leg is not None and leg.adapter is not None:
                leg.adapter.run(leg.adapter.session.on_response(resp, self.now))

    def _leg_for_in_dialog(self, req: Request) -> Leg | None:
        return self.legs.get((req.call_id, req.to.tag or ""))

    def _options_response(self, req: Request) -> Response:
        return make_response(req, 200, headers=[
            ("Allow", ", ".join(ALLOW)),
            ("Accept", "application/sdp"),
            ("Accept-Encoding", "identity"),
            ("Accept-Language", "en"),
            ("Supported", ", ".join(SUPPORTED)),
        ])

    # ----------------------------------------------------------------- REGISTER
    def _on_register(self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer) -> None:
        contacts: list[ContactSpec] = []
        for c in req.headers.get_all("Contact"):
            if c.strip() == "*":
                contacts.append(ContactSpec("*"))
                continue
            for na in _parse_contacts(c):
                contacts.append(ContactSpec(
                    str(na.uri), na.param("expires"), na.param("q"),
                    na.param_unquoted("+sip.instance"),
                    int(na.param("reg-id") or 0) or None if na.param("reg-id") else None))
        from switch.config import Address
        reg = RegisterRequest(
            aor_user=_number_of(req.to.uri), contacts=contacts, call_id=req.call_id,
            cseq=req.cseq.seq, source=Address(Transport(source.transport), source.host, source.port),
            expires=req.headers.get("Expires"),
            authorization=tuple(req.headers.get_all("Authorization")), body=req.body)
        result = self.registrar.register(reg, self.now)
        if isinstance(result, RegChallenge):
            self._respond(txn, make_response(req, result.status, result.reason, headers=[
                ("WWW-Authenticate", v) for v in result.www_authenticate]))
        elif isinstance(result, RegRejected):
            hdrs = [("Min-Expires", str(result.min_expires))] if result.min_expires else []
            self._respond(txn, make_response(req, result.status, result.reason, headers=hdrs))
        else:
            hdrs = [("Contact", v) for v in result.contact_values]
            self._respond(txn, make_response(req, 200, headers=hdrs))
            # Remember the connection for stream transports: calls to this user reuse it.
        if self.registrar.user_for(reg.aor_user) is not None:
            log.info("register", aor=reg.aor_user, source=str(source),
                     result=type(result).__name__, call_id=req.call_id)

    # ------------------------------------------------------------------- INVITE
    def _gateway_for_source(self, req: Request, source: Peer) -> GatewayConfig | None:
        """The gateway an INVITE comes from: same host and port as its configured address.
        Over TCP/TLS the source port of a connection is ephemeral, so there the port the
        gateway writes in its top Via (its listening port) counts too — the host must
        still be the packet's source address."""
        for g in self.gateways.values():
            a = g.parsed_address
            if a.host != source.host:
                continue
            if a.port == source.port:
                return g
            if source.reliable and a.transport.value == source.transport:
                with contextlib.suppress(SipParseError, IndexError):
                    if req.top_via.port == a.port:
                        return g
        return None

    def _authenticate_invite(
        self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer
    ) -> CallerIdentity | None:
        gw = self._gateway_for_source(req, source)
        from_uri = req.from_.uri
        if gw is not None:
            return CallerIdentity(_number_of(from_uri), req.from_.display_name, gateway=gw.name)
        digest = self.registrar.digest

        def password_for(user: str) -> str | None:
            u = self.registrar.user_for_auth(user)
            return u.password if u is not None else None

        result = digest.check(req.headers.get_all("Proxy-Authorization"), method=req.method,
                              now=self.now, password_for=password_for, body=req.body)
        if result.ok and result.username is not None:
            user = self.registrar.user_for_auth(result.username)
            if user is not None:
                return CallerIdentity(user.number, req.from_.display_name, username=user.username)
        if result.wants_challenge or result.verdict is Verdict.MISSING:
            hdrs = [("Proxy-Authenticate", v)
                    for v in digest.challenge_headers(self.now, stale=result.stale)]
            self._respond(txn, make_response(req, 407, "Proxy Authentication Required",
                                             to_tag=secrets.token_hex(6), headers=hdrs))
        else:
            self._respond(txn, make_response(req, 403, "Forbidden", to_tag=secrets.token_hex(6)))
        return None

    def _on_invite(self, req: Request, txn: tl.ServerTransactionRef | None, source: Peer) -> None:
        if txn is None:
            return
        identity = self._authenticate_invite(req, txn, source)
        if identity is None:
            return
        if req.max_forwards is not None and req.max_forwards <= 0:
            self._respond(txn, make_response(req, 483, "Too Many Hops"))
            return
        # Contact with a user part (the dialled number): some UAs (SIPp's [next_url]) cannot
        # route in-dialog requests to a host-only Contact.
        contact_user = _number_of(req.uri) or "voicecall"
        session, effects = inv.InviteSession.uas(
            req, txn, self.now, self.session_config(source.transport, user=contact_user),
            rng=self.rng)
        leg = Leg(Direction.INBOUND, req.call_id, label="A", peer_number=identity.number,
                  local_number=_number_of(req.to.uri), invite=req)
        adapter = SessionAdapter(self.stack, session, leg.session_event, peer_override=source
                                 if source.reliable else None)
        leg.adapter = adapter
        self._register_leg(leg, session)
        self.invite_txns[txn] = leg
        self._leg_txns[leg] = txn
        leg.on_event(lambda lg, ev: self._on_leg_terminal(lg, ev))
        adapter.run(effects)
        if leg.terminated:
            return
        called = _number_of(req.uri)
        if self.on_incoming_call is None:
            leg.reject(480, "No call handler")
            return
        self.on_incoming_call(leg, called, identity)

    def _on_leg_terminal(self, leg: Leg, ev: LegEvent) -> None:
        if leg.terminal_event is ev and leg.adapter is not None:
            self._forget_later(leg, leg.adapter.session, leg.adapter)

    # --------------------------------------------------------------- originate
    def targets_for(self, number: str) -> list[Target] | LegFailed:
        decision = self.router.route(number, lambda g: self.health[g].is_up
                                     if g in self.health else True)
        if isinstance(decision, NoRoute):
            return LegFailed(404, "No route to destination")
        if isinstance(decision, ToUser):
            bindings = self.registrar.contacts_for_user(decision.username, self.now)
            if not bindings:
                return LegFailed(480, "Temporarily Unavailable (not registered)")
            out = []
            for b in bindings:
                uri = parse_uri(b.request_uri)
                src = b.source
                out.append(Target(uri, Peer(src.transport.value, src.host, src.port),
                                  label=f"user:{decision.username}"))
            return out
        assert isinstance(decision, ToGateways)
        if not decision.gateways:
            return LegFailed(503, "All gateways are down")
        out = []
        for name in decision.gateways:
            gw = self.gateways[name]
            a = gw.parsed_address
            params: tuple[tuple[str, str | None], ...] = ()
            if a.transport is not Transport.UDP:
                params = (("transport", a.transport.value),)
            host = gw.domain or a.host
            uri = SipUri("sip", user=number, host=host, port=a.port, params=params)
            out.append(Target(uri, Peer(a.transport.value, a.host, a.port), gateway=gw,
                              label=f"gw:{name}"))
        return out

    def originate(
        self,
        number: str,
        from_number: str,
        sdp: bytes | None,
        *,
        display_name: str | None = None,
        label: str = "B",
        headers: Sequence[tuple[str, str]] = (),
    ) -> Leg:
        """Call ``number`` (routed by [[routes]]/[[users]]) presenting ``from_number``.
        Tries the route's gateways in order, moving on after 408/5xx/timeout; answers
        401/407 challenges with the gateway's credentials. Returns at once; progress
        arrives as Leg events."""
        call_id = f"{secrets.token_hex(10)}@{self.sip.advertise}"
        leg = Leg(Direction.OUTBOUND, call_id, label=label, peer_number=number,
                  local_number=from_number)
        ctx = contextvars.copy_context()
        if len(ctx):
            leg.context = ctx
        targets = self.targets_for(number)
        if isinstance(targets, LegFailed):
            self.stack.loop.call_soon(leg.emit, targets)
            return leg
        # Outbound legs are forgotten after the grace time too (they were kept forever).
        leg.on_event(lambda lg, ev: self._on_leg_terminal(lg, ev))
        _Attempts(self, leg, targets, from_number, display_name, sdp, tuple(headers)).start()
        return leg


def _drop_session_event(ev: inv.SessionEvent) -> None:
    """Sink of a forgotten leg's adapter: its leg is terminated and ignores events anyway."""


def _parse_contacts(value: str) -> list[NameAddr]:
    from switch.sip.uri import parse_name_addrs
    return list(parse_name_addrs(value))


class _Attempts:
    """Drives an outbound leg over its targets: failover and digest retries."""

    def __init__(self, ua: UserAgent, leg: Leg, targets: list[Target], from_number: str,
                 display_name: str | None, sdp: bytes | None,
                 headers: tuple[tuple[str, str], ...]) -> None:
        self.ua = ua
        self.leg = leg
        self.targets = targets
        self.index = 0
        self.from_number = from_number
        self.display_name = display_name
        self.sdp = sdp
        self.headers = headers
        self.provisional_seen = False
        self.counted = False           # this attempt's gateway outcome is counted

    def start(self) -> None:
        self._attempt()

    def _count(self, status: int, *, got_response: bool) -> None:
        """The current attempt's outcome, once, if it went to a gateway."""
        gw = self.targets[self.index].gateway
        if gw is None or self.counted:
            return
        self.counted = True
        self.ua.metrics.gateway_call(gw.name, call_outcome(
            status, got_response=got_response, cancelled=self.leg._hangup_requested))

    def _attempt(self) -> None:
        ua, t = self.ua, self.targets[self.index]
        self.counted = False
        transport = t.peer.transport if t.peer is not None else "udp"
        config = ua.session_config(transport, user=self.from_number.lstrip("+") or None,
                                   auth_retry=bool(t.gateway is not None and t.gateway.username))
        session = inv.InviteSession.uac(config, rng=ua.rng)
        adapter = SessionAdapter(ua.stack, session, self._on_session_event, peer_override=t.peer)
        self.leg.adapter = adapter
        frm = NameAddr(self.display_name, SipUri("sip", user=self.from_number,
                                                 host=ua.sip.advertise))
        to = NameAddr(None, dataclasses.replace(t.request_uri, params=()))
        effects = session.invite(request_uri=t.request_uri, from_=frm, to=to, sdp=self.sdp,
                                 now=ua.now, call_id=self.leg.call_id,
                                 extra_headers=self.headers)
        self.leg.call_id = session.call_id or self.leg.call_id
        ua._register_leg(self.leg, session)
        adapter.run(effects)

    def _on_session_event(self, ev: inv.SessionEvent) -> None:
        if isinstance(ev, inv.Provisional | inv.EarlyMedia):
            self.provisional_seen = True
        elif isinstance(ev, inv.Answered):
            self._count(200, got_response=True)
        if isinstance(ev, inv.AuthRequired):
            self._answer_challenge(ev.response)
            return
        if isinstance(ev, inv.Failed):
            self._count(ev.status, got_response=ev.response is not None)
            t = self.targets[self.index]
            if t.gateway is not None and ev.status in (408, 503) and ev.response is None:
                h = self.ua.health.get(t.gateway.name)
                if h is not None and h.call_timed_out(self.ua.now):
                    log.warning("gateway marked down after call timeout", gateway=t.gateway.name)
            if (ev.status in FAILOVER_CODES and self.index + 1 < len(self.targets)
                    and not self.leg._hangup_requested):
                self.leg.log.info("failover", failed=t.label, status=ev.status,
                                  next=self.targets[self.index + 1].label)
                self.index += 1
                self.leg.call_id = f"{secrets.token_hex(10)}@{self.ua.sip.advertise}"
                self.leg.log = self.leg.log.bind(call_id=self.leg.call_id)
                self._attempt()
                return
        self.leg.session_event(ev)

    def _answer_challenge(self, resp: Response) -> None:
        """401/407 from a gateway: answer with its credentials (§22.2); the session re-sends
        the INVITE with the same Call-ID and From tag and the next CSeq."""
        adapter = self.leg.adapter
        target = self.targets[self.index]
        gw = target.gateway
        if adapter is None:
            return
        session = adapter.session
        header = "Proxy-Authenticate" if resp.status == 407 else "WWW-Authenticate"
        value = None
        if gw is not None:
            value = DigestClient(gw.username, gw.password).respond(
                resp.headers.get_all(header), "INVITE", str(target.request_uri), self.sdp or b"")
        if value is None or self.leg._hangup_requested:
            # The challenge is final for this attempt: nothing to answer it with.
            self._count(resp.status, got_response=True)
            adapter.run(session.bye(adapter.now))
            return
        name = "Proxy-Authorization" if resp.status == 407 else "Authorization"
        adapter.run(session.authenticate([(name, value)], adapter.now))


async def send_options(stack: SipStack, ua: UserAgent, gw: GatewayConfig,
                       timeout: float) -> int | None:
    """One OPTIONS probe to a gateway; the status, or None on timeout/transport error."""
    a = gw.parsed_address
    peer = Peer(a.transport.value, a.host, a.port)
    uri = SipUri("sip", host=gw.domain or a.host, port=a.port,
                 params=(("transport", a.transport.value),) if a.transport.value != "udp" else ())
    local = ua.local_endpoint(peer.transport)
    req = Request("OPTIONS", uri, Headers([
        ("Via", "SIP/2.0/UDP 0.0.0.0;branch=z9hG4bK" + secrets.token_hex(8)),
        ("From", f"<sip:ping@{ua.sip.advertise}>;tag={secrets.token_hex(6)}"),
        ("To", f"<{uri}>"),
        ("Call-ID", f"{secrets.token_hex(10)}@{ua.sip.advertise}"),
        ("CSeq", "1 OPTIONS"),
        ("Contact", f"<{local.contact}>"),
        ("Accept", "application/sdp"),
        ("Content-Length", "0"),
    ]))
    fut: asyncio.Future[int | None] = stack.loop.create_future()

    def on_response(resp: Response | None) -> None:
        if fut.done():
            return
        if resp is None:
            fut.set_result(None)
        elif resp.status >= 200:
            fut.set_result(resp.status)

    stack.send_request(req, peer, on_response)
    try:
        return await asyncio.wait_for(fut, timeout)
    except TimeoutError:
        return None
