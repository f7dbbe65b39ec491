"""Real SIPp peers through the running daemon: SIPp UAC → voicecall B2BUA → SIPp UAS.

The UAC is configured as a gateway (calls from a configured gateway address are trusted),
the UAS is the carrier gateway the route points at."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, free_port, running, uac, uas
from tests.integration.scenario_gen import uac_expect_failure, uas_reject, uas_ring_until_cancel

pytestmark = pytest.mark.integration

CALLEE = "+8675512345678"


def node_config(sip_port: int, *, gateways: list[tuple[str, str, int, str]],
                routes: list[tuple[str, list[str]]], extra_sip: str = "",
                gateway_extra: dict[str, str] | None = None) -> str:
    gw_toml = ""
    for name, transport, port, _role in gateways:
        extra = (gateway_extra or {}).get(name, "")
        gw_toml += (f'[[gateways]]\nname = "{name}"\naddress = "{transport}:127.0.0.1:{port}"\n'
                    f"ping_interval_s = 0\n{extra}\n")
    route_toml = "".join(
        f'[[routes]]\nprefix = "{p}"\ngateways = [{", ".join(repr(g) for g in gws)}]\n'
        for p, gws in routes).replace("'", '"')
    return f"""
[node]
name = "it1"
data_dir = "./data"

[sip]
listen = ["udp:127.0.0.1:{sip_port}", "tcp:127.0.0.1:{sip_port}"]
advertise = "127.0.0.1"
{extra_sip}

[api]
listen = "127.0.0.1:0"

{gw_toml}
{route_toml}
"""


def start_pair(workdir: Path, uas_scenario: str | Path, *, transport: str = "u1",
               gw_transport: str = "udp", uac_scenario: str | Path = "uac_basic.xml",
               extra_sip: str = "", gateway_extra: dict[str, str] | None = None,
               uas_extra: tuple[str, ...] = (), uac_extra: tuple[str, ...] = ("-d", "500"),
               timeout_s: int = 30):
    sip_port, uac_port, uas_port = free_port(), free_port(), free_port()
    cfg = node_config(sip_port, gateways=[("uac", gw_transport, uac_port, "in"),
                                          ("carrier", gw_transport, uas_port, "out")],
                      routes=[("+86", ["carrier"])], extra_sip=extra_sip,
                      gateway_extra=gateway_extra)
    daemon = Daemon(cfg, workdir)
    callee = uas(workdir, uas_scenario, port=uas_port, transport=transport,
                 extra=("-mp", str(free_port()), *uas_extra), timeout_s=timeout_s)
    caller = uac(workdir, uac_scenario, f"127.0.0.1:{sip_port}", port=uac_port, service=CALLEE,
                 transport=transport, extra=("-mp", str(free_port()), *uac_extra),
                 timeout_s=timeout_s)
    return daemon, caller, callee


def run_call(daemon: Daemon, caller, callee, timeout: float = 40.0):
    with daemon, running(caller, callee):
        callee.start()
        time.sleep(0.3)
        caller.start()
        r_uac = caller.wait(timeout)
        r_uas = callee.wait(timeout)
        return r_uac, r_uas, daemon.drain()


def test_basic_call_udp(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, "uas_basic.xml")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    # The B2BUA made two dialogs: the gateway saw our Call-ID, not the caller's.
    assert r_uas.count(r"INVITE sip:\+8675512345678@127\.0\.0\.1") >= 1
    assert "180 Ringing" in r_uac.messages


def test_reliable_183_from_gateway_is_pracked_and_relayed(workdir: Path) -> None:
    """The gateway sends 183 + Require: 100rel with SDP and insists on PRACK; the caller
    (no 100rel) still gets the early-media SDP in a 183."""
    daemon, caller, callee = start_pair(workdir, "uas_100rel.xml")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.count(r"PRACK sip:") >= 1
    assert "183 Session Progress" in r_uac.messages


@pytest.mark.parametrize("scenario", ["uas_407.xml", "uas_401.xml"])
def test_gateway_digest_challenge_is_answered(workdir: Path, scenario: str) -> None:
    """407 (Proxy-Authorization checked by pattern) and 401 (Authorization verified by
    SIPp's own digest computation, ``verifyauth``)."""
    daemon, caller, callee = start_pair(
        workdir, scenario,
        gateway_extra={"carrier": 'username = "gwuser"\npassword = "gwpass"'})
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.count("Authorization: Digest") >= 1
    # §22.2: the retry keeps Call-ID and From tag and takes the next CSeq.
    assert r_uas.count(r"CSeq: 2 INVITE") >= 1


def test_gateway_reinvite_and_update_mid_call_are_relayed(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, "uas_reinvite_update.xml",
                                        uac_scenario="uac_reinvite_update.xml")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]


@pytest.mark.parametrize(("status", "reason", "expected"), [
    (486, "Busy Here", 486),
    (404, "Not Found", 404),
    (480, "Temporarily Unavailable", 480),
])
def test_callee_failure_is_mapped_to_caller(workdir: Path, status: int, reason: str,
                                            expected: int) -> None:
    daemon, caller, callee = start_pair(workdir, uas_reject(workdir, status, reason),
                                        uac_scenario=uac_expect_failure(workdir, expected))
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]


