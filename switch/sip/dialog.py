"""Dialogs (RFC 3261 §12): identity, route set, remote target, CSeq spaces, and building
requests inside a dialog (§12.2.1.1).

A :class:`Dialog` is plain state plus request construction. It never sends anything: the
INVITE session (``invite_session.py``) decides when to create requests and hands them to its
adapter as effects.

Via convention (the task left it open): requests are built with a single Via whose sent-by
and transport come from :class:`LocalEndpoint` (``via_transport`` / ``via_sent_by``). When the
session does not know its transport, the default placeholder ``SIP/2.0/UDP 0.0.0.0`` is used
and the adapter (which knows the outgoing socket) rewrites transport and sent-by before the
request reaches the transaction layer, keeping the ``branch`` parameter. ``branch`` always
starts with the RFC 3261 magic cookie ``z9hG4bK`` (§8.1.1.7).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from switch.sip.headers import Headers
from switch.sip.message import Request, Response, make_response
from switch.sip.uri import NameAddr, SipUri, parse_name_addrs

MAGIC_COOKIE = "z9hG4bK"
#: Placeholder sent-by the adapter rewrites (see module docstring).
PLACEHOLDER_SENT_BY = "0.0.0.0"
#: §8.1.1.6
DEFAULT_MAX_FORWARDS = 70
#: Methods whose requests and 2xx responses refresh the remote target (§12.2, RFC 3311 §5.1).
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE"})


def new_token(nbytes: int = 8) -> str:
    """Default source of tags, branches and Call-IDs: unguessable (§19.3 wants global
    uniqueness and some randomness, at least 32 bits)."""
    return secrets.token_hex(nbytes)


def new_branch(token: Callable[[], str] = new_token) -> str:
    return MAGIC_COOKIE + token()


class DialogError(Exception):
    """A message cannot create or belong to a dialog (missing tag, Contact, ...)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID + local tag + remote tag, seen from this side."""

    call_id: str
    local_tag: str
    remote_tag: str


@dataclass(frozen=True, slots=True)
class LocalEndpoint:
    """What this UA puts into the requests and responses it creates."""

    contact: SipUri
    via_transport: str = "UDP"
    via_sent_by: str = PLACEHOLDER_SENT_BY
    user_agent: str | None = None
    allow: tuple[str, ...] = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "PRACK", "UPDATE",
                              "INFO")
    max_forwards: int = DEFAULT_MAX_FORWARDS

    def via(self, branch: str) -> str:
        return f"SIP/2.0/{self.via_transport} {self.via_sent_by};branch={branch};rport"


# ---------------------------------------------------------------------------------------------
# small helpers over the message API (kept here so one place knows its shape)
# ---------------------------------------------------------------------------------------------


def header(msg: Request | Response, name: str) -> str | None:
    return msg.headers.get(name)


def header_tokens(msg: Request | Response, name: str) -> set[str]:
    """Comma-separated option tags of Require / Supported / Allow, lower-cased."""
    out: set[str] = set()
    for value in msg.headers.get_all(name):
        for tok in value.split(","):
            tok = tok.strip().lower()
            if tok:
                out.add(tok)
    return out


def name_addr_list(msg: Request | Response, name: str) -> list[NameAddr]:
    """Every address of every ``name`` header field, in order (Route, Record-Route, Contact)."""
    out: list[NameAddr] = []
    for value in msg.headers.get_all(name):
        out.extend(parse_name_addrs(value))
    return out


def first_contact(msg: Request | Response) -> SipUri | None:
    try:
        contacts = name_addr_list(msg, "Contact")
    except ValueError:
        return None
    return contacts[0].uri if contacts else None


def make_headers(items: Iterable[tuple[str, str]]) -> Headers:
    return Headers(items)


# ---------------------------------------------------------------------------------------------
# the dialog
# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Dialog:
    """State of one dialog (§12). Create with :meth:`uac` or :meth:`uas`."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: NameAddr          # our From (UAC) / To (UAS), without tag
    remote_uri: NameAddr         # the peer's address of record, without tag
    remote_target: SipUri
    route_set: tuple[NameAddr, ...]
    local_seq: int | None
    remote_seq: int | None
    secure: bool
    local: LocalEndpoint
    is_uac: bool
    state: DialogState = DialogState.EARLY
    token: Callable[[], str] = field(default=new_token, repr=False)

    # -- creation ------------------------------------------------------------------------------

    @classmethod
    def uac(
        cls, invite: Request, response: Response, local: LocalEndpoint,
        token: Callable[[], str] = new_token,
    ) -> Dialog:
        """§12.1.2: from a 1xx-with-To-tag (early) or 2xx (confirmed) to our INVITE."""
        to = response.to
        to_tag = to.tag
        if not to_tag:
            raise DialogError("response without To tag cannot create a dialog")
        from_tag = invite.from_.tag
        if not from_tag:
            raise DialogError("our INVITE has no From tag")
        target = first_contact(response)
        if target is None:
            # A 1xx may lack Contact (a 2xx must not): keep the Request-URI until we learn it.
            if 200 <= response.status < 300:
                raise DialogError("2xx without Contact")
            target = invite.uri
        # §12.1.2: the route set is the Record-Route list of the response, reversed.
        routes = tuple(reversed(name_addr_list(response, "Record-Route")))
        return cls(
            call_id=invite.call_id,
            local_tag=from_tag,
            remote_tag=to_tag,
            local_uri=_untagged(invite.from_),
            remote_uri=_untagged(to),
            remote_target=target,
            route_set=routes,
            local_seq=invite.cseq.seq,
            remote_seq=None,
            secure=invite.uri.scheme.lower() == "sips",
            local=local,
            is_uac=True,
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            token=token,
        )

    @classmethod
    def uas(
        cls, invite: Request, local_tag: str, local: LocalEndpoint,
        token: Callable[[], str] = new_token, initial_local_seq: int | None = None,
    ) -> Dialog:
        """§12.1.1: when we send a 1xx-with-tag or 2xx to the INVITE."""
        from_tag = invite.from_.tag
        if not from_tag:
            # RFC 2543 peers may omit it; a dialog with an empty remote tag still works.
            from_tag = ""
        target = first_contact(invite)
        if target is None:
            raise DialogError("INVITE without Contact")
        routes = tuple(name_addr_list(invite, "Record-Route"))  # §12.1.1: in order
        return cls(
            call_id=invite.call_id,
            local_tag=local_tag,
            remote_tag=from_tag,
            local_uri=_untagged(invite.to),
            remote_uri=_untagged(invite.from_),
            remote_target=target,
            route_set=routes,
            local_seq=initial_local_seq,
            remote_seq=invite.cseq.seq,
            secure=invite.uri.scheme.lower() == "sips",
            local=local,
            is_uac=False,
            token=token,
        )

    # -- identity ------------------------------------------------------------------------------

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    def matches(self, msg: Request | Response) -> bool:
        """Does an incoming request (From=remote, To=local) or response (From=local,
        To=remote) belong to this dialog (§12.2.2 / §12.1.2)?"""
        if msg.call_id != self.call_id:
            return False
        if isinstance(msg, Request):
            return (msg.to.tag or "") == self.local_tag and (
                msg.from_.tag or "") == self.remote_tag
        return (msg.from_.tag or "") == self.local_tag and (msg.to.tag or "") == self.remote_tag

    # -- state changes -------------------------------------------------------------------------

    def confirm(self, response: Response | None = None) -> None:
        """Early → confirmed. A UAC recomputes route set and target from the 2xx (§13.2.2.4)."""
        if response is not None and self.is_uac:
            self.route_set = tuple(reversed(name_addr_list(response, "Record-Route")))
            target = first_contact(response)
            if target is not None:
                self.remote_target = target
        self.state = DialogState.CONFIRMED

    def update_target(self, msg: Request | Response) -> None:
        """Target refresh (§12.2.1.2 for 2xx received, §12.2.2 for requests received):
        the Contact, if any, becomes the remote target. The route set never changes."""
        target = first_contact(msg)
        if target is not None:
            self.remote_target = target

    def check_remote_cseq(self, request: Request) -> bool:
        """§12.2.2: False if the request is out of order (lower CSeq) and needs a 500.
        ACK and CANCEL reuse the INVITE's number and are not checked."""
        if request.method in ("ACK", "CANCEL"):
            return True
        seq = request.cseq.seq
        if self.remote_seq is not None and seq < self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    # -- request construction (§12.2.1.1) ------------------------------------------------------

    def next_local_seq(self) -> int:
        if self.local_seq is None:
            # §8.1.1.5: any value below 2**31; starting low keeps traces readable.
            self.local_seq = 0
        self.local_seq += 1
        return self.local_seq

    def request_uri_and_routes(self) -> tuple[SipUri, list[str]]:
        """§12.2.1.1: loose routing keeps the remote target as Request-URI; a strict router
        (no ``lr``) gets it as the last Route and its own URI in the Request-URI."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0]
        if first.uri.has_param("lr"):
            return self.remote_target, [str(r) for r in self.route_set]
        # §19.1.1: ``method`` and URI headers are not allowed in a Request-URI.
        ruri = first.uri.without_headers().with_param("method", None)
        routes = [str(r) for r in self.route_set[1:]]
        routes.append(f"<{self.remote_target}>")
        return ruri, routes

    def next_hop(self, request: Request) -> SipUri:
        """The URI the adapter resolves (§8.1.2, §12.2.1.1): the first Route if the route
        set starts with a loose router, otherwise the Request-URI (which, with a strict
        router, *is* that router)."""
        if self.route_set and not self.route_set[0].uri.has_param("lr"):
            return request.uri
        routes = name_addr_list(request, "Route")
        return routes[0].uri if routes else request.uri

    def create_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra_headers: Sequence[tuple[str, str]] = (),
        cseq: int | None = None,
    ) -> Request:
        """A new request within the dialog. ``cseq`` is only for ACK (the INVITE's number,
        §13.2.2.4); every other method takes the next local sequence number."""
        if method == "CANCEL":
            raise DialogError("CANCEL is built from the INVITE (§9.1), not from the dialog")
        if method == "ACK":
            if cseq is None:
                raise DialogError("an ACK needs the CSeq number of the INVITE it acknowledges")
            seq = cseq
        else:
            seq = self.next_local_seq()
        ruri, routes = self.request_uri_and_routes()
        items: list[tuple[str, str]] = [
            ("Via", self.local.via(new_branch(self.token))),
            ("Max-Forwards", str(self.local.max_forwards)),
        ]
        items += [("Route", r) for r in routes]
        items += [
            ("From", str(self.local_uri.with_tag(self.local_tag))),
            ("To", str(self.remote_uri.with_tag(self.remote_tag) if self.remote_tag
                       else self.remote_uri)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        if method in TARGET_REFRESH_METHODS:
            items.append(("Contact", f"<{self.local.contact}>"))
        if self.local.user_agent and method != "ACK":
            items.append(("User-Agent", self.local.user_agent))
        items += list(extra_headers)
        if body:
            items.append(("Content-Type", content_type or "application/sdp"))
        return Request(method=method, uri=ruri, headers=make_headers(items), body=body)


def _untagged(na: NameAddr) -> NameAddr:
    return na.with_param("tag", None) if na.has_param("tag") else na


# ---------------------------------------------------------------------------------------------
# finding the dialog (session) of a message
# ---------------------------------------------------------------------------------------------

T = TypeVar("T")


class DialogIndex(Generic[T]):
    """Call-ID + *local* tag → whatever owns the dialog(s) (an INVITE session).

    The local tag alone identifies our side of every dialog of one INVITE, including the
    early dialogs of several forks (they share our From tag and differ in the remote tag,
    which the session sorts out itself). An incoming request carries our tag in To, a
    response in From.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[str, str], T] = {}

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, call_id: str, local_tag: str, owner: T) -> None:
        self._by_key[(call_id, local_tag)] = owner

    def remove(self, call_id: str, local_tag: str) -> None:
        self._by_key.pop((call_id, local_tag), None)

    def for_request(self, req: Request) -> T | None:
        tag = req.to.tag
        return self._by_key.get((req.call_id, tag)) if tag else None

    def for_sent_request(self, req: Request) -> T | None:
        """The owner of a request *we* sent (our tag in From): for TransactionTimedOut."""
        tag = req.from_.tag
        return self._by_key.get((req.call_id, tag)) if tag else None

    def for_response(self, resp: Response) -> T | None:
        tag = resp.from_.tag
        return self._by_key.get((resp.call_id, tag)) if tag else None

    @staticmethod
    def is_in_dialog(req: Request) -> bool:
        """§12.2.2: a request with a To tag belongs to a dialog (ours or unknown)."""
        return req.to.tag is not None

    @staticmethod
    def no_dialog(req: Request) -> Response:
        """§12.2.2: the answer to an in-dialog request (To tag) matching no dialog. An ACK
        gets nothing (the adapter drops it)."""
        return make_response(req, 481, "Call/Transaction Does Not Exist")
