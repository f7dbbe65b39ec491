"""Suite-wide hooks."""

from __future__ import annotations

import gc

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    # Everything imported and collected lives for the whole run: keep it out of the cyclic
    # GC's full passes, which otherwise walk it again and again and, late in a full run,
    # stall the event loop of in-process tests for about a second (a 1 s webhook timeout
    # then fires on a loopback receiver).
    gc.collect()
    gc.freeze()
