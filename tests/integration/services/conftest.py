"""Fixtures of the end-to-end service tests: a real webhook receiver and a whole node."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.integration.control_api.helpers import Receiver
from tests.integration.services.node import ServiceNode


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.stop()


@pytest.fixture
def node_factory(tmp_path: Path, receiver: Receiver) -> Iterator[type[ServiceNode]]:
    """``node_factory(**ServiceNode kwargs)`` → a started node, stopped at teardown."""
    started: list[ServiceNode] = []

    def make(**kw: object) -> ServiceNode:
        n = ServiceNode(tmp_path, receiver, **kw).start()  # type: ignore[arg-type]
        started.append(n)
        return n

    yield make  # type: ignore[misc]
    for n in started:
        n.stop()
        (tmp_path / "daemon.log").write_text(n.log())   # kept for post-mortems
