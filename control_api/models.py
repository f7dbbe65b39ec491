"""Request and response bodies of the Voice-Call API (spec §2-§4, §8), as pydantic models:
they validate (strict JSON types, unknown fields rejected) and they make the OpenAPI document.
Semantic checks (numbers, files, templates, URLs) are in :mod:`control_api.service`."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Flag = Literal["true", "false"]
Num = Field(min_length=4, max_length=31, description="E.164 with '+', e.g. +8675512345678")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class CallbackBody(_Body):
    """语音回呼 CreateVoiceCallback (§2.1)."""

    bindNbr: str | None = Field(None, min_length=1, max_length=31)
    displayNbr: str = Num
    callerNbr: str = Num
    displayCalleeNbr: str = Num
    calleeNbr: str = Num
    maxDuration: int = Field(0, ge=0, le=1440, description="minutes from B answer; 0 = no limit")
    lastMinVoice: str | None = Field(None, min_length=1, max_length=128)
    lastMinToUE: Literal["toa", "tob", "both"] = "both"
    playPreVoice: Flag = "false"
    preVoice: str | None = Field(None, min_length=1, max_length=128)
    waitVoice: str | None = Field(None, min_length=1, max_length=128)
    calleeMedia: Literal["all", "none", "fail"] = "all"
    statusUrl: str | None = Field(None, min_length=1, max_length=1024, description="Base64 URL")
    feeUrl: str | None = Field(None, min_length=1, max_length=1024, description="Base64 URL")
    recordFlag: Flag = "false"
    recordHintTone: str | None = Field(None, min_length=1, max_length=128)
    partyTypeRequiredInDisconnect: Flag = "false"
    returnIdlePort: Flag = "false"
    userData: str | None = Field(None, min_length=1, max_length=256)


class PlayContentInfo(_Body):
    notifyVoice: str | None = Field(None, min_length=1, max_length=128)
    templateId: str | None = Field(None, min_length=1, max_length=32)
    templateParas: list[str] | None = Field(None, max_length=64)
    collectInd: int = Field(0, ge=0, le=32)
    replayAfterCollection: Flag = "false"
    collectContentTriggerReplaying: str | None = Field(None, min_length=1, max_length=32)


class NotifyBody(_Body):
    """语音通知 CreateVoiceNotification (§3.1)."""

    bindNbr: str | None = Field(None, min_length=1, max_length=31)
    displayNbr: str = Num
    calleeNbr: str = Num
    playInfoList: list[PlayContentInfo] = Field(min_length=1, max_length=5)
    statusUrl: str | None = Field(None, min_length=1, max_length=1024)
    feeUrl: str | None = Field(None, min_length=1, max_length=1024)
    returnIdlePort: Flag = "false"
    userData: str | None = Field(None, min_length=1, max_length=256)


class VerifyBody(_Body):
    """语音验证码 CreateVoiceVerificationCode (§4)."""

    bindNbr: str | None = Field(None, min_length=1, max_length=31)
    displayNbr: str = Num
    calleeNbr: str = Num
    languageType: int = Field(description="2 Mandarin, 1 English")
    preTone: str = Field(min_length=1, max_length=128)
    verifyCode: str = Field(min_length=1, max_length=8, pattern=r"^[0-9]{1,8}$")
    posTone: str | None = Field(None, min_length=1, max_length=128)
    times: int = Field(3, ge=0, le=9)
    statusUrl: str | None = Field(None, min_length=1, max_length=1024)
    feeUrl: str | None = Field(None, min_length=1, max_length=1024)
    returnIdlePort: Flag = "false"
    userData: str | None = Field(None, min_length=1, max_length=256)


class StopBody(_Body):
    """终止呼叫 TerminateCall (§8.1) — note the lower-case ``sessionid``."""

    sessionid: str = Field(min_length=1, max_length=256)
    signal: Literal["call_stop"]


class ResultBody(BaseModel):
    resultcode: str
    resultdesc: str


class SessionResult(ResultBody):
    sessionId: str = ""
    idlePort: int | None = None
