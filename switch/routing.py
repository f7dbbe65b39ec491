"""Call routing (sans-I/O): a number that belongs to a ``[[users]]`` entry goes to that
softphone; any other number goes to the gateways of the longest matching ``[[routes]]`` prefix,
in order, skipping gateways whose health probe says they are down."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from switch.config import RouteConfig, UserConfig


@dataclass(frozen=True, slots=True)
class ToUser:
    username: str
    number: str


@dataclass(frozen=True, slots=True)
class ToGateways:
    prefix: str
    gateways: tuple[str, ...]       # healthy ones first, in configured order
    skipped: tuple[str, ...] = ()   # configured but currently down


@dataclass(frozen=True, slots=True)
class NoRoute:
    number: str


RouteDecision = ToUser | ToGateways | NoRoute


def normalize_number(user_part: str) -> str:
    """The dialled number from a Request-URI user part: visual separators removed
    (RFC 3966 §5.1.1), URI parameters of a ``tel``-style user part dropped."""
    number = user_part.split(";", 1)[0]
    return "".join(ch for ch in number if ch not in "-.() ")


class Router:
    def __init__(self, routes: Sequence[RouteConfig], users: Sequence[UserConfig]) -> None:
        # Longest prefix first; ties keep configuration order.
        self._routes = sorted(routes, key=lambda r: -len(r.prefix))
        self._users_by_number = {u.number: u for u in users}
        self._users_by_name = {u.username: u for u in users}

    def user_for(self, number: str) -> UserConfig | None:
        """A ``[[users]]`` entry by its E.164 number or its username (softphones often dial
        each other by extension); ``+`` is optional when the number is otherwise exact."""
        u = self._users_by_number.get(number) or self._users_by_name.get(number)
        if u is None and not number.startswith("+"):
            u = self._users_by_number.get("+" + number)
        return u

    def route(self, number: str, is_healthy: Callable[[str], bool] = lambda _: True) -> RouteDecision:
        number = normalize_number(number)
        user = self.user_for(number)
        if user is not None:
            return ToUser(user.username, user.number)
        for r in self._routes:
            if number.startswith(r.prefix) or (
                r.prefix.startswith("+") and not number.startswith("+")
                and ("+" + number).startswith(r.prefix)
            ):
                healthy = tuple(g for g in r.gateways if is_healthy(g))
                skipped = tuple(g for g in r.gateways if g not in healthy)
                return ToGateways(r.prefix, healthy, skipped)
        return NoRoute(number)
