"""A daemon-like process for crash tests: one control plane with the fake switch, configured
from a TOML file, until SIGTERM/SIGKILL. Prints ``READY <base_url>`` once serving.

    python -m tests.integration.control_api.node_proc CONFIG.toml [TALK_SECONDS]
"""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from control_api.config import load_config
from control_api.fake_backend import FakeBackend, FakeScript
from control_api.plane import build_control_plane
from switch.events import CallEventBus


async def main(path: str, talk_s: float) -> None:
    # logs to stderr: stdout carries only the READY line the test waits for
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    loaded = load_config(path, environ={})
    bus = CallEventBus()
    backend = FakeBackend(bus, script_for=lambda _r: FakeScript(talk_s=talk_s))
    plane = await build_control_plane(loaded, backend, bus)
    await plane.start()
    print(f"READY {plane.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await backend.hang_up_all()
    await plane.stop()


if __name__ == "__main__":
    # uvloop, like the daemon
    uvloop.run(main(sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.05))
