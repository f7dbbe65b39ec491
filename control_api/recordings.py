"""Recording store (REC-3..5): files under ``data_dir/recordings``, signed expiring download
URLs (HMAC-SHA256 over name and expiry), and the retention sweep."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from pathlib import Path
from urllib.parse import quote

import structlog

log = structlog.get_logger("voicecall.recordings")

_SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9_@\-][A-Za-z0-9_.@\-]{0,127}$")
MIN_RECORDING_S = 3.0    # REC-3


def safe_name(name: str) -> bool:
    """A bare file name: letters, digits, ``_ . @ -``; no path separators, no ``..``."""
    return bool(_SAFE_NAME_RE.match(name)) and ".." not in name


def object_name_for(session_id: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_\-]", "_", session_id)[:120]
    return f"{base}.wav"


class RecordingStore:
    def __init__(self, root: Path, signing_key: bytes, public_url: str, url_ttl_s: int) -> None:
        self.root = root
        self.key = signing_key
        self.public_url = public_url.rstrip("/")
        self.url_ttl_s = url_ttl_s

    def path_for(self, object_name: str) -> Path:
        if not safe_name(object_name):
            raise ValueError("unsafe recording name")
        return self.root / object_name

    def _sig(self, name: str, expires: int) -> str:
        mac = hmac.new(self.key, f"{name}\n{expires}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def signed_url(self, name: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self.url_ttl_s)
        return (f"{self.public_url}/recordings/{quote(name)}"
                f"?expires={expires}&sig={self._sig(name, expires)}")

    def verify(self, name: str, expires: str, sig: str, now: float | None = None) -> bool:
        if not expires.isdigit() or len(expires) > 12 or not safe_name(name):
            return False
        if int(expires) < (now if now is not None else time.time()):
            return False
        return hmac.compare_digest(sig.encode(), self._sig(name, int(expires)).encode())

    def accept(self, path: str | None, duration_s: float, object_name: str) -> str | None:
        """Keep the recorder's file as ``object_name`` if long enough (REC-3); returns the
        object name or None (file removed)."""
        if not path:
            return None
        src = Path(path)
        if not src.is_file():
            return None
        if duration_s < MIN_RECORDING_S:
            src.unlink(missing_ok=True)
            return None
        dst = self.path_for(object_name)
        if src.resolve() != dst.resolve():
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        return object_name

    def sweep(self, retention_s: float, now: float | None = None) -> int:
        """REC-4: delete files older than the retention period; returns how many."""
        cutoff = (now if now is not None else time.time()) - retention_s
        removed = 0
        if not self.root.is_dir():
            return 0
        for p in self.root.iterdir():
            try:
                if p.is_file() and p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed += 1
            except OSError as e:  # another node's sweep, permissions: log and go on
                log.warning("recording_sweep_failed", file=p.name, error=str(e))
        return removed
