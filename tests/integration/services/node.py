"""A whole node (daemon subprocess) with SIPp gateways for the A and B parties and a real
webhook receiver: the setting of every end-to-end service test."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile

from tests.integration.control_api.helpers import Receiver, aksk_headers
from tests.integration.harness import Daemon, Sipp, free_port, uas

APP_KEY = "svc-app-key"
APP_SECRET = "svc-app-secret"
DISPLAY = "+8675500000001"
DISPLAY_B = "+8675500000002"
CALLER = "+8613800000011"   # routed to the gateway "gwa" (party A)
CALLEE = "+8613900000022"   # routed to the gateway "gwb" (party B)


# name, frequency (Hz), seconds
PLAY_FILES = [("tone600_1s.wav", 600.0, 1.0), ("tone800_2s.wav", 800.0, 2.0),
              ("pre_05s.wav", 500.0, 0.5), ("pos_05s.wav", 700.0, 0.5),
              ("long_8s.wav", 400.0, 8.0)]


def alaw_wav(path: Path, freq: float, seconds: float) -> Path:
    t = np.arange(int(seconds * 8000)) / 8000.0
    soundfile.write(str(path), 0.3 * np.sin(2 * np.pi * freq * t), 8000, subtype="ALAW")
    return path


@dataclass
class ServiceNode:
    workdir: Path
    receiver: Receiver
    extra_toml: str = ""
    app_extra: str = ""            # more keys of the [[apps]] table (max_concurrent_calls …)
    sip_extra: str = ""            # more keys of the [sip] table
    no_answer_timeout_s: int = 4
    sip_port: int = field(default_factory=free_port)
    api_port: int = field(default_factory=free_port)
    gwa_port: int = field(default_factory=free_port)
    gwb_port: int = field(default_factory=free_port)
    daemon: Daemon | None = None
    peers: list[Sipp] = field(default_factory=list)

    def config(self) -> str:
        status = self.receiver.url("/status")
        fee = self.receiver.url("/fee")
        return f"""
[node]
name = "vc1"
data_dir = "./data"

[sip]
listen = ["udp:127.0.0.1:{self.sip_port}"]
no_answer_timeout_s = {self.no_answer_timeout_s}
{self.sip_extra}

[api]
listen = "127.0.0.1:{self.api_port}"

[webhooks]
timeout_s = 5
cdr_retry_interval_s = 2

[log]
level = "info"

[[gateways]]
name = "gwa"
address = "udp:127.0.0.1:{self.gwa_port}"
ping_interval_s = 0

[[gateways]]
name = "gwb"
address = "udp:127.0.0.1:{self.gwb_port}"
ping_interval_s = 0

[[routes]]
prefix = "+861380"
gateways = ["gwa"]

[[routes]]
prefix = "+861390"
gateways = ["gwb"]

[[accounts]]
id = "sp1"

[[apps]]
account = "sp1"
app_key = "{APP_KEY}"
app_secret = "{APP_SECRET}"
status_url = "{status}"
fee_url = "{fee}"
record = true
{self.app_extra}

[[numbers]]
account = "sp1"
number = "{DISPLAY}"
kind = "display"

