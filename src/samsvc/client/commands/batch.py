"""`samsvc batch FOLDER --out OUT`: a folder's images as batch jobs of at most the server's batch
limits, each followed as it streams, with a progress bar (or JSON lines), resumable through
OUT/.samsvc-batch.json (samsvc.client.commands.batch_state)."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm import tqdm

from samsvc.client.commands.batch_state import STATE_FILE, BatchState, FinishedImage, PendingJob
from samsvc.client.commands.flags import connect, options_of
from samsvc.client.commands.output import error_dict, fail, status_name, write_outputs
from samsvc.client.errors import ClientError, NotFoundError
from samsvc.client.results import ImageOutcome
from samsvc.client.sync import Client
from samsvc.config import DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_BATCH_IMAGES

#: Files picked up in the folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def list_images(folder: Path) -> list[str]:
    """Image files under `folder`, as sorted relative paths."""
    return sorted(
        p.relative_to(folder).as_posix()
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and STATE_FILE not in p.parts
    )


def output_dir(out: Path, name: str, names: set[str]) -> Path:
    """OUT/<relative path without suffix>, or with its suffix when another file shares the stem."""
    stem = Path(name).with_suffix("")
    clash = sum(1 for other in names if Path(other).with_suffix("") == stem) > 1
    return out / (name.replace(".", "_") if clash else stem)


def chunks(folder: Path, names: list[str], max_images: int, max_bytes: int) -> Iterator[list[str]]:
    """Groups of files that fit one batch request."""
    group: list[str] = []
    size = 0
    for name in names:
        length = (folder / name).stat().st_size
        if group and (len(group) >= max_images or size + length > max_bytes):
            yield group
            group, size = [], 0
        group.append(name)
        size += length
    if group:
        yield group


class BatchRun:
    def __init__(self, args: argparse.Namespace, client: Client, stream: TextIO) -> None:
        self.args = args
        self.client = client
        self.folder = Path(args.folder)
        self.out = Path(args.out)
        self.state = BatchState.load(self.out)
        self.names = list_images(self.folder)
        self.all_names = set(self.names)
        self.stream = stream
        self.bar: tqdm[Any] | None = None
        self.skipped = 0

    def emit(self, record: dict[str, Any], line: str) -> None:
        if self.args.json:
            print(json.dumps(record), file=self.stream, flush=True)
        elif self.bar is not None:
            self.bar.write(line, file=sys.stderr)

    def record(self, job: PendingJob, outcome: ImageOutcome, cursor: str) -> None:
        """Write an image's outputs and mark it finished, with the job's cursor after it in the
        same save. An image already finished (a resumed run replaying events after a cursor
        saved just before it) only moves the cursor: its files are not written again."""
        name = job.files[outcome.index]
        if name in self.state.images:
            job.cursor = cursor
            self.state.save()
            return
        if outcome.result is not None:
            outputs = write_outputs(
                outcome.result, output_dir(self.out, name, self.all_names), self.args.format, self.folder / name
            )
            self.state.images[name] = FinishedImage("done", job.job_id, masks=len(outcome.result))
            job.cursor = cursor
            self.state.save()
            self.emit(
                {"file": name, "status": "done", "masks": len(outcome.result), "outputs": outputs},
                f"done    {name}: {len(outcome.result)} masks in {outcome.processing_time_s:.2f} s",
            )
        else:
            error = outcome.error
            message = str(error) if error else "failed"
            self.state.images[name] = FinishedImage("failed", job.job_id, error=message)
            job.cursor = cursor
            self.state.save()
            self.emit(
                {"file": name, "status": "failed", "error": error_dict(error) if error else {}},
                f"FAILED  {name}: {message}",
            )
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(self.state.counts(), refresh=False)

    def follow(self, job: PendingJob) -> None:
        """Record a job's images after its saved cursor until it ends. An expired job's missing
        images go back to the to-do list; a job that ended without some (cancelled) fails them."""
        ended = ""
        try:
            for update in self.client.watch(job.job_id, job.cursor):
                if update.image is not None:
                    self.record(job, update.image, update.cursor)
                elif update.kind == "finished" and update.job is not None:
                    ended = status_name(update.job.status)
        except NotFoundError:
            self.emit({"job_id": job.job_id, "status": "expired"}, f"job {job.job_id} expired: resubmitting")
        if ended:
            for name in job.files:
                if name not in self.state.images:
                    self.state.images[name] = FinishedImage("failed", error=f"the job ended ({ended}) before it ran")
        self.state.pending.remove(job)
        self.state.save()

    def submit(self, max_images: int, max_bytes: int) -> None:
        busy = self.state.in_flight()
        todo = [n for n in self.names if n not in self.state.images and n not in busy]
        for group in chunks(self.folder, todo, max_images, max_bytes):
            digest = hashlib.sha256("\n".join([str(self.out.resolve()), *group]).encode()).hexdigest()[:32]
            response = self.client.submit_batch(
                [self.folder / n for n in group],
                model=self.args.model,
                priority=self.args.priority,
                request_id=f"samsvc-batch-{digest}",
                export_url=getattr(self.args, "export_url", ""),
                **options_of(self.args),
            )
            self.state.pending.append(PendingJob(response.job_id, group))
            self.state.save()
            cost = response.estimated_image_cost
            self.emit(
                {
                    "job_id": response.job_id,
                    "status": "queued",
                    "images": len(group),
                    "estimated_seconds": response.estimated_time,
                    "image_cost": {
                        "encoder_passes": cost.encoder_passes,
                        "prompts": cost.prompts_decoded,
                        "seconds": round(cost.compute_seconds, 3),
                    },
                },
                f"queued  job {response.job_id}: {len(group)} images, about {response.estimated_time} s "
                f"({cost.prompts_decoded} prompts and {cost.encoder_passes} encoder passes an image, "
                f"about {cost.compute_seconds:.1f} s each)",
            )

    def run(self) -> int:
        limits = self.client.health().limits
        max_images = limits.max_batch_images or DEFAULT_MAX_BATCH_IMAGES
        max_images = min(self.args.chunk or max_images, max_images)
        max_bytes = limits.max_batch_bytes or DEFAULT_MAX_BATCH_BYTES
        self.skipped = sum(1 for n in self.names if n in self.state.images)
        if not self.args.json:
            self.bar = tqdm(total=len(self.names), initial=self.skipped, unit="img", desc="segmenting", file=sys.stderr)
            self.bar.set_postfix(self.state.counts(), refresh=False)
        try:
            while True:
                self.submit(max_images, max_bytes)
                if not self.state.pending:
                    break
                while self.state.pending:
                    self.follow(self.state.pending[0])
        finally:
            if self.bar is not None:
                self.bar.close()
        return self.report()

    def report(self) -> int:
        """Print the run's totals and failed files; the exit code."""
        finished = {n: self.state.images[n] for n in self.names if n in self.state.images}
        failed = sorted(n for n, entry in finished.items() if not entry.done)
        done = len(finished) - len(failed)
        if self.args.json:
            totals = {"total": len(self.names), "done": done, "failed": len(failed), "skipped": self.skipped,
                      "failed_files": failed, "out": str(self.out)}  # fmt: skip
            print(json.dumps({"summary": totals}), file=self.stream, flush=True)
        else:
            print(f"{len(self.names)} images: {done} done, {len(failed)} failed "
                  f"({self.skipped} finished by an earlier run); outputs in {self.out}")  # fmt: skip
            for name in failed:
                print(f"  failed: {name}: {self.state.images[name].error}")
        return 1 if failed else 0


def cmd_batch(args: argparse.Namespace) -> int:
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2
    with connect(args) as client:
        run = BatchRun(args, client, sys.stdout)
        try:
            return run.run()
        except ClientError as error:
            return fail(error, args.json)
        except KeyboardInterrupt:
            run.state.save()
            print(f"\ninterrupted: {run.out / STATE_FILE} keeps the progress; run the same command to resume",
                  file=sys.stderr)  # fmt: skip
            return 130
