"""Downloads against a real HTTP server on loopback (with range requests, as
dl.fbaipublicfiles.com serves them): good, corrupt, interrupted then resumed, too long, absent."""

from __future__ import annotations

import hashlib
import http.server
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from samsvc.engine.download import download_model
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelSource, ModelSpec
from samsvc.errors import DownloadError
from tests.support.http import serving

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


#: Range headers the server was sent, in order.
RANGES: list[str] = []
#: How many times /flaky.pth still breaks off a third of the way.
FLAKY = {"left": 0}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        RANGES.append(self.headers.get("Range", ""))
        if self.path == "/good.pth":
            self._send(PAYLOAD)
        elif self.path == "/corrupt.pth":
            self._send(PAYLOAD[:-1] + b"\x00")
        elif self.path == "/interrupted.pth":
            self._send(PAYLOAD, cut=len(PAYLOAD) // 3)
        elif self.path == "/flaky.pth":
            breaking = FLAKY["left"] > 0
            FLAKY["left"] -= breaking
            self._send(PAYLOAD, cut=len(PAYLOAD) // 3 if breaking else None)
        elif self.path == "/too-long.pth":
            self._send(PAYLOAD * 8)
        elif self.path == "/no-ranges.pth":
            self._send(PAYLOAD, ranges=False)
        else:
            self.send_error(404, "no such checkpoint")

    def _send(self, body: bytes, *, cut: int | None = None, ranges: bool = True) -> None:
        """The file, or the part a Range asks for (206), breaking off after `cut` bytes of it."""
        start = 0
        asked = self.headers.get("Range", "")
        if ranges and asked.startswith("bytes=") and asked.endswith("-"):
            start = int(asked[6:-1])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        sent = body[start:]
        self.send_header("Content-Length", str(len(sent)))
        self.end_headers()
        self.wfile.write(sent if cut is None else sent[:cut])
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def file_server() -> Iterator[str]:
    with serving(_Handler) as base:
        yield base


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


def test_an_interrupted_download_keeps_its_part_and_resumes(file_server: str, tmp_path: Path) -> None:
    """An interruption used to throw away what arrived (2.5 GB for vit_h). The part is kept and
    the next attempt asks for the rest only (a range request), then checks the whole file."""
    FLAKY["left"] = 2
    RANGES.clear()
    spec = replace(spec_for(f"{file_server}/flaky.pth", tmp_path / "m.pth"), size_bytes=len(PAYLOAD))
    with pytest.raises(DownloadError) as caught:
        download_model(spec)
    assert caught.value.reason == "DOWNLOAD_INCOMPLETE" and "resume" in caught.value.message
    assert leftovers(tmp_path) == [".m.pth.part"]
    assert (tmp_path / ".m.pth.part").stat().st_size == len(PAYLOAD) // 3
    with pytest.raises(DownloadError):
        download_model(spec)  # breaks off again, further on
    seen: list[tuple[int, int | None]] = []
    assert download_model(spec, progress=lambda d, t: seen.append((d, t))).read_bytes() == PAYLOAD
    third = len(PAYLOAD) // 3
    assert ["", f"bytes={third}-", f"bytes={2 * third}-"] == RANGES, "each attempt asks for the rest only"
    assert seen[0][0] > third and seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert leftovers(tmp_path) == ["m.pth"]


def test_a_part_a_server_cannot_resume_starts_over(file_server: str, tmp_path: Path) -> None:
    (tmp_path / ".m.pth.part").write_bytes(b"junk from another file")
    spec = replace(spec_for(f"{file_server}/no-ranges.pth", tmp_path / "m.pth"), size_bytes=len(PAYLOAD))
    assert download_model(spec).read_bytes() == PAYLOAD  # the server ignored the range: from the start


def test_a_body_longer_than_the_recorded_size_stops_at_once(file_server: str, tmp_path: Path) -> None:
    """A file whose size is known: one that goes on past it is cut off (announced as 8 MiB here),
    before it fills the disk, and nothing is kept."""
    spec = replace(spec_for(f"{file_server}/too-long.pth", tmp_path / "m.pth"), size_bytes=len(PAYLOAD))
    seen: list[int] = []
    with pytest.raises(DownloadError) as caught:
        download_model(spec, progress=lambda d, t: seen.append(d))
    assert caught.value.reason == "DOWNLOAD_TOO_LARGE"
    assert not seen or max(seen) <= len(PAYLOAD)
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
