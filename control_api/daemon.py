"""Composition root: builds one node (switch + media + control API) from a ``Config`` and runs
it on uvloop until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys

import structlog
import uvloop

from control_api.config import LoadedConfig

log = structlog.get_logger("voicecall.daemon")


async def serve(loaded: LoadedConfig, stop: asyncio.Event) -> None:
    for w in loaded.warnings:
        log.warning("config", detail=w)
    await stop.wait()


def run_daemon(loaded: LoadedConfig) -> int:
    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(loaded, stop)

    try:
        uvloop.run(main())
    except OSError as e:
        print(f"voicecall: cannot start: {e}", file=sys.stderr)
        return 1
    return 0
