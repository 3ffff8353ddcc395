"""Checkpoint downloads over HTTP(S) or from S3-compatible storage (a model repository in a
bucket): streamed, hashed while written, renamed into place only when the size and SHA-256 match.

The bytes land in `.NAME.part` beside the checkpoint. A download whose size is known stops as
soon as the bytes exceed it (a wrong or hostile file cannot fill the disk), and one that is
interrupted keeps its part: the next attempt resumes from where it stopped (an HTTP range
request, or an S3 ranged GET), hashing the part already there first. A part that cannot be
resumed (a server that ignores ranges, a part as long as the whole) is started over; a file that
arrives complete but wrong (size or digest) is discarded, and so is the part of a download that
failed otherwise. One download per checkpoint runs at a time (a lock on the part).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse

from samsvc.engine.registry import ModelSpec
from samsvc.errors import DownloadError
from samsvc.infra.logs import redact_url
from samsvc.infra.object_storage import S3Options, is_missing, s3_client

#: Bytes read per chunk while streaming.
DEFAULT_CHUNK_BYTES = 1024 * 1024
#: Seconds a connect or a read may stall before the download fails.
DEFAULT_TIMEOUT_S = 60.0

#: Called with (bytes so far, total bytes or None) as the download advances.
Progress = Callable[[int, int | None], None]
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")


def sha256_of(
    path: Path, chunk_bytes: int = DEFAULT_CHUNK_BYTES, *, progress: Callable[[int], object] | None = None
) -> str:
    """Hex SHA-256 of a file, read in chunks (`progress` gets each chunk's size)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def partial_path(target: Path) -> Path:
    """Where a checkpoint's bytes land until they are complete and verified."""
    return target.with_name(f".{target.name}.part")


@dataclass
class _Sink:
    """The part being written: its file, the digest of everything in it, and how much there is."""

    out: BinaryIO
    name: str
    url: str
    expected: int | None
    progress: Progress | None
    digest: Any = field(default_factory=hashlib.sha256)
    received: int = 0

    def restart(self) -> None:
        """The peer sends the file from its start: drop what the part holds."""
        self.out.seek(0)
        self.out.truncate()
        self.digest = hashlib.sha256()
        self.received = 0

    def check_total(self, total: int | None) -> None:
        if total is not None and self.expected is not None and total > self.expected:
            raise _too_large(self.name, self.url, self.expected)

    def write(self, chunk: bytes, total: int | None) -> None:
        if self.expected is not None and self.received + len(chunk) > self.expected:
            raise _too_large(self.name, self.url, self.expected)
        self.digest.update(chunk)
        self.out.write(chunk)
        self.received += len(chunk)
        if self.progress:
            self.progress(self.received, total)


def _too_large(name: str, url: str, expected: int) -> DownloadError:
    return DownloadError(
        f"download of {name!r} from {url} sent more than the {expected} bytes it should have; the part was discarded",
        reason="DOWNLOAD_TOO_LARGE",
    )


def download_model(
    spec: ModelSpec,
    *,
    progress: Progress | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    s3: S3Options | None = None,
) -> Path:
    """Fetch `spec.url` (http, https or s3://bucket/key, the latter through `s3`'s endpoint and
    the standard AWS credential chain) into `spec.path`, checking its size and SHA-256; returns
    the path.

    Raises DownloadError for a model without a URL, network failures, interruptions (the part
    is kept: calling again resumes), bodies longer than the recorded size, and size or digest
    mismatches, naming the URL without its credentials or query (a signed URL's signature). The
    file appears at `spec.path` only complete and verified.
    """
    if spec.url is None:
        raise DownloadError(f"model {spec.name!r} has no download URL: its checkpoint is a local file ({spec.path})")
    target = spec.path
    target.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(target)
    with part.open("ab+") as out:
        try:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DownloadError(
                f"{spec.name!r} is being downloaded by another process; wait for it", reason="DOWNLOAD_IN_PROGRESS"
            ) from None
        sink = _Sink(out, spec.name, redact_url(spec.url), spec.size_bytes, progress)
        _resume(sink, chunk_bytes)
        try:
            if urlparse(spec.url).scheme == "s3":
                _stream_s3(spec.url, sink, s3 or S3Options(), chunk_bytes)
            else:
                _stream(spec.url, sink, timeout, chunk_bytes)
            out.flush()
            os.fsync(out.fileno())
        except DownloadError as exc:
            if exc.reason != "DOWNLOAD_INCOMPLETE":
                part.unlink(missing_ok=True)  # nothing worth resuming
            raise
        except BaseException:
            out.flush()  # interrupted (Ctrl-C, the process stopping): keep what arrived
            raise
        try:
            _check(spec, sink)
        except DownloadError:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, target)
    return target


