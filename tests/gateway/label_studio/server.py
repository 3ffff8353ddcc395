"""A real Label Studio server for the integration tests: PyPI `label-studio` (pinned in
requirements.txt) in a virtual environment of its own (made once, by .ci/run or by the first test
that needs it), started on a free loopback port with a fresh data folder and the settings the
docs/integrations/label-studio.md gives, stopped with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path
from typing import Any

import requests

from tests.support import free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]
#: The virtual environment (git-ignored), shared by the runs on this machine.
VENV = ROOT / ".label-studio-venv"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
USER, PASSWORD = "admin@example.com", "samsvc-test-password"
#: A legacy token (`--enable-legacy-api-token`), set at start.
LEGACY_TOKEN = "0123456789abcdef0123456789abcdef01234567"


def ensure_venv() -> Path:
    """The `label-studio` executable, installing it first if needed (1-2 minutes)."""
    binary = VENV / "bin" / "label-studio"
    stamp = VENV / ".requirements"
    if binary.exists() and stamp.exists() and stamp.read_text() == REQUIREMENTS.read_text():
        return binary
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    subprocess.run([str(VENV / "bin" / "pip"), "install", "--quiet", "-r", str(REQUIREMENTS)], check=True, timeout=1200)
    stamp.write_text(REQUIREMENTS.read_text())
    return binary


class LabelStudio:
    """Label Studio on loopback, with an admin user and a legacy token."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        binary = ensure_venv()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (data_dir / "label-studio.log").open("w")
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO", "VIRTUAL_ENV"))},
            # The settings docs/integrations/label-studio.md gives for a backend on a loopback or private address.
            "ML_BLOCK_LOCAL_IP": "false",
            "SSRF_PROTECTION_ENABLED": "false",
            "COLLECT_ANALYTICS": "false",
            "SENTRY_DSN": "",
            **env,
        }
        self.process = subprocess.Popen(
            [
                str(binary), "start", "--no-browser", "--data-dir", str(data_dir / "ls"),
                "--internal-host", "127.0.0.1", "-p", str(self.port), "--username", USER, "--password", PASSWORD,
                "--user-token", LEGACY_TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING",
            ],
            env=environment, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_for(self._up, timeout=240, interval=0.5, what="Label Studio to start")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {LEGACY_TOKEN}"

    def _up(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Label Studio exited: {(self.log.name and Path(self.log.name).read_text())[-3000:]}")
        try:
            return requests.get(f"{self.url}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self.session.request(method, f"{self.url}{path}", timeout=120, **kwargs)
        assert answer.ok, f"{method} {path}: {answer.status_code} {answer.text[:500]}"
        return answer.json() if answer.content else None

    def personal_access_token(self) -> str:
        """A personal access token, as the Account page makes one (a JWT refresh token)."""
        token: str = self.api("POST", "/api/token/", json={})["token"]
        return token

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.log.close()


if __name__ == "__main__":  # .ci/run: make the environment before the tests
    print(ensure_venv(), file=sys.stderr)
    time.sleep(0)
