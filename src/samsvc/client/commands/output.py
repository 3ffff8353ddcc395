"""What the client commands print and write: errors, mask rows, job lines, mask files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from google.protobuf.json_format import MessageToDict

from samsvc.client.errors import ClientError
from samsvc.client.results import SegmentResult
from samsvc.v1 import job_pb2

#: How masks are written to files: a PNG per mask, or one COCO JSON file.
FILE_FORMATS = ("png", "coco")


def fail(error: ClientError, as_json: bool) -> int:
    """Print a failed call (stderr, or a JSON document on stdout); the exit code."""
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


def status_name(status: int) -> str:
    """A job status's short name (JOB_STATUS_QUEUED -> queued)."""
    return str(job_pb2.JobStatus.Name(status)).removeprefix("JOB_STATUS_").lower()  # type: ignore[arg-type]


def job_line(job: job_pb2.Job) -> str:
    return (f"{job.job_id}  {status_name(job.status):<10}  {job.processed_images}/{job.total_images} images"
            f"  {job.failed_images} failed  model {job.model_type}")  # fmt: skip


def message_dict(message: Any) -> dict[str, Any]:
    """A protobuf message as JSON-ready fields, unset ones included."""
    return dict(MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True))
