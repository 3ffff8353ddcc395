"""Image bytes of batch jobs, kept out of messages: messages carry (job id, index) only; and
the outputs a job keeps beside its records (an embedding job's embeddings).

Inputs go when the job ends; outputs stay until the sweep after JOB_RETENTION_S (or a purge).
The default store is a directory shared by servers and workers (the `DATA_DIR` volume).
Another backend (object storage) implements the same methods.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from samsvc.errors import NotFound

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
#: File suffixes of a job's images and of its outputs.
_INPUT, _OUTPUT = ".img", ".out"


class BlobStore(Protocol):
    def put(self, job_id: str, index: int, data: bytes) -> None: ...

    def get(self, job_id: str, index: int) -> bytes: ...

    def put_output(self, job_id: str, index: int, data: bytes) -> None: ...

    def get_output(self, job_id: str, index: int) -> bytes: ...

    def delete_inputs(self, job_id: str) -> None: ...

    def delete_job(self, job_id: str) -> None: ...

    def sweep(self, older_than_s: float) -> int: ...


class LocalBlobStore:
    """One directory per job under `root`; files are written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, job_id: str) -> Path:
        if not _SAFE_ID.match(job_id):
            raise ValueError(f"not a job id: {job_id!r}")
        return self.root / job_id

    def _write(self, job_id: str, name: str, data: bytes) -> None:
        directory = self._dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, directory / name)

    def put(self, job_id: str, index: int, data: bytes) -> None:
        self._write(job_id, f"{index}{_INPUT}", data)

    def get(self, job_id: str, index: int) -> bytes:
        try:
            return (self._dir(job_id) / f"{index}{_INPUT}").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"image {index} of job {job_id} is no longer stored", reason="IMAGE_BLOB_MISSING") from None

    def put_output(self, job_id: str, index: int, data: bytes) -> None:
        self._write(job_id, f"{index}{_OUTPUT}", data)

    def get_output(self, job_id: str, index: int) -> bytes:
        try:
            return (self._dir(job_id) / f"{index}{_OUTPUT}").read_bytes()
        except FileNotFoundError:
            raise NotFound(
                f"the output of image {index} of job {job_id} is no longer stored", reason="OUTPUT_BLOB_MISSING"
            ) from None

    def delete_inputs(self, job_id: str) -> None:
        """Remove the job's images (its outputs stay); the folder too when nothing is left."""
        directory = self._dir(job_id)
        for path in directory.glob(f"*{_INPUT}"):
            path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty (outputs) or already gone
            directory.rmdir()

    def delete_job(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    def sweep(self, older_than_s: float) -> int:
        """Remove job directories untouched for `older_than_s` seconds; returns how many."""
        horizon = time.time() - older_than_s
        removed = 0
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.stat().st_mtime < horizon:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed
