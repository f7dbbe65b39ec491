"""``voicecall admin ...``: the provisioning operations of ``/admin/v1`` from the command line.

The commands talk to a running node's admin API over HTTP with the admin token (not to the
database directly): they work against a remote node, go through the same validation and
approval rules as the API, and need no database credentials on the operator's machine.
The API address and token come from ``--api``/``--token``, else ``VOICECALL_API`` /
``VOICECALL_ADMIN_TOKEN``, else ``[api] public_url`` / ``admin_token`` of ``--config``.

The lead wires it in with ``control_api.admin_cli.register(subparsers)``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

Request = tuple[str, str, dict[str, Any]]   # method, path, httpx keyword arguments


def _q(v: str) -> str:
    return quote(v, safe="")


def _params(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    out = {}
    for n in names:
        v = getattr(args, n, None)
        if v is not None:
            out[n] = v
    return out


def _build(args: argparse.Namespace) -> Request:
    """Translate parsed arguments into one admin API request."""
    g, c = args.admin_group, args.admin_cmd
    if g == "accounts":
        if c == "list":
            return "GET", "/accounts", {}
        if c == "add":
            return "POST", "/accounts", {"json": {"id": args.id, "name": args.name}}
        return "PATCH", f"/accounts/{_q(args.id)}", {"json": _params(args, "state", "name")}
    if g == "apps":
        if c == "list":
            return "GET", "/apps", {"params": _params(args, "account")}
        if c == "show":
            return "GET", f"/apps/{_q(args.app_key)}", {}
        if c == "reset-secret":
            return "POST", f"/apps/{_q(args.app_key)}/reset-secret", {}
        body: dict[str, Any] = _params(args, "name", "status_url", "fee_url", "record",
                                       "max_concurrent_calls")
        if c == "add":
            body.update(_params(args, "account", "app_key"))
            return "POST", "/apps", {"json": body}
        body.update(_params(args, "state"))
        return "PATCH", f"/apps/{_q(args.app_key)}", {"json": body}
    if g == "numbers":
        if c == "list":
            return "GET", "/numbers", {"params": _params(args, "account", "app_key", "state")}
        if c == "add":
            return "POST", "/numbers", {"json": _params(args, "account", "number", "kind",
                                                       "app_key")}
        if c == "release":
            return "POST", f"/numbers/{_q(args.number)}/release", {}
        state = {"pause": "paused", "resume": "active"}[c]
        return "PATCH", f"/numbers/{_q(args.number)}", {"json": {"state": state}}
    if g == "play-files":
        if c == "list":
            return "GET", "/play-files", {"params": _params(args, "account")}
        if c == "upload":
            path = Path(args.file)
            name = args.name or path.name
            return "PUT", f"/play-files/{_q(args.account)}/{_q(name)}", {
                "content": path.read_bytes(), "headers": {"Content-Type": "audio/wav"}}
        if c == "approve":
            return "POST", f"/play-files/{_q(args.account)}/{_q(args.name)}/approve", {}
        return "POST", f"/play-files/{_q(args.account)}/{_q(args.name)}/reject", {
            "json": {"reason": args.reason}}
    if g == "templates":
        if c == "list":
            return "GET", "/templates", {"params": _params(args, "account")}
        if c == "add":
            return "POST", "/templates", {"json": {"account": args.account, "id": args.id,
                                                  "text": args.text}}
        if c == "approve":
            return "POST", f"/templates/{_q(args.account)}/{_q(args.id)}/approve", {}
        return "POST", f"/templates/{_q(args.account)}/{_q(args.id)}/reject", {
            "json": {"reason": args.reason}}
    if g == "calls" and c == "stop":
        return "POST", f"/calls/{_q(args.session_id)}/stop", {}
    if g == "nodes":
        return "GET", "/nodes", {}
    if g == "calls":
        return "GET", "/calls", {"params": _params(
            args, "since", "until", "service_type", "app_key", "account", "session_id",
            "caller", "callee", "limit", "offset")}
    if g == "cdrs":
        if c == "list":
            return "GET", "/cdrs", {"params": _params(args, "state", "app_key", "session_id",
                                                      "limit")}
        repush: dict[str, Any] = {"ids": args.id} if args.id else {"state": args.state}
        if args.app_key:
            repush["app_key"] = args.app_key
        return "POST", "/cdrs/repush", {"json": repush}
    if g == "trace":
        fmt = {"format": "json" if args.json else "ladder"}
        if args.call_id:
            first, *more = args.call_id
            return "GET", f"/sip-traces/{_q(first)}", {"params": {**fmt, "with": more}}
        if not args.session_id:
            raise ValueError("give a SESSION_ID or --call-id")
        return "GET", f"/calls/{_q(args.session_id)}/sip-trace", {"params": fmt}
    if g == "traces":
        return "GET", "/sip-traces", {"params": _params(args, "limit", "all")}
    if g == "billing":
        return "GET", "/billing", {"params": _params(args, "since", "until", "account",
                                                     "app_key")}
    raise ValueError(f"unknown admin command {g} {c}")


def _target(args: argparse.Namespace) -> tuple[str, str]:
    api = args.api or os.environ.get("VOICECALL_API")
    token = args.token or os.environ.get("VOICECALL_ADMIN_TOKEN")
    if (api is None or token is None) and args.config:
        from control_api.config import load_config
        cfg = load_config(args.config).config
        api = api or cfg.api.public_url
        token = token or cfg.api.admin_token
    if api is None or token is None:
        from control_api.config import load_config
        cfg = load_config(None).config
        api = api or cfg.api.public_url
        token = token or cfg.api.admin_token
    return api.rstrip("/"), token


def run(args: argparse.Namespace) -> int:
    """Execute one admin command; prints the JSON answer. Exit status 0 on success, 1 on an
    API error, 2 when the node cannot be reached."""
    try:
        method, path, kw = _build(args)
    except (OSError, ValueError) as e:
        print(f"voicecall admin: {e}", file=sys.stderr)
        return 2
    api, token = _target(args)
    headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
    try:
        with httpx.Client(timeout=args.timeout, trust_env=False) as client:
            resp = client.request(method, f"{api}/admin/v1{path}", headers=headers, **kw)
    except httpx.HTTPError as e:
        print(f"voicecall admin: cannot reach {api}: {e}", file=sys.stderr)
        return 2
    if resp.status_code == 200 and resp.headers.get("content-type", "").startswith("text/"):
        print(resp.text, end="" if resp.text.endswith("\n") else "\n")   # a SIP ladder
        return 0
    try:
        data = resp.json()
    except ValueError:
        print(resp.text)
        return 1
    print(json.dumps(data, ensure_ascii=False, indent=2))
    return 0 if resp.status_code == 200 and data.get("resultcode") == "0" else 1


def register(subparsers: Any) -> None:
    """Add ``admin`` with its sub-commands to the ``voicecall`` parser."""
    admin = subparsers.add_parser("admin", help="provisioning through the node's admin API")
    admin.add_argument("--api", help="base URL of the node (default: [api] public_url)")
    admin.add_argument("--token", help="admin token (default: [api] admin_token)")
    admin.add_argument("--config", help="read public_url/admin_token from this TOML")
    admin.add_argument("--timeout", type=float, default=30.0)
    admin.set_defaults(func=run)
    groups = admin.add_subparsers(dest="admin_group", required=True)

    acc = groups.add_parser("accounts", help="customer accounts").add_subparsers(
        dest="admin_cmd", required=True)
    acc.add_parser("list")
    p = acc.add_parser("add")
    p.add_argument("id")
    p.add_argument("--name", default="")
    p = acc.add_parser("set")
    p.add_argument("id")
    p.add_argument("--state", choices=["active", "inactive"])
    p.add_argument("--name")

    apps = groups.add_parser("apps", help="applications (app_key/app_secret)").add_subparsers(
        dest="admin_cmd", required=True)
    p = apps.add_parser("list")
    p.add_argument("--account")
    for name in ("add", "set"):
        p = apps.add_parser(name)
        if name == "add":
            p.add_argument("--account", required=True)
            p.add_argument("--app-key", dest="app_key", help="default: generated")
        else:
            p.add_argument("app_key")
            p.add_argument("--state", choices=["active", "suspended"])
        p.add_argument("--name")
        p.add_argument("--status-url", dest="status_url")
        p.add_argument("--fee-url", dest="fee_url")
        p.add_argument("--record", action=argparse.BooleanOptionalAction, default=None)
        p.add_argument("--max-calls", dest="max_concurrent_calls", type=int)
    for name in ("show", "reset-secret"):
        apps.add_parser(name).add_argument("app_key")

    nums = groups.add_parser("numbers", help="display and bind numbers").add_subparsers(
        dest="admin_cmd", required=True)
    p = nums.add_parser("list")
    p.add_argument("--account")
    p.add_argument("--app-key", dest="app_key")
    p.add_argument("--state", choices=["active", "paused", "released"])
    p = nums.add_parser("add")
    p.add_argument("number")
    p.add_argument("--account", required=True)
    p.add_argument("--kind", choices=["display", "bind"], default="display")
    p.add_argument("--app-key", dest="app_key")
    for name in ("pause", "resume", "release"):
        nums.add_parser(name).add_argument("number")

    pf = groups.add_parser("play-files", help="prompt files and approval").add_subparsers(
        dest="admin_cmd", required=True)
    p = pf.add_parser("list")
    p.add_argument("--account")
    p = pf.add_parser("upload")
    p.add_argument("account")
    p.add_argument("file")
    p.add_argument("--name", help="default: the file's name")
    for name in ("approve", "reject"):
        p = pf.add_parser(name)
        p.add_argument("account")
        p.add_argument("name")
        if name == "reject":
            p.add_argument("--reason", default="")

    tp = groups.add_parser("templates", help="TTS templates and approval").add_subparsers(
        dest="admin_cmd", required=True)
    p = tp.add_parser("list")
    p.add_argument("--account")
    p = tp.add_parser("add")
    p.add_argument("--account", required=True)
    p.add_argument("--id", required=True)
    p.add_argument("--text", required=True)
    for name in ("approve", "reject"):
        p = tp.add_parser(name)
        p.add_argument("account")
        p.add_argument("id")
        if name == "reject":
            p.add_argument("--reason", default="")

    calls = groups.add_parser("calls", help="call search (2 months back)").add_subparsers(
        dest="admin_cmd", required=True)
    p = calls.add_parser("search")
    for opt in ("since", "until", "app-key", "account", "session-id", "caller", "callee"):
        p.add_argument(f"--{opt}", dest=opt.replace("-", "_"))
    p.add_argument("--service-type", dest="service_type", choices=["001", "002"])
    p.add_argument("--limit", type=int)
    p.add_argument("--offset", type=int)
    p = calls.add_parser("stop", help="end a call (as callStop, 8017 on every leg) on "
                                      "whichever node of the cluster runs it")
    p.add_argument("session_id")
    nodes = groups.add_parser("nodes", help="the cluster's nodes: API address, heartbeat, alive")
    nodes.set_defaults(admin_cmd="list")

    cdrs = groups.add_parser("cdrs", help="CDR outbox and manual re-push").add_subparsers(
        dest="admin_cmd", required=True)
    p = cdrs.add_parser("list")
    p.add_argument("--state", choices=["pending", "delivered", "parked"])
    p.add_argument("--app-key", dest="app_key")
    p.add_argument("--session-id", dest="session_id")
    p.add_argument("--limit", type=int)
    p = cdrs.add_parser("repush")
    p.add_argument("--id", type=int, action="append", help="outbox row id (repeatable)")
    p.add_argument("--state", choices=["parked", "delivered"], default="parked")
    p.add_argument("--app-key", dest="app_key")

    tr = groups.add_parser("trace", help="SIP trace of a call as a ladder diagram (or JSON)")
    tr.set_defaults(admin_cmd="show")
    tr.add_argument("session_id", nargs="?", help="the API sessionId")
    tr.add_argument("--call-id", dest="call_id", action="append",
                    help="a SIP Call-ID instead (e.g. of a softphone call, see 'admin "
                         "traces'); repeat it to merge dialogs, e.g. both legs of a B2BUA call")
    tr.add_argument("--json", action="store_true", help="every message in full, as JSON")
    trs = groups.add_parser("traces", help="recent traced SIP Call-IDs on the node")
    trs.set_defaults(admin_cmd="list")
    trs.add_argument("--limit", type=int)
    trs.add_argument("--all", action="store_true", default=None,
                     help="also OPTIONS probes, REGISTER and other non-call exchanges")

    bill = groups.add_parser("billing", help="usage and number rent summary")
    bill.set_defaults(admin_cmd="summary")
    for opt in ("since", "until", "account", "app-key"):
        bill.add_argument(f"--{opt}", dest=opt.replace("-", "_"))
