"""The client commands of `samsvc`: `segment`, `batch` and `jobs status|results|cancel|list`.

Human output by default, one JSON document (or JSON lines while a batch runs) with `--json`.
Exit codes: 0 success, 1 a call or an image failed, 2 bad usage, 130 interrupted.

`samsvc batch DIR --out OUT` keeps its progress in OUT/.samsvc-batch.json (written atomically
after every image): finished images are never redone, and a run interrupted while jobs were
running reattaches to those jobs after the last image it wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict
from tqdm import tqdm

from samsvc.client.channel import OPTION_NAMES, PRIORITIES
from samsvc.client.errors import ClientError, NotFoundError
from samsvc.client.results import ImageOutcome, SegmentResult
from samsvc.client.sync import Client
from samsvc.config import ClientSettings, add_settings_flags
from samsvc.v1 import job_pb2

#: Files `samsvc batch` picks up in a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: The progress file of a batch run, inside its output folder.
STATE_FILE = ".samsvc-batch.json"
STATE_VERSION = 1

# --- shared -----------------------------------------------------------------------------------


INTEGER_OPTIONS = frozenset(
    {"points_per_side", "points_per_batch", "crop_n_layers", "crop_n_points_downscale_factor", "min_mask_region_area"}
)


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    add_settings_flags(parser, ClientSettings, "connection (each also an environment variable)", "SAMSVC_")
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("mask generation (server defaults when absent)")
    for name in OPTION_NAMES:
        kind = int if name in INTEGER_OPTIONS else float
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)
    group.add_argument("--model", default=None, help="model name (server default when absent)")


def connect(args: argparse.Namespace) -> Client:
    overrides = {
        name: getattr(args, name) for name in ClientSettings.model_fields if getattr(args, name, None) is not None
    }
    settings = ClientSettings(**overrides)
    return Client(
        settings.server,
        api_key=settings.api_key,
        tls=settings.tls,
        ca_file=settings.ca_file,
        timeout_s=settings.timeout_s,
    )


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in OPTION_NAMES if getattr(args, name, None) is not None}


def fail(error: ClientError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"error": error_dict(error)}))
    else:
        print(f"error: {error}", file=sys.stderr)
    return 1


def error_dict(error: ClientError) -> dict[str, Any]:
    return {
        "code": error.code.name,
        "reason": error.reason,
        "message": error.message,
        "field_violations": [{"field": v.field, "description": v.description} for v in error.violations],
    }


def write_outputs(result: SegmentResult, target: Path, fmt: str, image: Path | None) -> list[str]:
    """The masks (a PNG each, or one COCO file) and, with the source image, an overlay."""
    target.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt == "coco":
        written.append(result.save_coco(target / "masks.json", file_name=image.name if image else ""))
    else:
        written += result.save_pngs(target)
    if image is not None:
        written.append(result.save_overlay(image, target / "overlay.png"))
    return [str(p) for p in written]


def mask_rows(result: SegmentResult) -> list[dict[str, Any]]:
    return [
        {
            "area": m.area,
            "bbox": list(m.bbox),
            "predicted_iou": round(m.predicted_iou, 4),
            "stability_score": round(m.stability_score, 4),
        }
        for m in result.masks
    ]


# --- segment ----------------------------------------------------------------------------------


def cmd_segment(args: argparse.Namespace) -> int:
    out = Path(args.out)
    failures = 0
    with connect(args) as client:
        for name in args.images:
            path = Path(name)
            try:
                result = client.segment(path, model=args.model, **options_of(args))
            except ClientError as error:
                failures += 1
                if args.json:
                    print(json.dumps({"file": str(path), "error": error_dict(error)}))
                else:
                    print(f"{path}: {error}", file=sys.stderr)
                continue
            outputs = write_outputs(result, out / path.stem, args.format, path)
            if args.json:
                print(json.dumps({"file": str(path), "job_id": result.job_id, "model": result.model,
                                  "masks": mask_rows(result), "outputs": outputs}))  # fmt: skip
                continue
            cached = ", cached" if result.cache_hit else ""
            print(f"{path}: {len(result)} masks ({result.width}x{result.height}, model {result.model}, "
                  f"{result.processing_time_s:.2f} s{cached}) -> {out / path.stem}")  # fmt: skip
            for number, row in enumerate(mask_rows(result)):
                print(f"  {number:3d}  area {row['area']:>8}  bbox {row['bbox']}  "
                      f"iou {row['predicted_iou']:.3f}  stability {row['stability_score']:.3f}")  # fmt: skip
    return 1 if failures else 0


# --- batch ------------------------------------------------------------------------------------


@dataclass
class BatchState:
    """What a batch run has done: finished files and the jobs still being followed."""

    path: Path
    images: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def load(cls, out: Path) -> BatchState:
        path = out / STATE_FILE
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != STATE_VERSION:
            raise SystemExit(f"error: {path} was written by another samsvc version; remove it to start over")
        return cls(path, data["images"], data["pending"])

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(
            json.dumps({"version": STATE_VERSION, "images": self.images, "pending": self.pending}, indent=1),
            encoding="utf-8",
        )
        os.replace(temporary, self.path)

    def in_flight(self) -> set[str]:
        return {name for job in self.pending for name in job["files"]}


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

    def record(self, job: dict[str, Any], outcome: ImageOutcome, cursor: str) -> None:
        name = job["files"][outcome.index]
        if outcome.result is not None:
            outputs = write_outputs(
                outcome.result, output_dir(self.out, name, self.all_names), self.args.format, self.folder / name
            )
            self.state.images[name] = {"status": "done", "masks": len(outcome.result), "job_id": job["job_id"]}
            self.emit(
                {"file": name, "status": "done", "masks": len(outcome.result), "outputs": outputs},
                f"done    {name}: {len(outcome.result)} masks in {outcome.processing_time_s:.2f} s",
            )
        else:
            error = outcome.error
            message = str(error) if error else "failed"
            self.state.images[name] = {"status": "failed", "error": message, "job_id": job["job_id"]}
            self.emit(
                {"file": name, "status": "failed", "error": error_dict(error) if error else {}},
                f"FAILED  {name}: {message}",
            )
        job["cursor"] = cursor
        self.state.save()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(self._counts(), refresh=False)

    def _counts(self) -> dict[str, int]:
        statuses = [entry["status"] for entry in self.state.images.values()]
        return {"done": statuses.count("done"), "failed": statuses.count("failed")}

    def follow(self, job: dict[str, Any]) -> None:
        """Record a job's images after its saved cursor until it ends. An expired job's missing
        images go back to the to-do list; a job that ended without some (cancelled) fails them."""
        ended = ""
        try:
            for update in self.client.watch(job["job_id"], job["cursor"]):
                if update.image is not None:
                    self.record(job, update.image, update.cursor)
                elif update.kind == "finished" and update.job is not None:
                    ended = str(job_pb2.JobStatus.Name(update.job.status)).removeprefix("JOB_STATUS_").lower()
        except NotFoundError:
            self.emit({"job_id": job["job_id"], "status": "expired"}, f"job {job['job_id']} expired: resubmitting")
        if ended:
            for name in job["files"]:
                if name not in self.state.images:
                    self.state.images[name] = {"status": "failed", "error": f"the job ended ({ended}) before it ran"}
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
                **options_of(self.args),
            )
            self.state.pending.append({"job_id": response.job_id, "cursor": "", "files": group})
            self.state.save()

    def run(self) -> int:
        limits = self.client.health().limits
        max_images = min(self.args.chunk or limits.max_batch_images or 50, limits.max_batch_images or 50)
        max_bytes = limits.max_batch_bytes or 100 * 1024 * 1024
        self.skipped = sum(1 for n in self.names if n in self.state.images)
        if not self.args.json:
            self.bar = tqdm(total=len(self.names), initial=self.skipped, unit="img", desc="segmenting", file=sys.stderr)
            self.bar.set_postfix(self._counts(), refresh=False)
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
        return self.summary()

    def summary(self) -> int:
        failed = sorted(n for n in self.names if self.state.images.get(n, {}).get("status") == "failed")
        done = sum(1 for n in self.names if self.state.images.get(n, {}).get("status") == "done")
        summary = {"total": len(self.names), "done": done, "failed": len(failed), "skipped": self.skipped,
                   "failed_files": failed, "out": str(self.out)}  # fmt: skip
        if self.args.json:
            print(json.dumps({"summary": summary}), file=self.stream, flush=True)
        else:
            print(f"{len(self.names)} images: {done} done, {len(failed)} failed "
                  f"({self.skipped} finished by an earlier run); outputs in {self.out}")  # fmt: skip
            for name in failed:
                print(f"  failed: {name}: {self.state.images[name].get('error', '')}")
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


# --- jobs -------------------------------------------------------------------------------------


def _job_line(job: job_pb2.Job) -> str:
    status = str(job_pb2.JobStatus.Name(job.status)).removeprefix("JOB_STATUS_").lower()
    return (f"{job.job_id}  {status:<10}  {job.processed_images}/{job.total_images} images"
            f"  {job.failed_images} failed  model {job.model_type}")  # fmt: skip


def _as_dict(message: Any) -> dict[str, Any]:
    return dict(MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))


def cmd_jobs(args: argparse.Namespace) -> int:
    with connect(args) as client:
        try:
            if args.jobs_command == "status":
                job = client.status(args.job_id)
                print(json.dumps(_as_dict(job)) if args.json else _job_line(job))
            elif args.jobs_command == "cancel":
                job = client.cancel(args.job_id)
                print(json.dumps(_as_dict(job)) if args.json else _job_line(job))
            elif args.jobs_command == "list":
                jobs = []
                for job in client.list_jobs(status=args.status):
                    jobs.append(job)
                    if len(jobs) >= args.limit:
                        break
                if args.json:
                    print(json.dumps({"jobs": [_as_dict(j) for j in jobs]}))
                else:
                    for job in jobs:
                        print(_job_line(job))
            else:
                return _job_results(client, args)
        except ClientError as error:
            return fail(error, args.json)
    return 0


def _job_results(client: Client, args: argparse.Namespace) -> int:
    failed = 0
    for outcome in client.results(args.job_id):
        outputs: list[str] = []
        if outcome.result is not None and args.out:
            outputs = write_outputs(outcome.result, Path(args.out) / f"image_{outcome.index:04d}", args.format, None)
        failed += 0 if outcome.ok else 1
        if args.json:
            record: dict[str, Any] = {"index": outcome.index}
            if outcome.result is not None:
                record.update({"masks": mask_rows(outcome.result), "outputs": outputs})
            else:
                record["error"] = error_dict(outcome.error) if outcome.error else {}
            print(json.dumps(record))
        elif outcome.result is not None:
            print(f"image {outcome.index}: {len(outcome.result)} masks" + (f" -> {outputs[0]}" if outputs else ""))
        else:
            print(f"image {outcome.index}: {outcome.error}")
    return 1 if failed else 0


def register(commands: Any) -> None:
    """Add `segment`, `batch` and `jobs` to the `samsvc` command's subparsers."""
    segment = commands.add_parser("segment", help="segment images on a server; write masks and an overlay")
    segment.add_argument("images", nargs="+", help="image files")
    segment.add_argument("--out", default="out", help="output folder (a subfolder per image)")
    segment.add_argument("--format", choices=("png", "coco"), default="png", help="a PNG per mask, or one COCO JSON")
    add_option_flags(segment)
    add_client_flags(segment)
    segment.set_defaults(client_handler=cmd_segment)

    batch = commands.add_parser("batch", help="segment a folder as batch jobs, with progress; resumable")
    batch.add_argument("folder", help="folder of images (.jpg, .jpeg, .png, .webp; subfolders too)")
    batch.add_argument("--out", default="out", help="output folder; holds the progress file for resuming")
    batch.add_argument("--format", choices=("png", "coco"), default="png", help="a PNG per mask, or one COCO JSON")
    batch.add_argument("--priority", choices=tuple(PRIORITIES), default="normal")
    batch.add_argument("--chunk", type=int, default=0, help="images per job (default: the server's batch limit)")
    add_option_flags(batch)
    add_client_flags(batch)
    batch.set_defaults(client_handler=cmd_batch)

    jobs = commands.add_parser("jobs", help="status, results, cancellation and listing of jobs")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    for name, text in (("status", "a job's status"), ("results", "a job's per-image results"),
                       ("cancel", "cancel a job")):  # fmt: skip
        action = actions.add_parser(name, help=text)
        action.add_argument("job_id")
        if name == "results":
            action.add_argument("--out", default="", help="write each image's masks under this folder")
            action.add_argument("--format", choices=("png", "coco"), default="png")
        add_client_flags(action)
        action.set_defaults(client_handler=cmd_jobs)
    listing = actions.add_parser("list", help="this key's jobs, newest first")
    listing.add_argument("--status", choices=("queued", "processing", "completed", "failed", "cancelled"))
    listing.add_argument("--limit", type=int, default=20)
    add_client_flags(listing)
    listing.set_defaults(client_handler=cmd_jobs)
