"""The progress file of `samsvc batch` (OUT/.samsvc-batch.json), written atomically after every
image: which files are finished (done or failed) and which jobs are still being followed, with
the cursor after the last event recorded. Finished files are never redone; a run interrupted
while jobs were running reattaches to them after their cursors."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The progress file of a batch run, inside its output folder.
STATE_FILE = ".samsvc-batch.json"
#: Its layout's version: a file of another version is refused, not misread.
STATE_VERSION = 1


@dataclass
class FinishedImage:
    """A file's outcome: `done` with its mask count, or `failed` with why."""

    status: str
    job_id: str = ""
    masks: int = 0
    error: str = ""

    @property
    def done(self) -> bool:
        return self.status == "done"

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"status": self.status}
        if self.done:
            entry["masks"] = self.masks
        else:
            entry["error"] = self.error
        if self.job_id:
            entry["job_id"] = self.job_id
        return entry


@dataclass
class PendingJob:
    """A submitted job whose images are not all recorded yet; `files[i]` is its image i."""

    job_id: str
    files: list[str]
    cursor: str = ""


@dataclass
class BatchState:
    """What a batch run has done: finished files and the jobs still being followed."""

    path: Path
    images: dict[str, FinishedImage] = field(default_factory=dict)
    pending: list[PendingJob] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> BatchState:
        path = out / STATE_FILE
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            raise SystemExit(f"error: {path} was written by another samsvc version; remove it to start over")
        images = {name: FinishedImage(**entry) for name, entry in data["images"].items()}
        return cls(path, images, [PendingJob(**job) for job in data["pending"]])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "version": STATE_VERSION,
            "images": {name: entry.to_json() for name, entry in self.images.items()},
            "pending": [asdict(job) for job in self.pending],
        }
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(document, indent=1), encoding="utf-8")
        os.replace(temporary, self.path)

    def in_flight(self) -> set[str]:
        return {name for job in self.pending for name in job.files}

    def counts(self) -> dict[str, int]:
        done = sum(1 for entry in self.images.values() if entry.done)
        return {"done": done, "failed": len(self.images) - done}
