"""Building the FeeInfo (spec §6.1) of one ended call. Pure."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from switch.events import CallEnded, ServiceType


def fmt_time(ts: float | None) -> str | None:
    """UTC ``yyyy-MM-dd HH:mm:ss`` ("Our decisions": timestamps)."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def make_icid(session_id: str, created_at: float) -> str:
    digest = hashlib.sha256(session_id.encode()).hexdigest()[:8].upper()
    return f"VC-{time.strftime('%Y%m%d%H%M%S', time.gmtime(created_at))}-{digest}"


def build_fee_info(call: dict[str, Any], ended: CallEnded, *, host_name: str,
                   record_object_name: str | None, record_domain: str | None,
                   record_download_url: str | None) -> dict[str, Any]:
    """``call`` is the stored call row (see ``storage.schema.calls``). Optional fields whose
    value is unknown are omitted rather than sent as empty strings."""
    callback = call["service_type"] == ServiceType.CALLBACK.value
    fee: dict[str, Any] = {
        "direction": 0,
        "spId": call["account_id"],
        "appKey": call["app_key"],
        "icid": make_icid(call["session_id"], call["created_at"] / 1000),
        "bindNum": call["bind_nbr"] or call["display_nbr"],
        "sessionId": call["session_id"],
        "callerNum": call["display_nbr"],
        "calleeNum": call["caller"] if callback else call["callee"],
    }
    times: list[tuple[str, float | None]] = [
        ("callOutStartTime", ended.a.start),
        ("callOutAlertingTime", ended.a.alerting),
        ("callOutAnswerTime", ended.a.answer),
    ]
    fee["callOutUnaswRsn"] = ended.a.unanswered_q850
    if callback:
        fee["fwdDisplayNum"] = call["display_callee_nbr"]
        fee["fwdDstNum"] = call["callee"]
        b = ended.b
        if b is not None:
            times += [("fwdStartTime", b.start), ("fwdAlertingTime", b.alerting),
                      ("fwdAnswerTime", b.answer)]
        fee["fwdUnaswRsn"] = b.unanswered_q850 if b is not None else 0
    times += [("callEndTime", ended.end_time), ("failTime", ended.fail_time)]
    for key, ts in times:
        s = fmt_time(ts)
        if s is not None:
            fee[key] = s
    fee["ulFailReason"] = ended.ul_fail_reason
    fee["sipStatusCode"] = ended.sip_status_code
    fee["recordFlag"] = 1 if record_object_name else 0
    if callback and record_object_name:
        fee["recordStartTime"] = fmt_time(ended.record_start or ended.end_time)
        fee["recordObjectName"] = record_object_name
        fee["recordBucketName"] = "recordings"
        if record_domain:
            fee["recordDomain"] = record_domain
        if record_download_url:
            fee["recordFileDownloadUrl"] = record_download_url
    if not callback and ended.dyn_ivr_start is not None:
        fee["dynIVRStartTime"] = fmt_time(ended.dyn_ivr_start)
        fee["dynIVRPath"] = ended.dyn_ivr_path
    fee["ttsPlayTimes"] = ended.tts_play_times
    fee["ttsTransDuration"] = round(ended.tts_trans_duration_s)
    fee["serviceType"] = call["service_type"]
    fee["hostName"] = host_name
    if call["user_data"]:
        fee["userData"] = call["user_data"]
    return fee
