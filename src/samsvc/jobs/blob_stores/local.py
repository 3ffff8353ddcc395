"""The blob store as a directory shared by servers and workers (the DATA_DIR volume)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from samsvc.jobs.blobs import INPUT_SUFFIX, OUTPUT_SUFFIX, checked_id, missing_input, missing_output


class LocalBlobStore:
    """One directory per job under `root`; files are written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def _dir(self, job_id: str) -> Path:
        return self.root / checked_id(job_id)

    def _write(self, job_id: str, name: str, data: bytes) -> None:
        directory = self._dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".part")
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, directory / name)

    def put(self, job_id: str, index: int, data: bytes) -> None:
        self._write(job_id, f"{index}{INPUT_SUFFIX}", data)

    def get(self, job_id: str, index: int) -> bytes:
        try:
            return (self._dir(job_id) / f"{index}{INPUT_SUFFIX}").read_bytes()
        except FileNotFoundError:
            raise missing_input(job_id, index) from None

    def put_output(self, job_id: str, index: int, data: bytes) -> None:
        self._write(job_id, f"{index}{OUTPUT_SUFFIX}", data)

    def get_output(self, job_id: str, index: int) -> bytes:
        try:
            return (self._dir(job_id) / f"{index}{OUTPUT_SUFFIX}").read_bytes()
        except FileNotFoundError:
            raise missing_output(job_id, index) from None

    def delete_inputs(self, job_id: str) -> None:
        """Remove the job's images (its outputs stay); the folder too when nothing is left."""
        directory = self._dir(job_id)
        for path in directory.glob(f"*{INPUT_SUFFIX}"):
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
