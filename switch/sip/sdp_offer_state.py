"""Offer/answer bookkeeping for one INVITE session (RFC 3264 §4, RFC 6337, RFC 3262 §5,
RFC 3311 §5).

Session descriptions are opaque ``bytes`` here: the media plane parses them. This module only
knows *who owes whom an answer*, which is what decides 491 / 500 on UPDATE and re-INVITE
(RFC 3311 §5.2, RFC 3261 §14.2) and whether a body in a 1xx/2xx/ACK/PRACK is an offer or an
answer. An offer that fails (non-2xx to the re-INVITE/UPDATE carrying it, or a 488 we send)
is rolled back so that the previously agreed descriptions stay in force (RFC 3261 §14.1).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OfferAnswerError(Exception):
    """An offer or answer arrived (or was attempted) where RFC 3264 does not allow one."""


class OfferState(enum.Enum):
    IDLE = "idle"                              # no offer outstanding in either direction
    LOCAL_OFFER_SENT = "local-offer-sent"      # we offered, waiting for the peer's answer
    REMOTE_OFFER_RECEIVED = "remote-offer"     # the peer offered, we owe an answer


@dataclass(frozen=True, slots=True)
class AgreedSdp:
    """The last completed exchange: what we sent and what the peer sent."""

    local: bytes
    remote: bytes


class OfferAnswer:
    """Tracks the state of RFC 3264 exchanges on one dialog.

    ``agreed`` is ``None`` until the first exchange completes (the initial INVITE exchange).
    """

    def __init__(self) -> None:
        self.state = OfferState.IDLE
        self.agreed: AgreedSdp | None = None
        self.pending_local_offer: bytes | None = None
        self.pending_remote_offer: bytes | None = None

    @property
    def completed_once(self) -> bool:
        return self.agreed is not None

    @property
    def local_sdp(self) -> bytes | None:
        return self.agreed.local if self.agreed else None

    @property
    def remote_sdp(self) -> bytes | None:
        return self.agreed.remote if self.agreed else None

    # -- our side ------------------------------------------------------------------------------

    def local_offer(self, sdp: bytes) -> None:
        if self.state is not OfferState.IDLE:
            raise OfferAnswerError(f"cannot send an offer in state {self.state.value}")
        self.state = OfferState.LOCAL_OFFER_SENT
        self.pending_local_offer = sdp

    def remote_answer(self, sdp: bytes) -> None:
        if self.state is not OfferState.LOCAL_OFFER_SENT or self.pending_local_offer is None:
            raise OfferAnswerError(f"unexpected answer in state {self.state.value}")
        self.agreed = AgreedSdp(local=self.pending_local_offer, remote=sdp)
        self.pending_local_offer = None
        self.state = OfferState.IDLE

    # -- the peer's side -----------------------------------------------------------------------

    def remote_offer(self, sdp: bytes) -> None:
        if self.state is not OfferState.IDLE:
            raise OfferAnswerError(f"cannot receive an offer in state {self.state.value}")
        self.state = OfferState.REMOTE_OFFER_RECEIVED
        self.pending_remote_offer = sdp

    def local_answer(self, sdp: bytes) -> None:
        if self.state is not OfferState.REMOTE_OFFER_RECEIVED or self.pending_remote_offer is None:
            raise OfferAnswerError(f"no offer to answer in state {self.state.value}")
        self.agreed = AgreedSdp(local=sdp, remote=self.pending_remote_offer)
        self.pending_remote_offer = None
        self.state = OfferState.IDLE

    # -- failure -------------------------------------------------------------------------------

    def rollback(self) -> None:
        """The transaction carrying the outstanding offer failed: the previous agreement
        (if any) stays in force (RFC 3261 §14.1 / §14.2)."""
        self.pending_local_offer = None
        self.pending_remote_offer = None
        self.state = OfferState.IDLE


def sdp_of(content_type: str | None, body: bytes) -> bytes | None:
    """The session description in a message body, or None when there is none.

    ``application/sdp`` (or no Content-Type with a non-empty body, as sloppy peers send) is
    the body itself. ``multipart/mixed`` and friends — SIP-I gateways put ISUP next to the
    SDP (RFC 3204, RFC 5621) — yield the ``application/sdp`` part. Any other type is not
    an offer or answer (RFC 3261 §13.2.1 only counts session descriptions).
    """
    if not body:
        return None
    if content_type is None:
        return body
    ctype, _, params = content_type.partition(";")
    ctype = ctype.strip().lower()
    if ctype == "application/sdp":
        return body
    if not ctype.startswith("multipart/"):
        return None
    boundary = _boundary(params)
    if not boundary:
        return None
    return _sdp_part(body, boundary.encode())


def _boundary(params: str) -> str | None:
    for p in params.split(";"):
        name, _, value = p.partition("=")
        if name.strip().lower() == "boundary":
            return value.strip().strip('"') or None
    return None


def _sdp_part(body: bytes, boundary: bytes) -> bytes | None:
    delimiter = b"--" + boundary
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # close-delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, sep, content = chunk.partition(b"\n\n")
        if not sep:
            continue
        part_type = b""
        for line in head.splitlines():
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-type":
                part_type = value.split(b";")[0].strip().lower()
        # the CRLF before the next delimiter belongs to the delimiter (RFC 2046 §5.1.1)
        if content.endswith(b"\r\n"):
            content = content[:-2]
        elif content.endswith(b"\n"):
            content = content[:-1]
        if part_type == b"application/sdp" and content:
            return content
    return None
