from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from samsvc.config import Settings
from samsvc.gateway.launcher import Gateway, start_gateway
from tests.support import ServerThread

ALLOWED_ORIGIN = "http://labeler.example"


@dataclass
class Stack:
    server: ServerThread
    gateway: Gateway
    cert: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.rest_port}"

    @property
    def tls_base(self) -> str:
        return f"https://localhost:{self.gateway.tls_port}"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate and key for localhost, made now with openssl."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def stack(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gateway")
    cert, key = self_signed(tmp)
    settings = base_settings.model_copy(
        update={
            "data_dir": str(tmp / "data"),
            "rest_port": 0,
            "envoy_admin_port": 0,
            "cors_origins": [ALLOWED_ORIGIN],
            "tls_cert_file": cert,
            "tls_key_file": key,
            "tls_port": 0,
            "max_image_bytes": 2 * 1024 * 1024,
            "max_batch_bytes": 4 * 1024 * 1024,
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings, "127.0.0.1", server.running.port)
    yield Stack(server, gateway, cert)
    gateway.stop()
    server.stop()