def _resume(sink: _Sink, chunk_bytes: int) -> None:
    """Take in what an earlier, interrupted attempt left in the part (its digest so far); a part
    that cannot be a prefix of the file (as long as the recorded size) starts over. (A resumed
    file is still checked whole: its digest covers the old bytes too.)"""
    sink.out.seek(0, os.SEEK_END)
    held = sink.out.tell()
    if held == 0:
        return
    if sink.expected is not None and held >= sink.expected:
        sink.restart()
        return
    sink.out.seek(0)
    while chunk := sink.out.read(chunk_bytes):
        sink.digest.update(chunk)
    sink.received = held


def _check(spec: ModelSpec, sink: _Sink) -> None:
    if spec.size_bytes is not None and sink.received != spec.size_bytes:
        raise DownloadError(
            f"download of {spec.name!r} from {sink.url} gave {sink.received} bytes, expected {spec.size_bytes}",
            reason="DOWNLOAD_INCOMPLETE",
        )
    digest = sink.digest.hexdigest()
    if spec.sha256 is not None and digest != spec.sha256:
        raise DownloadError(
            f"checksum mismatch for {spec.name!r}: got sha256 {digest}, expected {spec.sha256}; the file was discarded",
            reason="CHECKSUM_MISMATCH",
        )


def _interrupted(sink: _Sink, total: int | None) -> DownloadError:
    of = f" of {total}" if total is not None else ""
    return DownloadError(
        f"download from {sink.url} was interrupted after {sink.received}{of} bytes; run it again to resume",
        reason="DOWNLOAD_INCOMPLETE",
    )


def _stream(url: str, sink: _Sink, timeout: float, chunk_bytes: int) -> None:
    headers = {"User-Agent": "samsvc-model-download"}
    if sink.received:
        headers["Range"] = f"bytes={sink.received}-"
    request = urllib.request.Request(url, headers=headers)
    total: int | None = None
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            sent = int(length) if length and length.isdigit() else None
            ranged = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "") or "")
            if response.status == 206 and ranged and int(ranged.group(1)) == sink.received:
                total = sink.received + sent if sent is not None else None
            else:
                sink.restart()  # the whole file, from its start
                total = sent
            sink.check_total(total)
            if sink.progress:
                sink.progress(sink.received, total)
            try:
                while chunk := response.read(chunk_bytes):
                    sink.write(chunk, total)
            except http.client.IncompleteRead as exc:
                sink.write(exc.partial, total)  # what did arrive is kept for the next attempt
                raise _interrupted(sink, total) from exc
            if total is not None and sink.received != total:
                raise _interrupted(sink, total)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and sink.received:  # the part is no prefix this server knows: start over
            sink.restart()
            _stream(url, sink, timeout, chunk_bytes)
            return
        raise DownloadError(
            f"download from {sink.url} failed: HTTP {exc.code} {exc.reason}", reason="DOWNLOAD_FAILED"
        ) from exc
    except urllib.error.URLError as exc:
        if sink.received:
            raise _interrupted(sink, total) from exc
        raise DownloadError(f"download from {sink.url} failed: {exc.reason}", reason="DOWNLOAD_FAILED") from exc
    except (OSError, http.client.HTTPException) as exc:
        if isinstance(exc, http.client.IncompleteRead) or sink.received:
            raise _interrupted(sink, total) from exc
        raise DownloadError(f"download from {sink.url} failed: {exc}", reason="DOWNLOAD_FAILED") from exc


def _stream_s3(url: str, sink: _Sink, s3: S3Options, chunk_bytes: int) -> None:
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(url)
    total: int | None = None
    try:
        ranged = {"Range": f"bytes={sink.received}-"} if sink.received else {}
        response = s3_client(s3).get_object(Bucket=parsed.netloc, Key=parsed.path.lstrip("/"), **ranged)
        match = _CONTENT_RANGE.fullmatch(str(response.get("ContentRange") or ""))
        if not (ranged and match and int(match.group(1)) == sink.received):
            sink.restart()
        total = sink.received + int(response["ContentLength"])
        sink.check_total(total)
        if sink.progress:
            sink.progress(sink.received, total)
        for chunk in response["Body"].iter_chunks(chunk_bytes):
            sink.write(chunk, total)
    except (BotoCoreError, ClientError) as exc:
        if sink.received and not isinstance(exc, ClientError):
            raise _interrupted(sink, total) from exc
        what = "no such object" if is_missing(exc) else str(exc).splitlines()[0][:200]
        raise DownloadError(f"download from {sink.url} failed: {what}", reason="DOWNLOAD_FAILED") from exc
    if sink.received != total:
        raise _interrupted(sink, total)
