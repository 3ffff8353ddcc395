from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from samsvc.config import Settings
from tests.support import RedisServer, ServerThread, WorkerProcess
from tests.support.starts import starts


@dataclass
class Target:
    """A running server (embedded mode, or Redis mode with a worker process) to point clients at."""

    mode: str
    server: ServerThread

    @property
    def address(self) -> str:
        return self.server.address


@starts("redis", "processes", when_param="redis", scope="module", params=["embedded", "redis"])
def target(
    request: pytest.FixtureRequest, base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    data = tmp_path_factory.mktemp("data")
    if request.param == "embedded":
        server = ServerThread(base_settings.model_copy(update={"data_dir": str(data)}))
        yield Target("embedded", server)
        server.stop()
        return
    redis_dir: Path = tmp_path_factory.mktemp("redis")
    redis_server = RedisServer(redis_dir)
    settings = base_settings.model_copy(update={"data_dir": str(data), "redis_url": redis_server.url})
    worker = WorkerProcess(settings)
    server = ServerThread(settings)
    yield Target("redis", server)
    server.stop()
    worker.stop()
    redis_server.stop()
