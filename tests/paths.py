"""Where the shared sources of truth live: ``../shared`` beside the clone (as in CI), or
``$VOICECALL_SHARED``. Tests that need them fail loudly rather than skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VOICECALL_SHARED", REPO.parent / "shared"))
CONFORMANCE = SHARED / "conformance" / "rfc4475"
