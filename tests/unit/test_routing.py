"""[[routes]] by longest prefix, [[users]] numbers to their softphone, dead gateways skipped."""

from __future__ import annotations

from switch.config import RouteConfig, UserConfig
from switch.routing import NoRoute, Router, ToGateways, ToUser, normalize_number

ROUTES = [
    RouteConfig(prefix="+86", gateways=("gw1", "gw2")),
    RouteConfig(prefix="+8610", gateways=("bj",)),
    RouteConfig(prefix="", gateways=("default",)),
]
USERS = [UserConfig(username="1001", password="x", number="+8613800000001")]


def test_user_number_goes_to_softphone_even_if_a_route_matches() -> None:
    r = Router(ROUTES, USERS)
    assert r.route("+8613800000001") == ToUser("1001", "+8613800000001")
    assert r.route("1001") == ToUser("1001", "+8613800000001")
    assert r.route("8613800000001") == ToUser("1001", "+8613800000001")


def test_longest_prefix_wins() -> None:
    r = Router(ROUTES, USERS)
    assert r.route("+861012345678") == ToGateways("+8610", ("bj",))
    assert r.route("+8675512345678") == ToGateways("+86", ("gw1", "gw2"))
    assert r.route("+4420000000") == ToGateways("", ("default",))


def test_plus_is_optional_for_prefix_match() -> None:
    r = Router(ROUTES, USERS)
    assert r.route("861012345678") == ToGateways("+8610", ("bj",))


def test_unhealthy_gateways_are_skipped_in_order() -> None:
    r = Router(ROUTES, USERS)
    d = r.route("+8675512345678", is_healthy=lambda g: g != "gw1")
    assert d == ToGateways("+86", ("gw2",), skipped=("gw1",))


def test_no_route() -> None:
    r = Router([RouteConfig(prefix="+86", gateways=("gw1",))], [])
    assert r.route("+1555") == NoRoute("+1555")


def test_normalize_number_strips_visual_separators() -> None:
    assert normalize_number("+86-755-1234.5678") == "+8675512345678"
    assert normalize_number("+8613800000001;phone-context=x") == "+8613800000001"
