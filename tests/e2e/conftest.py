from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.config import Settings
from tests.support import RedisServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    yield server
    server.stop()


@pytest.fixture
def redis_settings(base_settings: Settings, redis_server: RedisServer, tmp_path: Path) -> tuple[Settings, RedisServer]:
    """Redis-mode settings on that server."""
    return base_settings.model_copy(
        update={"redis_url": redis_server.url, "data_dir": str(tmp_path / "data")}
    ), redis_server
