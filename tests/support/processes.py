"""samsvc's own processes as a user runs them: `samsvc serve` and `samsvc worker`."""

from __future__ import annotations

from samsvc.config import Settings
from tests.support.starts import expect_started


class ServeProcess:
    """`samsvc serve` as a real process on a free port; the port is read from its banner."""

    def __init__(self, settings: Settings, *extra: str, env: dict[str, str] | None = None) -> None:
        import os
        import re
        import subprocess
        import sys

        expect_started("processes")
        command = [sys.executable, "-m", "samsvc.cli", "serve", "--grpc-port", "0", *extra]
        environment = {**os.environ, **settings_env(settings), **(env or {})}
        import tempfile

        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=self.log, text=True)
        assert self.process.stdout is not None
        banner = self.process.stdout.readline()  # blocks until the server prints it, or exits
        found = re.search(r"gRPC on [^:]+:(\d+)", banner)
        if found is None:
            self.process.kill()
            self.log.seek(0)
            raise AssertionError(f"server did not start: {banner!r}\n{self.log.read()}")
        self.port = int(found.group(1))
        self.address = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        self.log.close()


def settings_env(settings: Settings) -> dict[str, str]:
    from samsvc.config import settings_environment

    return settings_environment(settings)


class WorkerProcess:
    """`samsvc worker` (Dramatiq's CLI underneath) as a real process group."""

    def __init__(self, settings: Settings, env: dict[str, str] | None = None) -> None:
        import os
        import subprocess
        import sys
        import tempfile

        expect_started("processes")
        self.log = tempfile.NamedTemporaryFile(mode="w+", suffix=".log", delete=False)  # noqa: SIM115 (closed in stop)
        environment = {**os.environ, **settings_env(settings), **(env or {})}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "samsvc.cli", "worker"],
            env=environment,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def children(self) -> list[int]:
        """Pids of the processes under `samsvc worker` (Dramatiq's main process and its workers)."""
        import psutil

        try:
            return [c.pid for c in psutil.Process(self.process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name) as handle:
            return handle.read()

    def stop(self) -> None:
        import os
        import signal

        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except Exception:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.log.close()
