"""``voicecall call …``: place a callback, notification or verification-code request against a
node's control API, signed like a vendor client (X-AKSK, spec §1.1) with an app's key."""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
from typing import Any

import httpx

from control_api.config import ConfigError, load_config

PATHS = {
    "callback": "/rest/httpsessions/click2Call/v2.0",
    "notify": "/rest/httpsessions/callnotify/v2.0",
    "verify": "/rest/httpsessions/callVerify/v1.0",
    "stop": "/rest/httpsessions/callStop/v2.0",
}


def aksk_headers(app_key: str, app_secret: str) -> dict[str, str]:
    nonce = secrets.token_hex(16)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    digest = base64.b64encode(hmac.new(app_secret.encode(), (nonce + created).encode(),
                                       hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json;charset=UTF-8",
        "Authorization": 'AKSK realm="SDP",profile="UsernameToken",type="Appkey"',
        "X-AKSK": (f'UsernameToken Username="{app_key}",PasswordDigest="{digest}",'
                   f'Nonce="{nonce}",Created="{created}"'),
    }


def _body(args: argparse.Namespace) -> dict[str, Any]:
    if args.kind == "callback":
        b: dict[str, Any] = {"displayNbr": args.display, "callerNbr": args.caller,
                             "displayCalleeNbr": args.display_callee or args.display,
                             "calleeNbr": args.callee}
        if args.record:
            b["recordFlag"] = "true"
        if args.max_duration:
            b["maxDuration"] = args.max_duration
        return b
    if args.kind == "notify":
        return {"displayNbr": args.display, "calleeNbr": args.callee,
                "playInfoList": [{"notifyVoice": args.file}] if args.file else
                [{"templateId": args.template, "templateParas": args.param or []}]}
    if args.kind == "verify":
        return {"displayNbr": args.display, "calleeNbr": args.callee,
                "languageType": args.language, "preTone": args.pre_tone,
                "verifyCode": args.code, "times": args.times}
    return {"sessionid": args.session, "signal": "call_stop"}


def _cmd_call(args: argparse.Namespace) -> int:
    api, key, secret = args.api, args.app_key, args.app_secret
    if not (api and key and secret):
        try:
            cfg = load_config(args.config).config
        except ConfigError as e:
            print(f"voicecall: configuration error: {e}", file=sys.stderr)
            return 2
        api = api or cfg.api.public_url
        if cfg.apps:
            key = key or cfg.apps[0].app_key
            secret = secret or cfg.apps[0].app_secret
    if not (key and secret):
        print("voicecall: no app key/secret (use --app-key/--app-secret or [[apps]])",
              file=sys.stderr)
        return 2
    body = _body(args)
    try:
        r = httpx.post(api.rstrip("/") + PATHS[args.kind], json=body,
                       headers=aksk_headers(key, secret), timeout=15)
    except httpx.HTTPError as e:
        print(f"voicecall: cannot reach {api}: {e}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(r.json(), ensure_ascii=False))
    except ValueError:
        print(r.text)
    return 0 if r.status_code == 200 else 1


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("call", help="send a signed call request to a node's API")
    p.add_argument("--api", help="base URL (default: [api] public_url)")
    p.add_argument("--config", help="TOML to read public_url and the first [[apps]] from")
    p.add_argument("--app-key")
    p.add_argument("--app-secret")
    sub = p.add_subparsers(dest="kind", required=True)
    cb = sub.add_parser("callback", help="click2Call: call A, then B, bridge")
    cb.add_argument("--display", required=True, help="displayNbr shown to A")
    cb.add_argument("--caller", required=True, help="callerNbr (A)")
    cb.add_argument("--callee", required=True, help="calleeNbr (B)")
    cb.add_argument("--display-callee", help="displayCalleeNbr shown to B")
    cb.add_argument("--record", action="store_true")
    cb.add_argument("--max-duration", type=int, default=0, help="minutes")
    nt = sub.add_parser("notify", help="voice notification with one item")
    nt.add_argument("--display", required=True)
    nt.add_argument("--callee", required=True)
    nt.add_argument("--file", help="approved play file name")
    nt.add_argument("--template", help="approved template id")
    nt.add_argument("--param", action="append", help="template parameter (repeat)")
    vf = sub.add_parser("verify", help="voice verification code")
    vf.add_argument("--display", required=True)
    vf.add_argument("--callee", required=True)
    vf.add_argument("--code", required=True)
    vf.add_argument("--pre-tone", required=True, help="approved play file name")
    vf.add_argument("--language", type=int, default=2)
    vf.add_argument("--times", type=int, default=3)
    st = sub.add_parser("stop", help="callStop: release both parties")
    st.add_argument("--session", required=True)
    p.set_defaults(func=_cmd_call)