def test_no_answer_is_cancelled_after_timeout(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, uas_ring_until_cancel(workdir),
                                        uac_scenario=uac_expect_failure(workdir, 480),
                                        extra_sip="no_answer_timeout_s = 2")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]


def test_bye_from_far_side_ends_both_dialogs(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, "uas_bye_far.xml",
                                        uac_scenario="uac_expect_bye.xml")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]


def test_basic_call_over_tcp(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, "uas_basic.xml", transport="t1",
                                        gw_transport="tcp")
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert "TCP message received" in r_uas.messages


def test_dead_gateway_fails_over_to_the_next(workdir: Path) -> None:
    """The first gateway of the route does not answer at all (nothing listens there):
    Timer B fires (T1 = 100 ms → 6.4 s) and the call goes to the second gateway."""
    sip_port, uac_port, uas_port, dead_port = free_port(), free_port(), free_port(), free_port()
    cfg = node_config(sip_port, gateways=[("uac", "udp", uac_port, "in"),
                                          ("dead", "udp", dead_port, "out"),
                                          ("carrier", "udp", uas_port, "out")],
                      routes=[("+86", ["dead", "carrier"])], extra_sip="t1_ms = 100")
    daemon = Daemon(cfg, workdir)
    callee = uas(workdir, "uas_basic.xml", port=uas_port, extra=("-mp", str(free_port())))
    caller = uac(workdir, "uac_basic.xml", f"127.0.0.1:{sip_port}", port=uac_port,
                 service=CALLEE, extra=("-mp", str(free_port()), "-d", "500"))
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uac.ok, r_uac.explain() + log[-3000:]
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert "failover" in log


def test_dead_gateway_is_skipped_after_failed_options_probe(workdir: Path) -> None:
    """With OPTIONS probing on, a gateway that never answers is marked down and later
    calls skip it without waiting for Timer B."""
    sip_port, uac_port, uas_port, dead_port = free_port(), free_port(), free_port(), free_port()
    cfg = node_config(sip_port, gateways=[("uac", "udp", uac_port, "in"),
                                          ("dead", "udp", dead_port, "out"),
                                          ("carrier", "udp", uas_port, "out")],
                      routes=[("+86", ["dead", "carrier"])], extra_sip="t1_ms = 50",
                      gateway_extra={"dead": "ping_interval_s = 1"}).replace(
        f'name = "dead"\naddress = "udp:127.0.0.1:{dead_port}"\nping_interval_s = 0',
        f'name = "dead"\naddress = "udp:127.0.0.1:{dead_port}"')
    daemon = Daemon(cfg, workdir)
    callee = uas(workdir, "uas_basic.xml", port=uas_port, extra=("-mp", str(free_port())))
    caller = uac(workdir, "uac_basic.xml", f"127.0.0.1:{sip_port}", port=uac_port,
                 service=CALLEE, extra=("-mp", str(free_port()), "-d", "200"))
    with daemon, running(caller, callee):
        deadline = time.monotonic() + 15
        while "gateway state changed" not in daemon.drain() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "gateway state changed" in daemon.drain(), daemon.drain()[-2000:]
        callee.start()
        time.sleep(0.3)
        started = time.monotonic()
        caller.start()
        r_uac = caller.wait(30)
        elapsed = time.monotonic() - started
        r_uas = callee.wait(30)
    assert r_uac.ok, r_uac.explain()
    assert r_uas.ok, r_uas.explain()
    assert "failover" not in daemon.drain()  # never tried the dead one
    assert elapsed < 3.2  # T1=50 ms: Timer B would be 3.2 s


def test_cancel_from_caller_is_propagated_to_callee(workdir: Path) -> None:
    daemon, caller, callee = start_pair(workdir, uas_ring_until_cancel(workdir),
                                        uac_scenario="uac_cancel.xml", uac_extra=())
    r_uac, r_uas, log = run_call(daemon, caller, callee)
    assert r_uas.ok, r_uas.explain() + log[-3000:]
    assert r_uac.ok, r_uac.explain() + log[-3000:]


def test_outbound_registration_to_gateway_answers_the_challenge(workdir: Path) -> None:
    """``register = true``: the node REGISTERs to the gateway, answers its 401 with the
    gateway credentials, and the registrar (SIPp, ``verifyauth``) accepts the digest."""
    sip_port, reg_port = free_port(), free_port()
    cfg = node_config(sip_port, gateways=[("carrier", "udp", reg_port, "out")],
                      routes=[("+86", ["carrier"])],
                      gateway_extra={"carrier": 'username = "gwuser"\npassword = "gwpass"\n'
                                                'register = true\nregister_expires_s = 120'})
    registrar = uas(workdir, "uas_registrar.xml", port=reg_port, timeout_s=20)
    with running(registrar):
        registrar.start()
        time.sleep(0.3)
        with Daemon(cfg, workdir) as daemon:
            result = registrar.wait(20)
            time.sleep(0.3)
            log = daemon.drain()
    assert result.ok, result.explain() + log[-3000:]
    assert "gateway registration" in log and "status=200" in log, log[-3000:]
