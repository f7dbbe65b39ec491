"""Real SIPp peers through the running daemon: SIPp UAC → voicecall B2BUA → SIPp UAS.

The UAC is configured as a gateway (calls from a configured gateway address are trusted),
the UAS is the carrier gateway the route points at."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.integration.harness import Daemon, free_port, running, uac, uas

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

{gw_toml}
{route_toml}
"""


def start_pair(workdir: Path, uas_scenario: str, *, transport: str = "u1",
               gw_transport: str = "udp", uac_scenario: str = "uac_basic.xml",
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
