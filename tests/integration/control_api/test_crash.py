"""kill -9 of a node process between CDR retries, during a delivery and during a call; after a
restart on the same database every CDR still reaches the receiver (EV-4, at-least-once)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.control_api.conftest import write_prompts
from tests.integration.control_api.helpers import Receiver, aksk_headers, b64, free_port, node_toml
from tests.integration.control_api.test_api import CB, cb_body
from tests.paths import REPO


@dataclass
class NodeProc:
    proc: subprocess.Popen[bytes]
    base_url: str

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


Spawn = Callable[..., Awaitable[NodeProc]]


@pytest.fixture
async def spawn(tmp_path: Path, db_url: str) -> AsyncIterator[Spawn]:
    procs: list[subprocess.Popen[bytes]] = []
    data_dir = tmp_path / "node"
    write_prompts(data_dir)
    cfg = tmp_path / "node.toml"
    text = node_toml(data_dir=str(data_dir), db_url=db_url, port=free_port())
    text = text.replace("cdr_retry_interval_s = 0.5", "cdr_retry_interval_s = 1.5")
    text = text.replace("cdr_max_retries = 2", "cdr_max_retries = 6")
    cfg.write_text(text)

    async def start(talk_s: float = 0.05) -> NodeProc:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.control_api.node_proc", str(cfg),
             str(talk_s)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.startswith(b"READY "), line
        return NodeProc(proc, line.split()[1].decode())

    yield start
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


async def call(node: NodeProc, body: dict[str, object]) -> str:
    async with httpx.AsyncClient(base_url=node.base_url, timeout=10) as c:
        r = await c.post(CB, json=body, headers=aksk_headers())
        assert r.status_code == 200, r.text
        return str(r.json()["sessionId"])


async def test_kill9_between_retries_then_restart(spawn: Spawn, receiver: Receiver) -> None:
    receiver.modes["/fee"] = "fail"
    node = await spawn()
    sid = await call(node, cb_body(feeUrl=b64(receiver.url("/fee"))))
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1, timeout=15)
    node.kill9()                                      # the next retry was 1.5 s away
    receiver.modes["/fee"] = "ok"
    await asyncio.sleep(2.0)
    assert len(receiver.on("/fee")) == 1              # nobody delivers while it is down
    await spawn()
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 2, timeout=20)
    assert receiver.on("/fee")[-1].body["feeLst"][0]["sessionId"] == sid


async def test_kill9_during_delivery_is_redelivered(spawn: Spawn, receiver: Receiver) -> None:
    receiver.modes["/fee"] = "hang"
    node = await spawn()
    sid = await call(node, cb_body(feeUrl=b64(receiver.url("/fee"))))
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1, timeout=15)
    node.kill9()                                      # the POST is in flight
    receiver.modes["/fee"] = "ok"
    await spawn()
    await receiver.wait_for(lambda: len(receiver.on("/fee")) >= 2, timeout=20)
    assert receiver.on("/fee")[-1].body["feeLst"][0]["sessionId"] == sid


async def test_kill9_during_call_closes_it_after_restart(spawn: Spawn,
                                                        receiver: Receiver) -> None:
    node = await spawn(60.0)
    sid = await call(node, cb_body(feeUrl=b64(receiver.url("/fee"))))
    await asyncio.sleep(0.3)
    node.kill9()
    assert receiver.on("/fee") == []
    await spawn()
    await receiver.wait_for(lambda: len(receiver.on("/fee")) == 1, timeout=20)
    fee = receiver.on("/fee")[0].body["feeLst"][0]
    assert fee["sessionId"] == sid and fee["ulFailReason"] == 517
