"""``[log] format = "json"``: the real daemon logs one JSON object per line on stderr, and the
lines about a call placed through the signed API carry its ``session_id`` and ``app_key``
(control plane) and, on the switch side, the SIP ``call_id`` of its legs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.integration.control_api.helpers import Receiver
from tests.integration.harness import Daemon
from tests.integration.services.node import (
    APP_KEY,
    CLICK2CALL,
    ServiceNode,
    callback_body,
    wait_closed,
    wait_peer,
)
from tests.integration.test_sip_trace_api import trying_uas
from tests.paths import REPO

pytestmark = pytest.mark.integration


@dataclass
class StderrDaemon(Daemon):
    """The daemon with stderr (the log) kept apart from stdout (banner, ``ready``)."""

    stderr_path: Path | None = None
    _err: Any = field(default=None, repr=False)

    def start(self, timeout: float = 20.0) -> StderrDaemon:
        cfg = self.workdir / "voicecall.toml"
        cfg.write_text(self.config_text, encoding="utf-8")
        self.stderr_path = self.workdir / "stderr.log"
        self._err = self.stderr_path.open("w", encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
        env.pop("VOICECALL_CONFIG", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "control_api.cli", "serve", "--config", str(cfg)],
            cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=self._err, text=True,
            bufsize=1)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,),
                                        daemon=True)
        self._reader.start()
        if self._ready.wait(timeout) and self.proc.poll() is None:
            return self
        self.stop()
        raise RuntimeError("daemon did not become ready:\n" + self.stderr())

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8") if self.stderr_path else ""

    def stop(self) -> None:
        super().stop()
        if self._err is not None:
            self._err.close()
            self._err = None


class JsonLogNode(ServiceNode):
    def config(self) -> str:
        text = super().config()
        assert '[log]\nlevel = "info"\n' in text
        return text.replace('[log]\nlevel = "info"\n', '[log]\nlevel = "info"\nformat = "json"\n')

    def start(self) -> JsonLogNode:
        self.daemon = StderrDaemon(self.config(), self.workdir).start()
        return self


@dataclass
class CallLog:
    sid: str
    stderr: str
    sip_call_ids: set[str]          # what the gateways saw in Call-ID headers
    records: list[dict[str, Any]] = field(default_factory=list)


async def _one_call(workdir: Path) -> CallLog:
    receiver = await Receiver().start()
    node = JsonLogNode(workdir, receiver).start()
    try:
        a = node.party("A", trying_uas("json_a").ring().answer().wait_bye().write(workdir))
        b = node.party("B", trying_uas("json_b").ring().answer().pause(500).bye().write(workdir))
        r = await node.post(CLICK2CALL, callback_body())
        assert r.status_code == 200, r.text
        sid = str(r.json()["sessionId"])
        ra, rb = await wait_peer(a, 40), await wait_peer(b, 40)
        assert ra.ok and rb.ok, ra.explain() + rb.explain()
        await wait_closed(receiver, sid, legs=2, timeout=30)
    finally:
        daemon = node.daemon
        node.stop()                   # everything the call and the shutdown log is flushed
        await receiver.stop()
    assert isinstance(daemon, StderrDaemon)
    ids = set(re.findall(r"^Call-ID: *(\S+)", ra.messages + rb.messages, re.M))
    return CallLog(sid, daemon.stderr(), ids)


@pytest.fixture(scope="module")
def call_log(tmp_path_factory: pytest.TempPathFactory) -> CallLog:
    """One callback through the signed API on a node logging JSON, for all tests here."""
    log = asyncio.run(_one_call(tmp_path_factory.mktemp("jsonlog")))
    log.records = parse_lines(log.stderr)
    return log


def parse_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for i, line in enumerate(text.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line {i + 1} is not JSON: {line!r}") from None
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def about_the_call(log: CallLog) -> list[dict[str, Any]]:
    """Lines that name the call in any way: its session id anywhere (the media engine calls
    it ``call_id``), or one of its legs' SIP Call-IDs."""
    return [rec for rec in log.records
            if log.sid in json.dumps(rec) or rec.get("call_id") in log.sip_call_ids]


def test_every_stderr_line_is_a_json_object_with_timestamp_level_event(call_log: CallLog,
                                                                        ) -> None:
    assert len(call_log.records) >= 5, call_log.stderr
    for rec in call_log.records:
        assert {"timestamp", "level", "event"} <= rec.keys(), rec
        assert rec["level"] in ("debug", "info", "warning", "error", "critical"), rec
        assert datetime.fromisoformat(rec["timestamp"]).utcoffset() == timedelta(0), rec


def test_control_plane_lines_of_the_call_carry_session_and_app(call_log: CallLog) -> None:
    mine = [rec for rec in call_log.records if rec.get("session_id") == call_log.sid]
    events = {rec["event"] for rec in mine}
    # admission, the close with its CDR row, the CDR delivery
    assert {"call_accepted", "call_closed", "cdr_delivered"} <= events, sorted(events)
    assert all(rec.get("app_key") == APP_KEY for rec in mine), [
        rec for rec in mine if rec.get("app_key") != APP_KEY]


def test_a_line_of_the_call_names_a_sip_call_id(call_log: CallLog) -> None:
    assert len(call_log.sip_call_ids) == 2, call_log.sip_call_ids
    named = [rec for rec in call_log.records if rec.get("session_id") == call_log.sid
             and rec.get("call_id") in call_log.sip_call_ids]
    assert named, [rec for rec in about_the_call(call_log)]
    assert all(rec.get("app_key") == APP_KEY for rec in named)
    # the session's end pairs it with both legs' Call-IDs on one line
    legs = [rec for rec in named if rec["event"] == "call_legs"]
    assert len(legs) == 1, named
    assert {legs[0]["call_id"], legs[0]["b_call_id"]} == call_log.sip_call_ids, legs


def test_every_line_about_the_call_carries_session_and_app(call_log: CallLog) -> None:
    """Control plane and switch alike: admission, media, SIP sessions, the legs' Call-IDs,
    the close and the CDR delivery."""
    about = about_the_call(call_log)
    missing = [rec for rec in about
               if rec.get("session_id") != call_log.sid or rec.get("app_key") != APP_KEY]
    assert not missing, missing
    events = {rec["event"] for rec in about}
    assert {"media_negotiated", "session ended", "call_legs"} <= events, sorted(events)
