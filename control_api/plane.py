"""The control plane of one node, assembled: storage (+ migrations and config upsert), the HTTP
API, the status pusher, the CDR outbox worker, the recording retention job, and the
subscription to the switch's call events.

The daemon does::

    plane = await build_control_plane(loaded_config, backend, events)
    await plane.start()
    ...
    await plane.stop()
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from prometheus_client import CollectorRegistry

from control_api import templates as tpl
from control_api.auth import Authenticator, settings_from_config
from control_api.backend import CallBackend
from control_api.cluster import (
    HEARTBEAT_INTERVAL_S,
    STALE_AFTER_S,
    ClusterPeers,
    Heartbeat,
    api_url_for,
    own_address,
)
from control_api.config import Config, LoadedConfig
from control_api.http import ApiContext
from control_api.looplag import LoopLagMonitor
from control_api.metrics import ControlMetrics, GaugeSampler
from control_api.outbox import CdrOutbox
from control_api.playfiles import validate_play_file
from control_api.pusher import StatusPusher
from control_api.recordings import RecordingStore
from control_api.server import ApiServer, start_api
from control_api.service import CallService, SessionRegistry, context_from_row
from control_api.sink import EventSink
from control_api.storage.db import Database
from control_api.storage.repo import Store
from switch.events import CallEnded, CallEventBus, LegTimes

log = structlog.get_logger("voicecall.plane")

RETENTION_PERIOD_S = 3600.0
# How often the outbox depth and the per-app ports in use are read from the database for
# /metrics: two small index reads, cheap enough to run often, and a gauge scraped every
# 15 s is never more than this stale.
GAUGE_SAMPLE_INTERVAL_S = 2.0


def record_domain_of(config: Config) -> str:
    return config.api.record_domain or urlsplit(config.api.public_url).netloc or config.node.name


def signing_key_of(config: Config) -> bytes:
    if config.api.url_signing_key:
        return config.api.url_signing_key.encode()
    return hashlib.sha256(b"voicecall-recording-urls\n" + config.api.admin_token.encode()).digest()


async def load_config_into_store(config: Config, store: Store) -> list[str]:
    """Upsert ``[[accounts]]``, ``[[apps]]``, ``[[numbers]]``, ``[[play_files]]`` and
    ``[[templates]]`` (pre-approved). Returns warnings (e.g. a missing prompt file)."""
    warnings: list[str] = []
    for acc in config.accounts:
        await store.upsert_account(acc.id, acc.name)
    for app in config.apps:
        await store.upsert_app(app.app_key, {
            "account_id": app.account, "app_secret": app.app_secret,
            "status_url": app.status_url, "fee_url": app.fee_url, "record": app.record,
            "max_concurrent_calls": app.max_concurrent_calls,
            "push_sign_newlines": app.push_sign_newlines, "state": "active"})
    for n in config.numbers:
        await store.upsert_number(n.number, {"account_id": n.account, "kind": n.kind,
                                             "app_key": n.app_key or None, "state": n.state})
    data_dir = Path(config.node.data_dir)
    for i, pf in enumerate(config.play_files):
        path = Path(pf.path)
        if not path.is_absolute():
            path = data_dir / path if (data_dir / path).exists() or not path.exists() else path
        state, reason = "approved", ""
        if not path.is_file():
            state, reason = "rejected", "file not found"
            warnings.append(f"play_files[{i}]: {path} not found; {pf.name} unusable")
        else:
            problem = validate_play_file(path.read_bytes())
            if problem:
                state, reason = "rejected", problem
                warnings.append(f"play_files[{i}]: {pf.name}: {problem}")
        await store.upsert_play_file(pf.account, pf.name, {
            "path": str(path.resolve()), "state": state, "reason": reason,
            "size": path.stat().st_size if path.is_file() else 0})
    for i, t in enumerate(config.templates):
        state, reason = "approved", ""
        try:
            tpl.parse_template(t.text)
        except ValueError as e:
            state, reason = "rejected", str(e)
            warnings.append(f"templates[{i}]: {t.id}: {e}")
        await store.upsert_template(t.account, t.id, {"text": t.text, "state": state,
                                                      "reason": reason})
    return warnings


class ControlPlane:
    def __init__(self, loaded: LoadedConfig, backend: CallBackend, events: CallEventBus, *,
                 listen: str | None = None, registry: CollectorRegistry | None = None,
                 gauge_sample_interval_s: float = GAUGE_SAMPLE_INTERVAL_S,
                 started_at: float | None = None,
                 heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 stale_after_s: float = STALE_AFTER_S) -> None:
        self.config = loaded.config
        self.registry = registry
        self.started_at = started_at if started_at is not None else time.time()
        self.gauge_sample_interval_s = gauge_sample_interval_s
        self.backend = backend
        self.events = events
        self.listen = listen
        cfg = self.config
        self.db = Database(cfg.storage.url)
        self.store = Store(self.db, cfg.storage.cache_ttl_s)
        self.sessions = SessionRegistry()
        self.recordings = RecordingStore(Path(cfg.node.data_dir) / "recordings",
                                         signing_key_of(cfg), cfg.api.public_url,
                                         cfg.api.record_url_ttl_s)
        self.record_domain = record_domain_of(cfg)
        self.service = CallService(cfg, self.store, backend, self.sessions, self.recordings)
        self.auth = Authenticator(settings_from_config(cfg.auth))
        self.client: httpx.AsyncClient | None = None
        self.pusher: StatusPusher | None = None
        self.outbox: CdrOutbox | None = None
        self.sink: EventSink | None = None
        self.api: ApiServer | None = None
        self.metrics: ControlMetrics | None = None
        self.sampler: GaugeSampler | None = None
        self.loop_lag: LoopLagMonitor | None = None
        self._unsubscribe: Any = None
        self._retention: asyncio.Task[None] | None = None
        self.heartbeat: Heartbeat | None = None
        self.heartbeat_interval_s = heartbeat_interval_s
        self.stale_after_s = stale_after_s
        self.warnings: list[str] = []
        self._stopped = False

    @property
    def base_url(self) -> str:
        assert self.api is not None
        return self.api.base_url

    async def start(self) -> None:
        cfg = self.config
        Path(cfg.node.data_dir).mkdir(parents=True, exist_ok=True)
        self.recordings.root.mkdir(parents=True, exist_ok=True)
        await self.db.migrate()
        self.warnings = await load_config_into_store(cfg, self.store)
        for w in self.warnings:
            log.warning("config", detail=w)
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
            follow_redirects=False, trust_env=False)
        metrics = self.metrics = ControlMetrics(cfg.node.name, self._metric_values,
                                                self.registry, started_at=self.started_at)
        self.loop_lag = LoopLagMonitor(metrics.observe_loop_lag)
        self.loop_lag.start()
        self.sampler = GaugeSampler(self.store.sample_gauges, metrics.set_sample,
                                    self.gauge_sample_interval_s)
        await self.sampler.sample_once()      # the first scrape already has the values
        self.sampler.start()
        wh = cfg.webhooks
        self.pusher = StatusPusher(self.client, wh.timeout_s, wh.push_created_beijing_time,
                                   observe=metrics.observe_delivery)
        self.outbox = CdrOutbox(
            self.store, self.client, self.store.get_app, node=cfg.node.name,
            timeout_s=wh.timeout_s, retry_interval_s=wh.cdr_retry_interval_s,
            max_retries=wh.cdr_max_retries, batch_delay_s=wh.cdr_batch_delay_s,
            poll_s=wh.outbox_poll_s, lease_s=wh.cdr_lease_s,
            beijing_time=wh.push_created_beijing_time, observe=metrics.observe_delivery)
        self.sink = EventSink(self.store, self.sessions, self.pusher, self.outbox,
                              self.recordings, host_name=cfg.node.name,
                              record_domain=self.record_domain,
                              rate_per_minute=cfg.billing.rate_per_minute)
        await self._close_orphans()
        self._unsubscribe = self.events.subscribe(self.sink.on_event)
        self.outbox.start()
        ctx = ApiContext(config=cfg, store=self.store, service=self.service, auth=self.auth,
                         recordings=self.recordings, record_domain=self.record_domain,
                         nudge_outbox=self.outbox.nudge, metrics=metrics)
        self.api = await start_api(ctx, self.listen)
        await self._join_cluster()
        self._retention = asyncio.create_task(self._retention_loop(), name="recording-retention")

    async def _join_cluster(self) -> None:
        """Record this node's API address in the shared database and forward requests about
        other nodes' calls to them (control_api/cluster.py)."""
        assert self.api is not None and self.client is not None
        cfg = self.config
        wildcard = not cfg.api.internal_url and self.api.host in ("0.0.0.0", "::")
        url = api_url_for(cfg.api.internal_url, self.api.host, self.api.port,
                          await own_address() if wildcard else "")
        if wildcard and urlsplit(url).hostname in ("127.0.0.1", "127.0.1.1", "::1"):
            log.warning("internal_url_loopback", api_url=url,
                        detail="the API listens on a wildcard address and the host name "
                               "resolves to loopback: other nodes cannot forward callStop "
                               "here; set [api] internal_url")
        self.heartbeat = Heartbeat(self.store, cfg.node.name, url, self.started_at,
                                   self.heartbeat_interval_s)
        await self.heartbeat.start()
        self.service.peers = ClusterPeers(self.store, self.client, cfg.node.name,
                                          cfg.api.admin_token,
                                          stale_after_s=self.stale_after_s)

    def _metric_values(self) -> dict[str, float]:
        return {"calls_live": len(self.sessions)}

    async def _close_orphans(self) -> None:
        """Calls this node had in progress when it died can no longer progress: close them
        (port released, CDR with stateCode 8000 written) so nothing leaks or is lost."""
        assert self.sink is not None
        for call in await self.store.open_calls(self.config.node.name):
            app = await self.store.get_app(call["app_key"])
            if app is None:
                continue
            ctx = context_from_row(call, app)
            now = time.time()
            await self.sink.close_call(ctx, CallEnded(
                session_id=call["session_id"], end_time=now, a=LegTimes(),
                state_code=8000, state_desc="Internal error.", ul_fail_reason=517,
                fail_time=now))
            log.warning("orphan_call_closed", session_id=call["session_id"])

    async def retention_once(self, now: float | None = None) -> int:
        """REC-4: forget and delete recordings older than the retention period."""
        now = now if now is not None else time.time()
        keep_s = self.config.storage.recordings_retention_days * 86_400
        names = await self.store.expire_recordings(int((now - keep_s) * 1000))
        for name in names:
            try:
                self.recordings.path_for(name).unlink(missing_ok=True)
            except (OSError, ValueError):
                pass
        return len(names) + self.recordings.sweep(keep_s, now)

    async def _retention_loop(self) -> None:
        while True:
            try:
                removed = await self.retention_once()
                if removed:
                    log.info("recordings_expired", count=removed)
            except Exception:
                log.exception("retention_failed")
            await asyncio.sleep(RETENTION_PERIOD_S)

    async def stop(self) -> None:
        """Idempotent: stop serving, finish pending pushes briefly, hand back outbox leases."""
        if self._stopped:
            return
        self._stopped = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._retention is not None:
            self._retention.cancel()
            await asyncio.gather(self._retention, return_exceptions=True)
        if self.api is not None:
            await self.api.stop()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        if self.sink is not None:
            try:
                await asyncio.wait_for(self.sink.drain(), 10)
            except TimeoutError:
                log.warning("sink_drain_timeout")
        if self.pusher is not None:
            try:
                await asyncio.wait_for(self.pusher.drain(), 5)
            except TimeoutError:
                await self.pusher.close()
        if self.outbox is not None:
            await self.outbox.stop()
        if self.sampler is not None:
            await self.sampler.stop()
        if self.loop_lag is not None:
            await self.loop_lag.stop()
        if self.client is not None:
            await self.client.aclose()
        await self.db.close()


async def build_control_plane(loaded_config: LoadedConfig, backend: CallBackend,
                              events: CallEventBus, *, listen: str | None = None,
                              registry: CollectorRegistry | None = None,
                              gauge_sample_interval_s: float = GAUGE_SAMPLE_INTERVAL_S,
                              started_at: float | None = None) -> ControlPlane:
    """Create (not yet start) the control plane. ``listen`` overrides ``[api] listen``
    (tests use ``127.0.0.1:0``); ``started_at`` (epoch s) is the node's start for
    ``voicecall_start_time_seconds`` (default: now)."""
    return ControlPlane(loaded_config, backend, events, listen=listen, registry=registry,
                        gauge_sample_interval_s=gauge_sample_interval_s, started_at=started_at)
