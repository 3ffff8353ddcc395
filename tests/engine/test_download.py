"""Downloads against a real HTTP server on loopback: good, corrupt, interrupted, absent."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from samsvc.engine.download import download_model
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelSource, ModelSpec
from samsvc.errors import DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/good.pth":
            self._send(PAYLOAD, len(PAYLOAD))
        elif self.path == "/corrupt.pth":
            self._send(PAYLOAD[:-1] + b"\x00", len(PAYLOAD))
        elif self.path == "/interrupted.pth":
            self._send(PAYLOAD[: len(PAYLOAD) // 3], len(PAYLOAD))
        else:
            self.send_error(404, "no such checkpoint")

    def _send(self, body: bytes, length: int) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def spec_for(url: str, target: Path, sha256: str | None = DIGEST) -> ModelSpec:
    return ModelSpec(
        name="test_model",
        architecture=BUILTIN_ARCHITECTURES["vit_b"],
        source=ModelSource.REGISTERED,
        path=target,
        url=url,
        sha256=sha256,
    )


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_good_download_is_verified_and_reports_progress(file_server: str, tmp_path: Path) -> None:
    seen: list[tuple[int, int | None]] = []
    target = tmp_path / "good.pth"
    path = download_model(
        spec_for(f"{file_server}/good.pth", target), progress=lambda d, t: seen.append((d, t)), chunk_bytes=65536
    )
    assert path == target and target.read_bytes() == PAYLOAD
    assert seen[0] == (0, len(PAYLOAD)) and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert len(seen) > 10
    assert leftovers(tmp_path) == ["good.pth"]


def test_checksum_mismatch_leaves_nothing(file_server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as caught:
        download_model(spec_for(f"{file_server}/corrupt.pth", tmp_path / "m.pth"))
    assert caught.value.reason == "CHECKSUM_MISMATCH"
    assert DIGEST in caught.value.message
    assert leftovers(tmp_path) == []


def test_interrupted_download_leaves_nothing(file_server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as caught:
        download_model(spec_for(f"{file_server}/interrupted.pth", tmp_path / "m.pth"))
    assert caught.value.reason == "DOWNLOAD_INCOMPLETE"
    assert leftovers(tmp_path) == []


def test_http_error_is_reported(file_server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_model(spec_for(f"{file_server}/absent.pth", tmp_path / "m.pth"))
    assert leftovers(tmp_path) == []


def test_network_failure_is_reported(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match="failed"):
        download_model(spec_for(f"http://127.0.0.1:{port}/m.pth", tmp_path / "m.pth"), timeout=5)
    assert leftovers(tmp_path) == []


def test_existing_file_is_replaced_only_by_a_verified_one(file_server: str, tmp_path: Path) -> None:
    target = tmp_path / "m.pth"
    target.write_bytes(b"old")
    with pytest.raises(DownloadError):
        download_model(spec_for(f"{file_server}/corrupt.pth", target))
    assert target.read_bytes() == b"old"
    download_model(spec_for(f"{file_server}/good.pth", target))
    assert target.read_bytes() == PAYLOAD
