"""Session timers (RFC 4028): negotiation of Session-Expires / Min-SE / refresher and the two
deadlines that follow from it.

Pure bookkeeping: :class:`SessionTimer` is told about requests and responses (as header
*values*, strings) and says which headers to send and when to refresh or give up. The INVITE
session turns that into StartTimer effects and re-INVITE/UPDATE/BYE requests.

The ``refresher`` parameter is relative to the transaction that carries it (RFC 4028 §4):
``uac`` is whoever sent the request, ``uas`` whoever answers it. Internally we keep the
transaction-independent ``we_refresh`` flag.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: RFC 4028 §4: the minimum Min-SE anybody may use.
MIN_SE_FLOOR = 90


class Refresher(enum.StrEnum):
    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionTimerConfig:
    enabled: bool = True
    session_expires: int = 1800        # the interval we ask for (seconds)
    min_se: int = MIN_SE_FLOOR         # the smallest interval we accept (Min-SE, 422 below it)

    def __post_init__(self) -> None:
        if self.min_se < MIN_SE_FLOOR:
            raise ValueError(f"min_se must be >= {MIN_SE_FLOOR} (RFC 4028 §4)")
        if self.session_expires < self.min_se:
            raise ValueError("session_expires must be >= min_se")


@dataclass(frozen=True, slots=True)
class SessionExpires:
    interval: int
    refresher: Refresher | None = None

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.interval)
        return f"{self.interval};refresher={self.refresher.value}"


def parse_session_expires(value: str) -> SessionExpires:
    """``Session-Expires: 1800;refresher=uac`` (also the compact form ``x``, same grammar)."""
    parts = [p.strip() for p in value.split(";")]
    try:
        interval = int(parts[0])
    except ValueError:
        raise ValueError(f"bad Session-Expires value {value!r}") from None
    if interval <= 0:
        raise ValueError(f"bad Session-Expires value {value!r}")
    refresher: Refresher | None = None
    for p in parts[1:]:
        name, _, v = p.partition("=")
        if name.strip().lower() == "refresher":
            v = v.strip().lower()
            if v in ("uac", "uas"):
                refresher = Refresher(v)
    return SessionExpires(interval, refresher)


def parse_min_se(value: str | None) -> int:
    if value is None:
        return MIN_SE_FLOOR
    try:
        return max(MIN_SE_FLOOR, int(value.split(";")[0].strip()))
    except ValueError:
        return MIN_SE_FLOOR


def expiry_margin(interval: float) -> float:
    """RFC 4028 §10: the side not refreshing sends BYE ``min(32, interval/3)`` seconds before
    the session would expire."""
    return min(32.0, interval / 3.0)


@dataclass(frozen=True, slots=True)
class TooSmall:
    """The request asked for less than our Min-SE: answer 422 with ``Min-SE: min_se``."""

    min_se: int


@dataclass(frozen=True, slots=True)
class Negotiated:
    interval: int
    we_refresh: bool


class SessionTimer:
    """Negotiation and running state of RFC 4028 for one session."""

    def __init__(self, config: SessionTimerConfig) -> None:
        self.config = config
        #: what we currently ask for (grows after a 422, RFC 4028 §7.4)
        self.requested = config.session_expires
        self.min_se = config.min_se
        self.active: Negotiated | None = None
        self.retries_422 = 0

    # -- what we send --------------------------------------------------------------------------

    def request_headers(self, *, initial: bool) -> list[tuple[str, str]]:
        """Headers for an INVITE / re-INVITE / UPDATE we send (``Supported: timer`` is added by
        the session). A refresh names the current refresher (RFC 4028 §7.4)."""
        if not self.config.enabled:
            return []
        if initial or self.active is None:
            se = SessionExpires(self.requested)
        else:
            se = SessionExpires(
                self.active.interval, Refresher.UAC if self.active.we_refresh else Refresher.UAS
            )
        return [("Session-Expires", str(se)), ("Min-SE", str(self.min_se))]

    # -- UAC side ------------------------------------------------------------------------------

    def on_422(self, min_se_value: str | None) -> bool:
        """RFC 4028 §7.4: retry with the peer's Min-SE. Returns False when a retry makes no
        sense (no larger value offered, or we already retried twice)."""
        peer_min = parse_min_se(min_se_value)
        if not self.config.enabled or self.retries_422 >= 2 or peer_min <= self.requested:
            return False
        self.retries_422 += 1
        self.requested = peer_min
        self.min_se = max(self.min_se, peer_min)
        return True

    def on_2xx_to_our_request(self, se_value: str | None) -> Negotiated | None:
        """RFC 4028 §7.2: the 2xx to our INVITE / re-INVITE / UPDATE fixes the interval."""
        if not self.config.enabled:
            return None
        if se_value is not None:
            try:
                se = parse_session_expires(se_value)
            except ValueError:
                se = None
            if se is not None:
                # A missing refresher in a 2xx is a peer bug; refreshing ourselves is the safe
                # choice (a refresh too many is harmless, a missing one kills the call).
                self.active = Negotiated(se.interval, se.refresher is not Refresher.UAS)
                return self.active
        # The peer does not do session timers: §7.2 lets us run it alone as the refresher.
        interval = self.active.interval if self.active else self.requested
        self.active = Negotiated(interval, True)
        return self.active

    # -- UAS side ------------------------------------------------------------------------------

    def on_request(
        self, se_value: str | None, min_se_value: str | None, peer_supports_timer: bool
    ) -> TooSmall | Negotiated | None:
        """RFC 4028 §9: an INVITE / re-INVITE / UPDATE we answer. ``TooSmall`` → 422.
        The result (if any) goes into the 2xx via :meth:`response_headers`."""
        if not self.config.enabled:
            return None
        se: SessionExpires | None = None
        if se_value is not None:
            try:
                se = parse_session_expires(se_value)
            except ValueError:
                se = None
        peer_min = parse_min_se(min_se_value)
        floor = max(peer_min, self.config.min_se)
        if se is not None:
            if se.interval < self.config.min_se:
                return TooSmall(self.config.min_se)
            # §9: we may shorten the interval but never below the Min-SE in the request.
            interval = max(min(se.interval, self.config.session_expires), floor)
            refresher = se.refresher
        else:
            interval = max(self.active.interval if self.active else self.requested, floor)
            refresher = None
            if self.active is not None:
                # A mid-call request without Session-Expires (a plain media change) keeps
                # who refreshes; only a timer-aware peer may be named refresher (§9).
                if self.active.we_refresh or not peer_supports_timer:
                    refresher = Refresher.UAS
                else:
                    refresher = Refresher.UAC
        if refresher is None:
            # §9: with a timer-aware peer either side may refresh; we let the requester do it
            # (it sent the request, so it evidently can). Otherwise it must be us.
            refresher = Refresher.UAC if peer_supports_timer else Refresher.UAS
        self.active = Negotiated(interval, refresher is Refresher.UAS)
        return self.active

    def response_headers(self) -> list[tuple[str, str]]:
        """Session-Expires (+ ``Require: timer`` when the requester must refresh, §9) for the
        2xx to the request last given to :meth:`on_request`."""
        if self.active is None or not self.config.enabled:
            return []
        refresher = Refresher.UAS if self.active.we_refresh else Refresher.UAC
        out = [("Session-Expires", str(SessionExpires(self.active.interval, refresher)))]
        if refresher is Refresher.UAC:
            out.append(("Require", "timer"))
        return out

    # -- deadlines -----------------------------------------------------------------------------

    def refresh_at(self, now: float) -> float | None:
        """When we send the refresh (half the interval, RFC 4028 §10), if we are the refresher."""
        if self.active is None or not self.active.we_refresh:
            return None
        return now + self.active.interval / 2.0

    def expire_at(self, now: float) -> float | None:
        """When we give up on the peer's refresh and send BYE (RFC 4028 §10)."""
        if self.active is None or self.active.we_refresh:
            return None
        return now + self.active.interval - expiry_margin(self.active.interval)
