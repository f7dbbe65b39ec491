"""Typed ``[media]`` section of the node configuration."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class MediaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rtp_ports: str = "20000-29999"
    codecs: tuple[str, ...] = ("PCMA", "PCMU")
    ptime: int = 20
    tts_voice: str = "cmn"  # espeak-ng voice for languageType 2; "en" is used for languageType 1
    tts_voice_en: str = "en"  # espeak-ng voice for languageType 1
    tts_variant: str = "f3"  # espeak-ng voice variant (TPL-3: one fixed female voice); "" = none
    tts_timeout_s: float = 20.0  # bound on each espeak-ng / sox run
    rtp_timeout_s: float = 30.0  # "media_timeout" after this long without RTP (0 = off)
    inband_dtmf: bool = True  # Goertzel detection when the peer negotiated no telephone-event
    prompt_gap_ms: int = 300  # silence between items of a prompt sequence and loop rounds
    record_min_s: float = 3.0  # REC-3: shorter recordings are deleted

    @field_validator("rtp_ports")
    @classmethod
    def _check_ports(cls, v: str) -> str:
        lo, sep, hi = v.partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise ValueError("expected 'LOW-HIGH', e.g. '20000-29999'")
        low, high = int(lo), int(hi)
        if not (1024 <= low < high <= 65535) or high - low < 3:
            raise ValueError("range must lie within 1024-65535 and hold at least two port pairs")
        return v

    @field_validator("codecs")
    @classmethod
    def _check_codecs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one codec is required")
        for c in v:
            if c not in ("PCMA", "PCMU"):
                raise ValueError(f"unsupported codec {c!r}; supported: PCMA, PCMU")
        return v

    @field_validator("ptime")
    @classmethod
    def _check_ptime(cls, v: int) -> int:
        if v not in (10, 20, 30, 40, 60):
            raise ValueError("ptime must be one of 10, 20, 30, 40, 60 (ms)")
        return v

    @property
    def port_range(self) -> tuple[int, int]:
        lo, _, hi = self.rtp_ports.partition("-")
        return int(lo), int(hi)