[[numbers]]
account = "sp1"
number = "{DISPLAY_B}"
kind = "display"
{self.extra_toml}
"""

    def start(self) -> ServiceNode:
        # Approved play files (PR-APPROVE) and a TTS template for the notification and
        # verification tests: short A-law tones of known length and pitch.
        for name, freq, secs in PLAY_FILES:
            alaw_wav(self.workdir / name, freq, secs)
        self.extra_toml += "".join(
            f'\n[[play_files]]\naccount = "sp1"\nname = "{name}"\n'
            f'path = "{self.workdir / name}"\n' for name, _, _ in PLAY_FILES)
        self.extra_toml += ('\n[[templates]]\naccount = "sp1"\nid = "tpl_code"\n'
                            'text = "Your code is ${NUM_6}"\n')
        self.daemon = Daemon(self.config(), self.workdir).start()
        return self

    def party(self, which: str, scenario: str | Path, *, calls: int = 1,
              extra: Sequence[str] = (), timeout_s: int = 30) -> Sipp:
        port = self.gwa_port if which == "A" else self.gwb_port
        mp = free_port()
        p = uas(self.workdir, scenario, port=port, calls=calls, extra=("-mp", str(mp), *extra),
                timeout_s=timeout_s)
        p.media_port = mp      # type: ignore[attr-defined]  # where its RTP arrives
        self.peers.append(p)
        return p.start()

    async def post(self, path: str, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10) as c:
            return await c.post(f"http://127.0.0.1:{self.api_port}{path}", json=body,
                                headers=aksk_headers(APP_KEY, APP_SECRET))

    async def get(self, path: str, **params: str) -> httpx.Response:
        async with httpx.AsyncClient(timeout=10, follow_redirects=False) as c:
            return await c.get(f"http://127.0.0.1:{self.api_port}{path}", params=params,
                               headers=aksk_headers(APP_KEY, APP_SECRET))

    def log(self) -> str:
        return self.daemon.drain() if self.daemon else ""

    def stop(self) -> None:
        for p in self.peers:
            p.stop()
        if self.daemon is not None:
            self.daemon.stop()


async def wait_peer(p: Sipp, timeout: float = 30.0) -> Any:
    return await asyncio.to_thread(p.wait, timeout)


def statuses(receiver: Receiver, session_id: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for r in receiver.on("/status"):
        info = r.body.get("statusInfo", {}) if isinstance(r.body, dict) else {}
        if info.get("sessionId") == session_id:
            out.append((r.body["eventType"], info))
    # Extension statusInfo.seq (1, 2, … per call, in emission order) orders pushes that
    # overtook each other on the way.
    out.sort(key=lambda e: e[1].get("seq", 0))
    return out


def fees(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    out = []
    for r in receiver.on("/fee"):
        for item in r.body.get("feeLst", []) if isinstance(r.body, dict) else []:
            if item.get("sessionId") == session_id:
                out.append(item)
    return out


CLICK2CALL = "/rest/httpsessions/click2Call/v2.0"
CALLNOTIFY = "/rest/httpsessions/callnotify/v2.0"
CALLVERIFY = "/rest/httpsessions/callVerify/v1.0"
CALLSTOP = "/rest/httpsessions/callStop/v2.0"


def callback_body(**kw: object) -> dict[str, object]:
    b: dict[str, object] = {"displayNbr": DISPLAY, "callerNbr": CALLER,
                            "displayCalleeNbr": DISPLAY_B, "calleeNbr": CALLEE}
    b.update(kw)
    return b


def by_leg(events: list[tuple[str, dict[str, Any]]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Events grouped by the dialled party of their leg (``called``); collectInfo (no
    ``called``) goes with the leg it was collected on, the only one of a notification."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    last = ""
    for kind, info in events:
        called = info.get("called") or last
        last = called
        out.setdefault(called, []).append((kind, info))
    return out


def assert_leg_lifecycle(events: list[tuple[str, dict[str, Any]]], legs: dict[str, int | None],
                         ) -> None:
    """Each leg in ``legs`` (called number → expected stateCode, None = any) starts with
    callout and ends with exactly one disconnect, last; no other leg has events."""
    seqs = [i.get("seq") for _, i in events]
    assert seqs == list(range(1, len(events) + 1)), seqs     # per-call sequence, no gaps
    # Extension recordingStatus: at most one, the very last push of the call.
    rec = [k for k, _ in events if k == "recordingStatus"]
    assert len(rec) <= 1 and (not rec or events[-1][0] == "recordingStatus"), events
    grouped = by_leg([e for e in events if e[0] != "recordingStatus"])
    assert set(grouped) == set(legs), (sorted(grouped), events)
    order = ["callout", "alerting", "answer", "collectInfo", "disconnect"]
    for called, expect in legs.items():
        kinds = [k for k, _ in grouped[called]]
        assert kinds[0] == "callout", (called, kinds)
        assert kinds.count("disconnect") == 1 and kinds[-1] == "disconnect", (called, kinds)
        assert kinds.count("answer") <= 1 and kinds.count("alerting") <= 1, (called, kinds)
        ranks = [order.index(k) for k in kinds]
        assert ranks == sorted(ranks), (called, kinds)
        if expect is not None:
            assert grouped[called][-1][1]["stateCode"] == expect, (called, grouped[called])


def recording_status(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    return [i for k, i in statuses(receiver, session_id) if k == "recordingStatus"]


async def wait_closed(receiver: Receiver, session_id: str, *, legs: int,
                      timeout: float = 20.0) -> dict[str, Any]:
    """Wait for the CDR and ``legs`` disconnects (status pushes may trail the CDR a bit)."""
    await receiver.wait_for(lambda: len(fees(receiver, session_id)) >= 1 and sum(
        1 for k, _ in statuses(receiver, session_id) if k == "disconnect") >= legs,
        timeout=timeout)
    await asyncio.sleep(0.3)   # anything extra (a duplicate) would show up now
    cdrs = fees(receiver, session_id)
    assert len(cdrs) == 1, cdrs
    return cdrs[0]
