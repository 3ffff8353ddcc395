"""Fixtures shared across the test rooms (loaded by the root conftest): a Redis server and an S3
server of the test's own, each declared with what it starts so the tests using them are marked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from samsvc.config import Settings
from tests.support import RedisServer, S3Server
from tests.support.starts import starts


@starts("redis")
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, which the test may kill and restart."""
    directory = tmp_path / "redis"
    directory.mkdir()
    server = RedisServer(directory)
    yield server
    server.stop()


@starts("redis")
def redis_settings(base_settings: Settings, redis_server: RedisServer, tmp_path: Path) -> tuple[Settings, RedisServer]:
    """Redis-mode settings on that server."""
    return base_settings.model_copy(
        update={"redis_url": redis_server.url, "data_dir": str(tmp_path / "data")}
    ), redis_server


@starts("s3", scope="module")
def s3() -> Iterator[S3Server]:
    """An S3 API server with one bucket (`s3.bucket`), shared by a test module."""
    server = S3Server()
    yield server
    server.stop()
