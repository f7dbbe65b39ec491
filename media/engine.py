"""The media engine of one node: port pool, the shared 20 ms clock, endpoints, bridges,
recorders, prompts and TTS. This is the only object the switch needs.

Public API (what issue A/C wires into the B2BUA)::

    engine = MediaEngine(config.media, bind_ip="0.0.0.0", advertise_ip="203.0.113.5",
                         data_dir=Path("./data"))
    await engine.start()                  # starts the clock, renders default prompts (cached)
    ep = await engine.open_endpoint(call_id=cid, leg="a")   # RTP+RTCP port pair
    offer = ep.create_offer()             # or: answer = ep.answer_offer(remote_sdp)
    ep.apply_answer(remote_sdp)           # SdpError -> the switch answers/acts 488
    ep.events.on("media_started", ...); ep.events.on("dtmf", ...)
    pb = ep.play([engine.default_prompt("preVoice")]); await pb
    digits = await ep.collect_digits(4, first_digit_timeout=5.0)
    br = engine.bridge(ep_a, ep_b, early_media=False); br.stop()
    rec = engine.record(ep_a, ep_b, path); result = await rec.stop()
    wav = await engine.tts("您的验证码为${NUM_6}", ["123456"], language=2)
    await ep.close(); await engine.stop()

Errors: :class:`~media.errors.SdpError` (488), :class:`~media.errors.PlayFileError`,
:class:`~media.errors.TemplateError`, :class:`~media.errors.TtsError`,
:class:`~media.errors.PortPoolExhausted`.

Configuration (``[media]``, :class:`~media.config.MediaConfig`): ``rtp_ports``, ``codecs``
(offer order), ``ptime`` (advertised; prompts follow the peer's ``a=ptime`` when it is a
multiple of 20 ms, else 20 ms; relayed packets keep the sender's packetisation; any
received packetisation is accepted), ``rtp_timeout_s`` ("media_timeout"), ``inband_dtmf``,
``prompt_gap_ms``, ``record_min_s`` (REC-3), ``tts_voice`` / ``tts_voice_en`` /
``tts_variant`` / ``tts_timeout_s``. Files: ``data_dir/prompts/default`` (PR-DEFAULT,
rendered at first start) and ``data_dir/tts`` (TTS cache by content hash).

Metrics: ``metrics=MediaExporter(registry, node)`` (:mod:`media.metrics`) attaches to the
engine and reads its plain integer counters at scrape time; ``engine.totals`` keeps what
closed endpoints and finished recordings counted.

Design notes: one ``loop.call_at`` clock for the node (see :mod:`media.clock`), raw
non-blocking UDP sockets read with ``loop.add_reader`` in batches (no protocol object or
task per stream), connected after latching. Works on the default loop and on uvloop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from media.bridge import Bridge
from media.clock import MediaClock
from media.config import MediaConfig
from media.endpoint import MediaEndpoint
from media.errors import PlayFileError, PortPoolExhausted
from media.metrics import MediaExporter, MediaTotals
from media.prompt import load_alaw
from media.prompts import DEFAULT_PROMPT_NAMES, ensure_default_prompts
from media.recorder import Recorder, RecordingResult
from media.tts import TtsRenderer

log = structlog.get_logger("media.engine")

RECORDER_FLUSH_TICKS = 25  # each recorder is mixed and written every 0.5 s
PROMPT_CACHE_ENTRIES = 512
SOCKET_BUFFER = 1 << 18


@dataclass(frozen=True)
class MediaMetrics:
    """Counters for the metrics plane (``MediaEngine.metrics()``)."""

    endpoints: int
    port_pairs_free: int
    recorders: int
    clock_ticks: int
    clock_late_ticks: int  # ran > 2 ms after their deadline
    clock_skipped_ticks: int  # dropped because the loop was blocked > 200 ms
    clock_active_senders: int
    clock_lateness_p99_ms: float


class PortPool:
    """Even RTP ports of ``[lo, hi]`` whose odd neighbour (RTCP) is also in range."""

    def __init__(self, lo: int, hi: int) -> None:
        start = lo + (lo & 1)
        self._free: deque[int] = deque(range(start, hi, 2))
        self._used: set[int] = set()
        self.size = len(self._free)

    def acquire(self) -> int:
        if not self._free:
            raise PortPoolExhausted("no free RTP port pair in [media] rtp_ports")
        p = self._free.popleft()
        self._used.add(p)
        return p

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.discard(port)
            self._free.append(port)  # FIFO: a port is reused as late as possible

    @property
    def in_use(self) -> int:
        return len(self._used)


class MediaEngine:
    """One per node; owns the port pool, the shared 20 ms clock and every RTP socket."""

    def __init__(self, config: MediaConfig, *, bind_ip: str, advertise_ip: str,
                 data_dir: Path, metrics: MediaExporter | None = None) -> None:
        self.config = config
        self.exporter = metrics if metrics is not None else MediaExporter()
        self.totals = MediaTotals()  # counts of closed endpoints and finished recordings
        self.bind_ip = bind_ip
        self.advertise_ip = advertise_ip
        self.data_dir = Path(data_dir)
        self._ports = PortPool(*config.port_range)
        self._endpoints: dict[int, MediaEndpoint] = {}
        self._recorder_slots: list[set[Recorder]] = [set() for _ in range(RECORDER_FLUSH_TICKS)]
        self._recorders: dict[int, tuple[Recorder, MediaEndpoint, MediaEndpoint]] = {}
        self._prompt_cache: OrderedDict[tuple[str, int, int], bytes] = OrderedDict()
        self._default_prompts: dict[str, Path] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock: MediaClock | None = None
        self._tts = TtsRenderer(self.data_dir / "tts", config)
        self._started = False
        self.exporter.attach(self)

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("MediaEngine.start() has not been awaited")
        return self._loop

    @property
    def clock(self) -> MediaClock:
        if self._clock is None:
            raise RuntimeError("MediaEngine.start() has not been awaited")
        return self._clock

    @property
    def clock_or_none(self) -> MediaClock | None:
        return self._clock

    async def start(self, *, default_prompts: bool = True) -> None:
        """Start the clock; render the default prompts into ``data_dir/prompts`` unless
        already cached (``default_prompts=False`` skips that, e.g. in benchmarks)."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        self._clock = MediaClock(self._loop)  # 20 ms frames whatever the SDP ptime
        self._clock.every(1, self._flush_recorders)
        self._clock.every(50, self._housekeeping)
        self._clock.start()
        self._started = True
        if default_prompts:
            self._default_prompts = await ensure_default_prompts(
                self.data_dir / "prompts" / "default", self._tts
            )
        log.info("media_started", bind_ip=self.bind_ip, advertise_ip=self.advertise_ip,
                 ports=self.config.rtp_ports, port_pairs=self._ports.size)

    async def stop(self) -> None:
        """Close every endpoint (RTCP BYE), finish recordings, stop the clock."""
        for rec, _, _ in list(self._recorders.values()):
            await rec.stop()
        for ep in list(self._endpoints.values()):
            await ep.close()
        if self._clock is not None:
            self._clock.stop()
        self._started = False
        log.info("media_stopped")

    # --- endpoints ------------------------------------------------------------------------

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket]:
        socks: list[socket.socket] = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.setblocking(False)
                with contextlib.suppress(OSError):
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                s.bind((self.bind_ip, p))
        except OSError:
            for s in socks:
                s.close()
            raise
        return socks[0], socks[1]

    async def open_endpoint(self, *, call_id: str, leg: str) -> MediaEndpoint:
        """Allocate an RTP/RTCP port pair and return an endpoint ready for SDP."""
        self.loop  # noqa: B018 - raises when not started
        for _ in range(min(self._ports.size, 256)):
            port = self._ports.acquire()
            try:
                rtp, rtcp = self._bind_pair(port)
            except OSError:
                self._ports.release(port)  # taken by another program: try the next pair
                continue
            ep = MediaEndpoint(self, call_id=call_id, leg=leg, port=port, rtp_sock=rtp,
                               rtcp_sock=rtcp)
            self._endpoints[port] = ep
            return ep
        raise PortPoolExhausted("no bindable RTP port pair in [media] rtp_ports")

    def _release(self, ep: MediaEndpoint) -> None:
        if self._endpoints.get(ep.port) is ep:
            # removal and fold in one step: a scrape sees the counts exactly once
            del self._endpoints[ep.port]
            self._ports.release(ep.port)
            self._fold(ep)

    def _fold(self, ep: MediaEndpoint) -> None:
        st = ep._stats
        t = self.totals
        t.packets_in += st.packets_received
        t.bytes_in += st.octets_received
        t.packets_out += st.packets_sent
        t.bytes_out += st.octets_sent
        lost_in, lost_out = ep.counted_loss()
        t.lost_in += lost_in
        t.lost_out += lost_out
        for direction, jitter_s, loss_ratio in ep.stream_quality():
            self.exporter.observe_stream(direction, jitter_s, loss_ratio)

    @property
    def endpoints(self) -> int:
        return len(self._endpoints)

    def live_endpoints(self) -> list[MediaEndpoint]:
        return list(self._endpoints.values())

    @property
    def port_pairs_free(self) -> int:
        return self._ports.size - self._ports.in_use

    def metrics(self) -> MediaMetrics:
        c = self.clock
        return MediaMetrics(
            endpoints=len(self._endpoints), port_pairs_free=self.port_pairs_free,
            recorders=len(self._recorders), clock_ticks=c.ticks_run,
            clock_late_ticks=c.late_ticks, clock_skipped_ticks=c.skipped_ticks,
            clock_active_senders=c.active_sinks,
            clock_lateness_p99_ms=round(c.lateness_percentile(99) * 1000, 3),
        )

    def bridge(self, a: MediaEndpoint, b: MediaEndpoint, *, early_media: bool = False
               ) -> Bridge:
        """Relay a ↔ b (only b → a while ``early_media`` until ``Bridge.connect()``)."""
        return Bridge(a, b, early_media=early_media)

    # --- recording ------------------------------------------------------------------------

    def record(self, a: MediaEndpoint, b: MediaEndpoint, path: Path) -> Recorder:
        """Record what a and b send, mixed into one A-law WAV at ``path`` (REC-2). The file
        is written incrementally; ``await rec.stop()`` finalises it (REC-3: deleted when
        shorter than ``[media] record_min_s``)."""
        rec = Recorder(Path(path), self.loop.time(), min_duration_s=self.config.record_min_s,
                       time_fn=self.loop.time, detach=self._detach_recorder,
                       on_finish=self._recording_finished)
        a._recorders.append((rec, 0))
        b._recorders.append((rec, 1))
        self._recorders[id(rec)] = (rec, a, b)
        self._recorder_slots[id(rec) % RECORDER_FLUSH_TICKS].add(rec)
        return rec

    def _detach_recorder(self, rec: Recorder) -> None:
        entry = self._recorders.pop(id(rec), None)
        self._recorder_slots[id(rec) % RECORDER_FLUSH_TICKS].discard(rec)
        if entry is not None:
            for ep in entry[1:]:
                ep._recorders[:] = [(r, d) for r, d in ep._recorders if r is not rec]

    def _recording_finished(self, rec: Recorder, result: RecordingResult) -> None:
        t = self.totals
        if rec.failed:
            t.recordings_failed += 1
        elif result.path is not None:
            t.recordings_kept += 1
            t.recording_bytes += rec.file_bytes
        else:
            t.recordings_discarded += 1
        self.exporter.observe_recording(result.duration_s)

    def _flush_recorders(self, tick: int, now: float) -> None:
        for rec in list(self._recorder_slots[tick % RECORDER_FLUSH_TICKS]):
            rec.flush(now)

    def _housekeeping(self, tick: int, now: float) -> None:
        for ep in list(self._endpoints.values()):
            ep.housekeeping(tick, now)

    # --- prompts and TTS ------------------------------------------------------------------

    def load_prompt(self, path: Path) -> bytes:
        """A-law samples of a prompt file, cached by (path, mtime, size)."""
        try:
            st = path.stat()
        except OSError as e:
            raise PlayFileError(f"{path.name} does not exist or cannot be read") from e
        key = (str(path), st.st_mtime_ns, st.st_size)
        data = self._prompt_cache.get(key)
        if data is None:
            data = load_alaw(path.read_bytes())
            self._prompt_cache[key] = data
            if len(self._prompt_cache) > PROMPT_CACHE_ENTRIES:
                self._prompt_cache.popitem(last=False)
        else:
            self._prompt_cache.move_to_end(key)
        return data

    def default_prompt(self, name: str) -> Path:
        """Path of a shipped default prompt: ``"preVoice"``, ``"lastMinVoice"``,
        ``"recordHintTone"`` or ``"waitVoice"`` (PR-DEFAULT). Raises KeyError for other
        names and RuntimeError before ``start()`` rendered them."""
        if name not in DEFAULT_PROMPT_NAMES:
            raise KeyError(f"unknown default prompt {name!r}; known: {DEFAULT_PROMPT_NAMES}")
        if name not in self._default_prompts:
            raise RuntimeError("default prompts are rendered by MediaEngine.start()")
        return self._default_prompts[name]

    async def tts(self, text_or_template: str, params: Sequence[str] | None = None,
                  language: int = 2) -> Path:
        """Render a template (``${NUM_n}``…) filled with ``params`` — or plain text when
        ``params`` is empty and the text has no variables — to a cached A-law WAV.
        ``language``: 2 = Mandarin (espeak-ng ``cmn``), 1 = English. Raises TemplateError
        for bad templates/parameters and TtsError when espeak-ng/sox fail or time out."""
        return await self._tts.render(text_or_template, list(params or ()), language)
