"""Composition root: builds one node (switch + media + control API) from a ``Config`` and runs
it on uvloop until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

import structlog
import uvloop

from control_api.config import Config, LoadedConfig
from switch.node import SwitchNode, SwitchSettings

log = structlog.get_logger("voicecall.daemon")


def configure_logging(level_name: str, json_logs: bool) -> None:
    level = getattr(logging, level_name.upper(), logging.INFO)
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_logs else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def switch_settings(config: Config) -> SwitchSettings:
    return SwitchSettings(node=config.node, sip=config.sip, gateways=config.gateways,
                          routes=config.routes, users=config.users)


def _banner(config: Config, node: SwitchNode) -> str:
    lines = [f"voicecall node {config.node.name}"]
    for a in node.listening:
        lines.append(f"  SIP listening on {a} (advertised as {config.sip.advertise})")
    if config.users:
        lines.append("  softphone accounts (register to the SIP address above):")
        for u in config.users:
            lines.append(f"    user {u.username} / password {u.password} / number {u.number}")
    return "\n".join(lines)


async def serve(loaded: LoadedConfig, stop: asyncio.Event) -> None:
    config = loaded.config
    for w in loaded.warnings:
        log.warning("config", detail=w)
    node = SwitchNode(switch_settings(config))
    await node.start()
    try:
        print(_banner(config, node), flush=True)
        print("voicecall ready", flush=True)
        await stop.wait()
    finally:
        await node.stop()


def run_daemon(loaded: LoadedConfig) -> int:
    configure_logging(loaded.config.log.level, json_logs=loaded.config.log.format == "json")

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
