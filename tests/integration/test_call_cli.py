"""``voicecall call callback`` signs a click2Call like a vendor client and the node places
the call (SIPp answers as party A and B)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import (
    APP_KEY,
    APP_SECRET,
    CALLEE,
    CALLER,
    DISPLAY,
    ServiceNode,
    wait_peer,
)

pytestmark = pytest.mark.integration


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


async def test_call_callback_command_places_a_signed_callback(tmp_path: Path,
                                                              receiver: Receiver) -> None:
    node = ServiceNode(tmp_path, receiver).start()
    try:
        a = node.party("A", "uas_basic.xml")
        b = node.party("B", "uas_bye_far.xml")
        out = subprocess.run(
            [sys.executable, "-m", "control_api.cli", "call",
             "--api", f"http://127.0.0.1:{node.api_port}", "--app-key", APP_KEY,
             "--app-secret", APP_SECRET, "callback", "--display", DISPLAY,
             "--caller", CALLER, "--callee", CALLEE],
            capture_output=True, text=True, timeout=30, check=False)
        assert out.returncode == 0, out.stderr + out.stdout
        answer = json.loads(out.stdout)
        assert answer["resultcode"] == "0" and answer["sessionId"]
        ra, rb = await wait_peer(a), await wait_peer(b)
        assert ra.ok, ra.explain() + node.log()[-3000:]
        assert rb.ok, rb.explain() + node.log()[-3000:]
    finally:
        node.stop()


def test_call_command_without_credentials_explains(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[node]\nname = "x"\n')
    out = subprocess.run([sys.executable, "-m", "control_api.cli", "call", "--config", str(cfg),
                          "stop", "--session", "s1"], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 2 and "no app key" in out.stderr


async def test_demo_webhook_receiver_logs_and_accepts(tmp_path: Path, receiver: Receiver) -> None:
    node = ServiceNode(tmp_path, receiver, extra_toml="").start()
    try:
        import httpx
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"http://127.0.0.1:{node.api_port}/demo/webhooks/status",
                             json={"eventType": "callout", "statusInfo": {"sessionId": "s"}})
        # Off unless [api] demo_webhooks = true (only the embedded demo turns it on).
        assert r.status_code == 404
    finally:
        node.stop()
    cfg = node.config().replace("[api]\n", "[api]\ndemo_webhooks = true\n")
    node2 = ServiceNode(tmp_path / "2", receiver)
    (tmp_path / "2").mkdir()
    node2.config = lambda: cfg.replace(str(node.api_port), str(node2.api_port)).replace(  # type: ignore[method-assign]
        str(node.sip_port), str(node2.sip_port))
    node2.start()
    try:
        import httpx
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.post(f"http://127.0.0.1:{node2.api_port}/demo/webhooks/status",
                             json={"eventType": "callout", "statusInfo": {"sessionId": "s"}})
        assert r.status_code == 200 and r.json()["resultcode"] == "0"
        import time
        deadline = time.monotonic() + 5
        while "demo_webhook_received" not in node2.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "demo_webhook_received" in node2.log() and "callout" in node2.log()
    finally:
        node2.stop()
