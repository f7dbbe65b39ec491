"""Fixtures for integration tests: a work directory and a config builder for the daemon."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    return d
