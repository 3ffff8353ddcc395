"""Checkpoint downloads over HTTP(S) or from S3-compatible storage (a model repository in a
bucket): streamed, hashed while written, renamed into place only when the SHA-256 matches, and
never leaving a partial file behind."""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlparse

from samsvc.engine.registry import ModelSpec
from samsvc.errors import DownloadError
from samsvc.logs import redact_url
from samsvc.object_storage import S3Options, is_missing, s3_client

#: Bytes read per chunk while streaming.
DEFAULT_CHUNK_BYTES = 1024 * 1024
#: Seconds a connect or a read may stall before the download fails.
DEFAULT_TIMEOUT_S = 60.0

#: Called with (bytes so far, total bytes or None) as the download advances.
Progress = Callable[[int, int | None], None]


def sha256_of(path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def download_model(
    spec: ModelSpec,
    *,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    s3: S3Options | None = None,
) -> Path:
    """Fetch `spec.url` (http, https or s3://bucket/key, the latter through `s3`'s endpoint and
    the standard AWS credential chain) into `spec.path`, checking its SHA-256; returns the path.

    Raises DownloadError for a model without a URL, network failures, short bodies and digest
    mismatches, naming the URL without its credentials or query (a signed URL's signature). The
    file appears at `spec.path` only complete and verified.
    """
    if spec.url is None:
        raise DownloadError(f"model {spec.name!r} has no download URL: its checkpoint is a local file ({spec.path})")
    target = spec.path
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            if urlparse(spec.url).scheme == "s3":
                digest, received = _stream_s3(spec.url, out, progress, s3 or S3Options(), chunk_bytes)
            else:
                digest, received = _stream(spec.url, out, progress, timeout, chunk_bytes)
            out.flush()
            os.fsync(out.fileno())
        if spec.size_bytes is not None and received != spec.size_bytes:
            raise DownloadError(
                f"download of {spec.name!r} from {redact_url(spec.url)} gave {received} bytes, "
                f"expected {spec.size_bytes}",
                reason="DOWNLOAD_INCOMPLETE",
            )
        if spec.sha256 is not None and digest != spec.sha256:
            raise DownloadError(
                f"checksum mismatch for {spec.name!r}: got sha256 {digest}, expected {spec.sha256}; "
                "the file was discarded",
                reason="CHECKSUM_MISMATCH",
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _stream(
    url: str,
    out: BinaryIO,
    progress: Progress | None,
    timeout: float,
    chunk_bytes: int,
) -> tuple[str, int]:
    write = out.write
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "samsvc-model-download"})
    url = redact_url(url)  # what the errors below may show
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            if progress:
                progress(0, total)
            while chunk := response.read(chunk_bytes):
                digest.update(chunk)
                write(chunk)
                received += len(chunk)
                if progress:
                    progress(received, total)
            if total is not None and received != total:
                raise DownloadError(
                    f"download from {url} was interrupted after {received} of {total} bytes",
                    reason="DOWNLOAD_INCOMPLETE",
                )
    except urllib.error.HTTPError as exc:
        raise DownloadError(
            f"download from {url} failed: HTTP {exc.code} {exc.reason}", reason="DOWNLOAD_FAILED"
        ) from exc
    except urllib.error.URLError as exc:
        raise DownloadError(f"download from {url} failed: {exc.reason}", reason="DOWNLOAD_FAILED") from exc
    except http.client.IncompleteRead as exc:
        raise DownloadError(
            f"download from {url} was interrupted after {received + len(exc.partial)} bytes",
            reason="DOWNLOAD_INCOMPLETE",
        ) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise DownloadError(f"download from {url} failed: {exc}", reason="DOWNLOAD_FAILED") from exc
    return digest.hexdigest(), received


def _stream_s3(url: str, out: BinaryIO, progress: Progress | None, s3: S3Options, chunk_bytes: int) -> tuple[str, int]:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(url)
    url = redact_url(url)  # what the errors below may show
    digest = hashlib.sha256()
    received = 0
    try:
        response = s3_client(s3).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"))
        total = int(response["ContentLength"])
        if progress:
            progress(0, total)
        for chunk in response["Body"].iter_chunks(chunk_bytes):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
            if progress:
                progress(received, total)
    except (BotoCoreError, ClientError) as exc:
        what = "no such object" if is_missing(exc) else str(exc).splitlines()[0][:200]
        raise DownloadError(f"download from {url} failed: {what}", reason="DOWNLOAD_FAILED") from exc
    if received != total:
        raise DownloadError(
            f"download from {url} was interrupted after {received} of {total} bytes", reason="DOWNLOAD_INCOMPLETE"
        )
    return digest.hexdigest(), received
