"""A real redis-server of the test's own, on a free loopback port."""

from __future__ import annotations

from typing import Any

from tests.support.ports import free_port
from tests.support.starts import expect_started
from tests.support.waiting import wait_for


class RedisServer:
    """A real redis-server on a free loopback port with AOF on (fsync always unless told), which
    tests may kill and restart on the same port and data directory."""

    def __init__(self, directory: Any, appendfsync: str = "always", password: str = "") -> None:
        import shutil

        expect_started("redis")
        self.binary = shutil.which("redis-server")
        assert self.binary, "redis-server is not installed (apt-get install redis-server)"
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.appendfsync = appendfsync
        self.password = password
        self.process: Any = None
        self.start()

    def start(self) -> None:
        import subprocess

        import redis

        self.process = subprocess.Popen(
            [
                str(self.binary), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--dir", str(self.directory),
                "--protected-mode", "no", "--loglevel", "warning",
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password or None)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

        wait_for(up, timeout=20, what="redis-server to answer")
        client.close()

    def kill(self) -> None:
        import signal

        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
