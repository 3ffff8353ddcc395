"""A server with its job machinery in either mode: in-process (memory store, the server's own
workers) or Redis (a Redis server of the test's own and a real `samsvc worker` process beside
the server), stopped in the right order whatever the test did."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from samsvc.gateway.launcher import Gateway, start_gateway
from tests.support.processes import WorkerProcess
from tests.support.redis import RedisServer
from tests.support.server_thread import ServerThread

if TYPE_CHECKING:
    from samsvc.config import Settings

#: The modes a job test runs in (`params=MODES`): the in-process mode, and Redis with a worker.
MODES = ["in_process", "redis"]
#: How CheckHealth's jobs.mode names each (the contract's "embedded" is the in-process mode).
HEALTH_MODES = {"in_process": "embedded", "redis": "redis"}


@contextmanager
def job_stack(mode: str, settings: Settings, redis_dir: Path, *, worker: bool = True) -> Iterator[ServerThread]:
    """A running server in `mode` for `settings`; in Redis mode also its Redis (kept in
    `redis_dir`) and, unless `worker` is False (images then wait in the queue), a worker."""
    if mode == "in_process":
        running = ServerThread(settings)
        try:
            yield running
        finally:
            running.stop()
        return
    redis_server = RedisServer(redis_dir)
    try:
        settings = settings.model_copy(update={"redis_url": redis_server.url})
        process = WorkerProcess(settings) if worker else None
        try:
            running = ServerThread(settings)
            try:
                yield running
            finally:
                running.stop()
        finally:
            if process is not None:
                process.stop()
    finally:
        redis_server.stop()


@contextmanager
def gateway_stack(settings: Settings) -> Iterator[tuple[ServerThread, Gateway]]:
    """A server with `settings` and Envoy in front of it on loopback; both stopped on exit."""
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    try:
        yield server, gateway
    finally:
        gateway.stop()
        server.stop()
