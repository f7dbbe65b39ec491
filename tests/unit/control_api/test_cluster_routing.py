"""The forwarding decisions of control_api/cluster.py: where a request about another node's
call goes (by that node's ``nodes`` row and heartbeat), and how the owner's answer becomes the
callStop result of the receiving node."""

from __future__ import annotations

import json

import httpx
import pytest

from control_api.cluster import (
    GONE_DESC,
    NODE_HEADER,
    Forward,
    OwnerDown,
    OwnerUnknown,
    api_url_for,
    owner_down_error,
    owner_unknown_error,
    relay_stop_answer,
    route_to_owner,
)
from control_api.codes import ApiError, Code
from control_api.config import ConfigError, parse_config

NOW = 1_800_000_000_000


def peer(beat: int, url: str = "http://10.0.0.11:8080") -> dict[str, object]:
    return {"name": "vc1", "api_url": url, "started_at": NOW - 60_000, "heartbeat_at": beat}


# -- route_to_owner ------------------------------------------------------------------------------

def test_fresh_heartbeat_forwards_to_the_registered_address() -> None:
    assert route_to_owner("vc1", peer(NOW - 1_000, "http://10.0.0.11:8080/"), NOW) == \
        Forward("vc1", "http://10.0.0.11:8080")


def test_heartbeat_exactly_at_the_limit_is_still_fresh() -> None:
    assert isinstance(route_to_owner("vc1", peer(NOW - 10_000), NOW, 10.0), Forward)


def test_stale_heartbeat_means_the_owner_is_down() -> None:
    assert route_to_owner("vc1", peer(NOW - 10_001), NOW, 10.0) == OwnerDown("vc1", 10)
    assert route_to_owner("vc1", peer(NOW - 63_500), NOW, 10.0) == OwnerDown("vc1", 63)


def test_clean_stop_is_down_at_once() -> None:
    assert route_to_owner("vc1", peer(0), NOW) == OwnerDown("vc1", None)


def test_unregistered_owner_is_unknown() -> None:
    assert route_to_owner("vc1", None, NOW) == OwnerUnknown("vc1")
    assert route_to_owner("vc1", peer(NOW, url=""), NOW) == OwnerUnknown("vc1")


def test_owner_down_is_the_contracts_not_found() -> None:
    err = owner_down_error(OwnerDown("vc1", 63))
    assert (err.code, err.status) == (Code.NOT_FOUND, 404)
    assert err.desc.startswith(GONE_DESC[:-1]) and "vc1" in err.desc and "63 s" in err.desc
    assert "stopped" in owner_down_error(OwnerDown("vc1", None)).desc


def test_unknown_owner_is_a_retryable_internal_error() -> None:
    err = owner_unknown_error(OwnerUnknown("vc1"))
    assert (err.code, err.status) == (Code.INTERNAL, 500)
    assert "vc1" in err.desc and "retry" in err.desc


# -- relay_stop_answer ---------------------------------------------------------------------------

def answer(status: int, doc: object, node: str | None = "vc1") -> tuple[int, httpx.Headers,
                                                                        bytes]:
    headers = httpx.Headers({NODE_HEADER.lower(): node} if node is not None else {})
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return status, headers, body


def test_owner_success_is_relayed() -> None:
    out = relay_stop_answer("vc1", *answer(200, {"resultcode": "0", "resultdesc": "Success"}))
    assert out == {"resultcode": "0", "resultdesc": "Success"}


@pytest.mark.parametrize(("status", "code"), [(404, "1010404"), (500, "1010001")])
def test_owner_failure_is_relayed_exactly(status: int, code: str) -> None:
    out = relay_stop_answer("vc1", *answer(status, {"resultcode": code,
                                                    "resultdesc": "the owner's words"}))
    assert isinstance(out, ApiError)
    assert (out.code.value, out.status, out.desc) == (code, status, "the owner's words")


@pytest.mark.parametrize(("status", "doc", "node", "why"), [
    # another process at the registered address (a reused port, a load balancer)
    (404, {"resultcode": "1010404", "resultdesc": "x"}, "vc2", "from vc2"),
    (200, {"resultcode": "0", "resultdesc": "Success"}, None, "something else"),
    # the owner refused the cluster's admin token: a configuration error, not "not found"
    (401, {"resultcode": "1010003", "resultdesc": "Admin token missing or wrong."}, None,
     "admin_token"),
    # not a callStop answer, or status and code disagree
    (200, b"<html>", "vc1", "unexpected answer HTTP 200"),
    (405, {"resultcode": "1010006", "resultdesc": "Invalid Rest API."}, "vc1", "HTTP 405"),
    (200, {"resultcode": "1010404", "resultdesc": "x"}, "vc1", "HTTP 200"),
    (404, {"resultcode": 1010404, "resultdesc": "x"}, "vc1", "HTTP 404"),
    (200, ["0"], "vc1", "HTTP 200"),
])
def test_anything_else_is_an_internal_error(status: int, doc: object, node: str | None,
                                            why: str) -> None:
    out = relay_stop_answer("vc1", *answer(status, doc, node))
    assert isinstance(out, ApiError)
    assert (out.code, out.status) == (Code.INTERNAL, 500)
    assert "vc1" in out.desc and why in out.desc, out.desc


# -- api_url_for ---------------------------------------------------------------------------------

def test_internal_url_wins() -> None:
    assert api_url_for("http://vc1.internal:8080/", "0.0.0.0", 8080, "10.0.0.11") == \
        "http://vc1.internal:8080"


def test_bound_address_when_specific() -> None:
    assert api_url_for("", "10.0.0.11", 8080, "") == "http://10.0.0.11:8080"
    assert api_url_for("", "::1", 8080, "") == "http://[::1]:8080"


def test_wildcard_bind_uses_the_hosts_address() -> None:
    assert api_url_for("", "0.0.0.0", 8080, "10.0.0.11") == "http://10.0.0.11:8080"
    assert api_url_for("", "::", 8080, "fd00::11") == "http://[fd00::11]:8080"


# -- [api] internal_url ----------------------------------------------------------------------------

def test_internal_url_is_optional_and_checked() -> None:
    assert parse_config("", "t", environ={}).config.api.internal_url == ""
    cfg = parse_config('[api]\ninternal_url = "http://10.0.0.11:8080"\n', "t", environ={})
    assert cfg.config.api.internal_url == "http://10.0.0.11:8080"
    for bad in ("10.0.0.11:8080", "http://10.0.0.11:8080/api", "ftp://x"):
        with pytest.raises(ConfigError, match="internal_url"):
            parse_config(f'[api]\ninternal_url = "{bad}"\n', "t", environ={})
