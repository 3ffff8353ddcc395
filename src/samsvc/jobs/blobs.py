"""Image bytes of batch jobs, kept out of messages: messages carry (job id, index) only.

The default store is a directory shared by servers and workers (the `DATA_DIR` volume).
Another backend (object storage) implements the same four methods.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Protocol

from samsvc.errors import NotFound

_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class BlobStore(Protocol):
    def put(self, job_id: str, index: int, data: bytes) -> None: ...

    def get(self, job_id: str, index: int) -> bytes: ...

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

    def put(self, job_id: str, index: int, data: bytes) -> None:
        directory = self._dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{index}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, directory / f"{index}.img")

    def get(self, job_id: str, index: int) -> bytes:
        try:
            return (self._dir(job_id) / f"{index}.img").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"image {index} of job {job_id} is no longer stored", reason="IMAGE_BLOB_MISSING") from None

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
