"""Composition root: builds one node (switch + media + control API) from a ``Config`` and runs
it on uvloop until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
import time
from pathlib import Path

import structlog
import uvloop
from prometheus_client import CollectorRegistry

from control_api.config import Config, LoadedConfig
from control_api.plane import build_control_plane
from media.engine import MediaEngine
from media.metrics import MediaExporter
from switch.events import CallEventBus
from switch.metrics import SwitchMetrics
from switch.node import SwitchNode, SwitchSettings
from switch.services.backend import SwitchBackend
from switch.services.runtime import Runtime, ServiceTimers

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


def tune_gc() -> None:
    """Finished calls are freed by reference counting (no cycles); what the collector walks
    is the long-lived state: everything built at start-up (frozen out of its reach) and the
    transactions/dialogs kept 32 s after each call (~1-2 M objects at 300-500 calls/s).
    With the default thresholds a full pass over them ran every few seconds and stalled
    the loop up to 1.2 s (retransmission storms, p99 setup +2 s at 500/s); with these, full
    passes are rare and 600 calls/s run clean (bench/cps.py, bench/README.md)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 1_000)


def switch_settings(config: Config) -> SwitchSettings:
    return SwitchSettings(node=config.node, sip=config.sip, gateways=config.gateways,
                          routes=config.routes, users=config.users)


def _banner(config: Config, node: SwitchNode, api_url: str) -> str:
    lines = [f"voicecall node {config.node.name}"]
    for a in node.listening:
        lines.append(f"  SIP listening on {a} (advertised as {config.sip.advertise})")
    lines.append(f"  control API on {api_url} (OpenAPI: {api_url}/openapi.json)")
    if config.apps:
        app = config.apps[0]
        lines.append(f"  demo app: app_key {app.app_key} / app_secret {app.app_secret}")
    if config.users:
        lines.append("  softphone accounts (register to the SIP address above):")
        for u in config.users:
            lines.append(f"    user {u.username} / password {u.password} / number {u.number}")
    return "\n".join(lines)


async def serve(loaded: LoadedConfig, stop: asyncio.Event) -> None:
    started_at = time.time()
    config = loaded.config
    for w in loaded.warnings:
        log.warning("config", detail=w)
    media_bind = config.sip.listen_addresses[0].host
    # One registry per node: switch, media and control series on one /metrics.
    registry = CollectorRegistry(auto_describe=True)
    name = config.node.name
    media = MediaEngine(config.media, bind_ip=media_bind, advertise_ip=config.sip.advertise,
                        data_dir=Path(config.node.data_dir),
                        metrics=MediaExporter(registry, name))
    await media.start()
    switch_metrics = SwitchMetrics(registry, name)
    node = SwitchNode(switch_settings(config), metrics=switch_metrics)
    await node.start()
    bus = CallEventBus()
    runtime = Runtime(node.ua, media, bus, ServiceTimers(
        no_answer_timeout_s=float(config.sip.no_answer_timeout_s)), metrics=switch_metrics)
    backend = SwitchBackend(runtime)
    plane = await build_control_plane(loaded, backend, bus, registry=registry,
                                      started_at=started_at)
    try:
        await plane.start()
        tune_gc()
        print(_banner(config, node, plane.base_url), flush=True)
        print("voicecall ready", flush=True)
        await stop.wait()
    finally:
        await backend.close()
        await plane.stop()
        await node.stop()
        await media.stop()


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
