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
