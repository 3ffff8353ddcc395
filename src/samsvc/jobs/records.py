"""Job, image-result and event records, and their JSON form in the store.

Everything here is plain data: the store keeps it as JSON (readable with redis-cli), the
server converts it to protobuf messages.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from typing import Any

from samsvc.encoding.masks import MaskEncoding, Polygon, Rle
from samsvc.engine.amg_types import AmgOptions
from samsvc.errors import FieldViolation, InvalidArgument, SamsvcError
from samsvc.inference.pipeline import EncodedMask, SegmentOutcome
from samsvc.jobs.queues import Priority


class JobStatus(Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


class JobType(Enum):
    SINGLE = "single"
    BATCH = "batch"
    EMBEDDING = "embedding"

    @property
    def queued(self) -> bool:
        """Whether its images run on the workers (every type but a Segment call kept as a job)."""
        return self is not JobType.SINGLE


class JobTask(Enum):
    """What a job's workers do with each image."""

    SEGMENT = "segment"
    EMBED = "embed"


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class JobSpec:
    """What every image of a job runs: model, options, encoding, visualization, and whether it
    segments the image or keeps its embedding."""

    model: str
    options: AmgOptions
    encoding: MaskEncoding
    visualize: bool
    task: JobTask = JobTask.SEGMENT
    #: Where each image's masks are exported (s3://bucket/prefix or a checked folder); "" for none.
    export_url: str = ""

    @classmethod
    def embedding(cls, model: str) -> JobSpec:
        return cls(model, AmgOptions(), MaskEncoding.PNG, visualize=False, task=JobTask.EMBED)

    @property
    def job_type(self) -> JobType:
        return JobType.EMBEDDING if self.task is JobTask.EMBED else JobType.BATCH

    def to_json(self) -> str:
        return json.dumps(
            {
                "model": self.model,
                "options": asdict(self.options),
                "encoding": self.encoding.value,
                "visualize": self.visualize,
                "task": self.task.value,
                "export_url": self.export_url,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data = json.loads(text)
        return cls(
            model=data["model"],
            options=AmgOptions(**data["options"]),
            encoding=MaskEncoding(data["encoding"]),
            visualize=bool(data["visualize"]),
            task=JobTask(data.get("task", JobTask.SEGMENT.value)),
            export_url=str(data.get("export_url", "")),
        )


@dataclass(frozen=True)
class JobRecord:
    """A job as the store keeps it."""

    job_id: str
    job_type: JobType
    status: JobStatus
    total_images: int
    spec: JobSpec
    priority: Priority = Priority.NORMAL
    succeeded_images: int = 0
    failed_images: int = 0
    created_at_ms: int = field(default_factory=now_ms)
    started_at_ms: int | None = None
    completed_at_ms: int | None = None
    error_message: str = ""
    webhook_url: str = ""
    owner: str = ""
    #: Sum of the seconds each finished image took.
    image_seconds: float = 0.0

    @property
    def processed_images(self) -> int:
        return self.succeeded_images + self.failed_images

    @property
    def remaining_images(self) -> int:
        return max(self.total_images - self.processed_images, 0)

    def processing_time_s(self, at_ms: int | None = None) -> float:
        if self.started_at_ms is None:
            return 0.0
        end = self.completed_at_ms or at_ms or now_ms()
        return max(end - self.started_at_ms, 0) / 1000.0

    def to_fields(self) -> dict[str, str]:
        """Flat string fields (a Redis hash)."""
        return {
            "job_id": self.job_id,
            "job_type": self.job_type.value,
            "status": self.status.value,
            "total_images": str(self.total_images),
            "spec": self.spec.to_json(),
            "priority": self.priority.value,
            "succeeded_images": str(self.succeeded_images),
            "failed_images": str(self.failed_images),
            "created_at_ms": str(self.created_at_ms),
            "started_at_ms": "" if self.started_at_ms is None else str(self.started_at_ms),
            "completed_at_ms": "" if self.completed_at_ms is None else str(self.completed_at_ms),
            "error_message": self.error_message,
            "webhook_url": self.webhook_url,
            "owner": self.owner,
            "image_seconds": repr(self.image_seconds),
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> JobRecord:
        def optional_int(name: str) -> int | None:
            value = fields.get(name, "")
            return int(value) if value else None

        return cls(
            job_id=fields["job_id"],
            job_type=JobType(fields["job_type"]),
            status=JobStatus(fields["status"]),
            total_images=int(fields["total_images"]),
            spec=JobSpec.from_json(fields["spec"]),
            priority=Priority(fields.get("priority", "normal")),
            succeeded_images=int(fields.get("succeeded_images", 0)),
            failed_images=int(fields.get("failed_images", 0)),
            created_at_ms=int(fields["created_at_ms"]),
            started_at_ms=optional_int("started_at_ms"),
            completed_at_ms=optional_int("completed_at_ms"),
            error_message=fields.get("error_message", ""),
            webhook_url=fields.get("webhook_url", ""),
            owner=fields.get("owner", ""),
            image_seconds=float(fields.get("image_seconds", 0.0)),
        )

    def evolve(self, **changes: Any) -> JobRecord:
        return replace(self, **changes)


@dataclass(frozen=True)
class ImageError:
    """Why one image failed: the domain error's kind (its class name), reason, message, fields."""

    kind: str
    reason: str
    message: str
    violations: tuple[FieldViolation, ...] = ()

    @classmethod
    def from_exception(cls, error: SamsvcError) -> ImageError:
        violations = tuple(error.violations) if isinstance(error, InvalidArgument) else ()
        return cls(kind=type(error).__name__, reason=error.reason, message=error.message, violations=violations)


@dataclass(frozen=True)
class StoredMask:
    """A mask's metadata and its encoded pixels, as kept in the store."""

    area: int
    bbox: tuple[int, int, int, int]
    predicted_iou: float
    stability_score: float
    point_coords: tuple[tuple[float, float], ...]
    crop_box: tuple[int, int, int, int]
    data: bytes | Rle | list[Polygon]

    @classmethod
    def from_encoded(cls, encoded: EncodedMask) -> StoredMask:
        r = encoded.record
        return cls(r.area, r.bbox, r.predicted_iou, r.stability_score, r.point_coords, r.crop_box, encoded.data)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "area": self.area,
            "bbox": list(self.bbox),
            "predicted_iou": self.predicted_iou,
            "stability_score": self.stability_score,
            "point_coords": [list(p) for p in self.point_coords],
            "crop_box": list(self.crop_box),
        }
        if isinstance(self.data, bytes):
            out["png"] = base64.b64encode(self.data).decode("ascii")
        elif isinstance(self.data, Rle):
            out["rle"] = {"size": list(self.data.size), "counts": self.data.counts}
        else:
            out["polygons"] = self.data
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StoredMask:
        pixels: bytes | Rle | list[Polygon]
        if "png" in data:
            pixels = base64.b64decode(data["png"])
        elif "rle" in data:
            pixels = Rle(size=(data["rle"]["size"][0], data["rle"]["size"][1]), counts=data["rle"]["counts"])
        else:
            pixels = [list(map(float, p)) for p in data["polygons"]]
        x, y, w, h = data["bbox"]
        cx, cy, cw, ch = data["crop_box"]
        return cls(
            area=int(data["area"]),
            bbox=(x, y, w, h),
            predicted_iou=float(data["predicted_iou"]),
            stability_score=float(data["stability_score"]),
            point_coords=tuple((float(p[0]), float(p[1])) for p in data["point_coords"]),
            crop_box=(cx, cy, cw, ch),
            data=pixels,
        )


@dataclass(frozen=True)
class ImageResult:
    """One image's outcome: masks, or its own error."""

    index: int
    masks: tuple[StoredMask, ...] = ()
    error: ImageError | None = None
    processing_time_s: float = 0.0
    visualization: bytes = b""
    width: int = 0
    height: int = 0
    #: An embedding job's image: its session id (its embedding is the job's output blob).
    image_id: str = ""
    #: The objects the image's export wrote (URLs or paths).
    exported: tuple[str, ...] = ()
    #: Why its export failed (EXPORT_FAILED); the masks are kept all the same.
    export_error: ImageError | None = None
    #: What the image ran: encoder passes (0 when its embedding was reused) and prompts decoded.
    encoder_passes: int = 0
    prompts: int = 0

    @property
    def succeeded(self) -> bool:
        return self.error is None

    @classmethod
    def from_outcome(cls, index: int, outcome: SegmentOutcome) -> ImageResult:
        return cls(
            index=index,
            masks=tuple(StoredMask.from_encoded(m) for m in outcome.masks),
            processing_time_s=outcome.processing_time_s,
            visualization=outcome.visualization or b"",
            width=outcome.width,
            height=outcome.height,
            encoder_passes=outcome.work.encoder_passes,
            prompts=outcome.work.prompts,
        )

    def to_json(self) -> str:
        return json.dumps(
            {
                "index": self.index,
                "masks": [m.to_dict() for m in self.masks],
                "error": _error_dict(self.error),
                "processing_time_s": self.processing_time_s,
                "visualization": base64.b64encode(self.visualization).decode("ascii"),
                "width": self.width,
                "height": self.height,
                "image_id": self.image_id,
                "exported": list(self.exported),
                "export_error": _error_dict(self.export_error),
                "encoder_passes": self.encoder_passes,
                "prompts": self.prompts,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> ImageResult:
        data = json.loads(text)
        return cls(
            index=int(data["index"]),
            masks=tuple(StoredMask.from_dict(m) for m in data["masks"]),
            error=_error_of(data.get("error")),
            exported=tuple(str(v) for v in data.get("exported", ())),
            export_error=_error_of(data.get("export_error")),
            processing_time_s=float(data["processing_time_s"]),
            visualization=base64.b64decode(data.get("visualization", "")),
            width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            image_id=str(data.get("image_id", "")),
            encoder_passes=int(data.get("encoder_passes", 0)),
            prompts=int(data.get("prompts", 0)),
        )


class EventKind(Enum):
    ACCEPTED = "accepted"
    IMAGE = "image"
    PROGRESS = "progress"
    FINISHED = "finished"


@dataclass(frozen=True)
class JobEvent:
    """One entry of a job's event log. `cursor` is its position; `data` is JSON text:
    for IMAGE an ImageResult, for PROGRESS/ACCEPTED counts, for FINISHED the job's fields."""

    cursor: str
    kind: EventKind
    data: str


def _error_dict(error: ImageError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    return {
        "kind": error.kind,
        "reason": error.reason,
        "message": error.message,
        "violations": [[v.field, v.description] for v in error.violations],
    }


def _error_of(data: dict[str, Any] | None) -> ImageError | None:
    if not data:
        return None
    return ImageError(
        kind=data["kind"],
        reason=data["reason"],
        message=data["message"],
        violations=tuple(FieldViolation(f, d) for f, d in data.get("violations", [])),
    )
