"""UAS-core request checks (RFC 3261 §8.2) and response acceptance (§8.1.3.3, §18.1.2).

:func:`check_request` runs, in this order, and returns the first response to send (or
``None`` when the request may go on to the transaction user):

1. SIP-Version other than 2.0 → 505 (nothing else in the message can be interpreted);
2. well-formedness the parser leaves to us → 400 with a reason naming the problem:
   missing Via/From/To/Call-ID/CSeq, more than one From/To/Call-ID/CSeq/Max-Forwards/
   Content-Length/Content-Type, CSeq method ≠ request method (RFC 4475 §3.1.2.17/18 — before
   the method check so an unknown method with a mismatch gets 400, not 501), malformed
   Contact / Route / Record-Route / Require;
3. §8.2.1 method inspection → 501 (unknown method) or 405 + Allow (known, not allowed);
4. §8.2.2.1 Request-URI scheme → 416;
5. §8.2.2.3 Require → 420 + Unsupported (never for ACK/CANCEL);
6. §8.2.3 content: Content-Encoding → 415 + Accept-Encoding, Content-Type → 415 + Accept
   (``multipart/mixed`` passes when ``application/sdp`` is accepted and one part is SDP;
   a body with ``Content-Disposition: …;handling=optional`` is never a reason to refuse);
7. Accept of INVITE/OPTIONS without application/sdp → 406.

A missing Max-Forwards is tolerated (RFC 2543 peers, RFC 4475 §3.4.1). ACK is never
answered: ``check_request`` returns ``None`` for it (drop it in the caller if it is bad).
Merged-request detection (§8.2.2.2, 482) needs transaction state, so it is the pure helper
:func:`merge_key` / :func:`is_merged_request`; Max-Forwards 0 (483) matters only when
forwarding: :func:`check_max_forwards`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from switch.sip.message import Request, Response, make_response
from switch.sip.uri import SipParseError, split_list

__all__ = [
    "KNOWN_METHODS",
    "MergeKey",
    "check_max_forwards",
    "check_request",
    "is_acceptable_response",
    "is_merged_request",
    "merge_key",
]

# Methods defined by RFC 3261, 3262, 3265/6665, 3311, 3428, 3515, 3903, 6086.
KNOWN_METHODS = frozenset(
    [
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    ]
)

_SINGLE_VALUE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Length", "Content-Type")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")


def _bad(req: Request, reason: str) -> Response:
    return make_response(req, 400, reason)


def check_request(
    req: Request,
    *,
    methods: frozenset[str],
    extensions: frozenset[str],
    accept_types: frozenset[str],
    uri_schemes: frozenset[str] = frozenset({"sip", "sips", "tel"}),
) -> Response | None:
    """Return the error response RFC 3261 §8.2 prescribes for ``req``, or ``None``.

    ``methods``: methods this UAS implements (sent in Allow on 405); ``extensions``: option
    tags it supports (lower-case compared); ``accept_types``: body types it understands
    (``type/subtype``, lower-case).
    """
    if req.method == "ACK":
        return None
    h = req.headers
    # 1. version
    if req.version != "SIP/2.0":
        return make_response(req, 505)
    # 2. well-formedness
    for name in _MANDATORY:
        if name not in h:
            return _bad(req, f"Missing {name}")
    for name in _SINGLE_VALUE:
        if h.count(name) > 1:
            return _bad(req, f"Multiple {name} values")
    try:
        cseq = req.cseq
        req.vias  # noqa: B018 - parse for the side effect of validation
        req.from_  # noqa: B018
        req.to  # noqa: B018
        req.call_id  # noqa: B018
        req.max_forwards  # noqa: B018
    except SipParseError as exc:
        return _bad(req, exc.reason)
    if cseq.method != req.method:
        return _bad(req, "CSeq method does not match request method")
    for name, fn in (
        ("Contact", lambda: req.contacts),
        ("Route", lambda: req.route),
        ("Record-Route", lambda: req.record_route),
        ("Require", lambda: req.require),
    ):
        if name in h:
            try:
                fn()
            except SipParseError as exc:
                return _bad(req, f"Bad {name} ({exc.reason})")
    # 3. method inspection (§8.2.1)
    if req.method not in methods:
        if req.method in KNOWN_METHODS:
            return make_response(req, 405, headers=[("Allow", ", ".join(sorted(methods)))])
        return make_response(req, 501)
    # 4. Request-URI scheme (§8.2.2.1)
    if req.uri.scheme not in uri_schemes:
        return make_response(req, 416)
    # 5. Require (§8.2.2.3)
    if req.method != "CANCEL":
        ext = {e.lower() for e in extensions}
        unknown = [t for t in _raw_tags(req, "Require") if t.lower() not in ext]
        if unknown:
            return make_response(req, 420, headers=[("Unsupported", ", ".join(unknown))])
    # 6. content processing (§8.2.3)
    if req.body:
        enc = [e.lower() for e in h.get_all("Content-Encoding") if e]
        if any(e != "identity" for e in enc):
            return make_response(req, 415, headers=[("Accept-Encoding", "identity")])
        ctype = req.content_type
        if (ctype is None or not _body_acceptable(req, ctype, accept_types)) and not _optional_body(req):
            return make_response(req, 415, headers=[("Accept", ", ".join(sorted(accept_types)))])
    # 7. Accept (RFC 3261 §11.2 / §21.4.7): INVITE/OPTIONS answers carry SDP.
    if req.method in ("INVITE", "OPTIONS") and "Accept" in h:
        accepted = [a.partition(";")[0].strip().lower() for a in h.get_all("Accept")]
        accepted = [a for a in accepted if a]
        if accepted and not any(a in ("application/sdp", "application/*", "*/*") for a in accepted):
            return make_response(req, 406, headers=[("Accept", "application/sdp")])
    return None


def _optional_body(req: Request) -> bool:
    # RFC 3261 §20.11 / §8.2.3: "handling=optional" lets the UAS ignore a body it does
    # not understand instead of rejecting the request.
    cd = req.headers.get("Content-Disposition")
    if cd is None:
        return False
    for p in cd.split(";")[1:]:
        k, _, v = p.partition("=")
        if k.strip().lower() == "handling" and v.strip().lower() == "optional":
            return True
    return False


def _raw_tags(req: Request, name: str) -> list[str]:
    out: list[str] = []
    for v in req.headers.get_all(name):
        if v and v not in out:
            out.append(v)
    return out


def _body_acceptable(req: Request, ctype: str, accept_types: frozenset[str]) -> bool:
    accept = {a.lower() for a in accept_types}
    if ctype in accept:
        return True
    if ctype == "multipart/mixed" and "application/sdp" in accept:
        boundary = req.content_type_params.get("boundary")
        return boundary is not None and "application/sdp" in multipart_types(req.body, boundary)
    return False


def multipart_types(body: bytes, boundary: str) -> list[str]:
    """Content types of the parts of a multipart body (RFC 2046 §5.1), lower-case."""
    delim = b"--" + boundary.encode("utf-8", "replace")
    out: list[str] = []
    for part in body.split(delim)[1:]:
        if part.startswith(b"--"):
            break
        head, _, _ = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        ctype = "text/plain"  # RFC 2046 §5.1 default
        for line in head.split(b"\r\n"):
            name, colon, value = line.partition(b":")
            if colon and name.strip().lower() in (b"content-type", b"c"):
                ctype = value.decode("latin-1").partition(";")[0].strip().lower()
        out.append(ctype)
    return out


def check_max_forwards(req: Request) -> Response | None:
    """For a request about to be forwarded (RFC 3261 §16.3 step 2): 483 when
    Max-Forwards is 0. A UAS answering the request itself ignores this (RFC 4475 §3.3.11).
    OPTIONS with Max-Forwards 0 may be answered by the element itself (§11)."""
    mf = req.max_forwards
    if mf == 0:
        return make_response(req, 483)
    return None


class MergeKey(NamedTuple):
    """Identifies "the same request" for §8.2.2.2 merged-request detection."""

    call_id: str
    from_tag: str | None
    cseq: int
    method: str


def merge_key(req: Request) -> MergeKey | None:
    """Key for merged-request detection, or ``None`` when the request is inside a dialog
    (To has a tag) — §8.2.2.2 applies only to requests without a To tag."""
    if req.to.tag is not None:
        return None
    return MergeKey(req.call_id, req.from_.tag, req.cseq.seq, req.cseq.method)


def is_merged_request(
    req: Request, first_branch: str, first_sent_by: tuple[str, int | None] | None = None
) -> bool:
    """True when ``req`` has the same :func:`merge_key` as a request already being
    processed (whose top Via had ``first_branch`` / ``first_sent_by``) but arrived on a
    different path: answer it with ``make_response(req, 482)``. The transaction user keeps
    ``{merge_key: (branch, sent_by)}`` for its server transactions; this function is pure.
    Retransmissions (same branch and sent-by) are not merges."""
    via = req.top_via
    if via.branch != first_branch:
        return True
    return first_sent_by is not None and via.sent_by != first_sent_by


_BROADCAST = frozenset({"255.255.255.255", "0.0.0.0"})


def is_acceptable_response(
    resp: Response, local_sent_by: Iterable[tuple[str, int | None]] | None = None
) -> bool:
    """Whether a UAC transport/transaction should accept ``resp`` (else drop silently).

    * status must be 100-699 (the parser already refuses others, RFC 4475 §3.1.2.19) and
      the version SIP/2.0; Via and CSeq must parse (needed to match a transaction);
    * exactly one Via: a UA discards responses with several (RFC 3261 §8.1.3.3) — this is
      what keeps a 200 carrying a broadcast Via (RFC 4475 §3.3.10 "bcast") from being
      acted upon, and a proxy would likewise never forward to a broadcast sent-by;
    * the top Via's sent-by must not be a broadcast/unspecified address and, when
      ``local_sent_by`` is given, must be one we insert (§18.1.2); a sent-by without a
      port matches an entry with port ``None`` or 5060.
    """
    if not 100 <= resp.status <= 699 or resp.version != "SIP/2.0":
        return False
    try:
        vias = resp.vias
        resp.cseq  # noqa: B018 - must be parseable to match a transaction
    except SipParseError:
        return False
    if len(vias) != 1:
        return False
    host, port = vias[0].sent_by
    if host in _BROADCAST:
        return False
    if local_sent_by is not None:
        host_l = host.lower()
        return any(h.lower() == host_l and (p == port or {p, port} <= {None, 5060}) for h, p in local_sent_by)
    return True


def split_tags(value: str) -> list[str]:
    """Option tags of one header value (convenience for callers building 420s)."""
    return [t for t in split_list(value) if t]
