from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.auth import digest, new_key
from tests.gateway.chromium import chromium
from tests.support import ServerThread, encode, scene
from tests.support.starts import starts


def call(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=120, context=context) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


ALLOWED_ORIGIN = "http://labeler.example"
#: Label Studio's token, samsvc's key for it (the basic-auth password) and a key for `tiny` only.
TOKEN = "ls-access-token"
KEY = new_key()
LIMITED_KEY = new_key()
WIDTH, HEIGHT = 160, 120
IMAGE = encode(scene(WIDTH, HEIGHT, seed=71))


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


@starts("envoy", scope="module")
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
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    yield Stack(server, gateway, cert)
    gateway.stop()
    server.stop()


class FileServer:
    """What Label Studio serves task images from: /data/upload/... with its token required.
    Every request is recorded: (path, Authorization header)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        seen = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.path, self.headers.get("Authorization", "")))
                ok = self.path == "/data/upload/1/photo.png" and self.headers.get("Authorization") == f"Token {TOKEN}"
                body = IMAGE if ok else b"no"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Tools:
    server: ServerThread
    gateway: Gateway
    files: FileServer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.rest_port}"

    @property
    def sidecar_port(self) -> int:
        return int(self.gateway.sidecar.server_address[1])

    def post(self, path: str, body: Any, auth: str | None = None) -> tuple[int, Any]:
        basic = base64.b64encode(f"labelstudio:{KEY if auth is None else auth}".encode()).decode()
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, _, data = call(
            self.base + path, "POST", raw, {"Content-Type": "application/json", "Authorization": f"Basic {basic}"}
        )
        return status, json.loads(data) if data else None


@starts("envoy", scope="module")
def tools(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tools]:
    files = FileServer()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"labelstudio:{digest(KEY)}", f"limited:{digest(LIMITED_KEY)}:tiny"],
            "label_studio_url": files.url,
            "label_studio_api_key": SecretStr(TOKEN),
            "data_dir": str(tmp_path_factory.mktemp("data")),
            "envoy_admin_port": 0,
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    yield Tools(server, gateway, files)
    gateway.stop()
    server.stop()
    files.close()


@starts("browser", scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (tests/gateway/chromium.py), shared by a test module."""
    with chromium() as launched:
        yield launched
