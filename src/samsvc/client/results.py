"""What the client returns: masks as numpy arrays on demand (whatever their wire format), with
their metadata, and helpers to save them as PNG files, COCO JSON and an overlay image."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from samsvc.client.errors import ClientError, from_status
from samsvc.client.images import ImageLike, image_array
from samsvc.encoding.masks import Rle, decode_png, decode_polygons, decode_rle, encode_png, encode_rle
from samsvc.encoding.visualization import overlay_png
from samsvc.v1 import cost_pb2, job_pb2, mask_pb2, segmentation_service_pb2

#: The one category of COCO files written here: SAM's masks carry no class.
COCO_CATEGORY = {"id": 1, "name": "object", "supercategory": "object"}


@dataclass(frozen=True)
class Mask:
    """One mask and its scores; `array` decodes its pixels (PNG, RLE or polygons) on first use."""

    proto: mask_pb2.Mask
    width: int
    height: int

    @property
    def area(self) -> int:
        return self.proto.area

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """x, y, width, height in pixels (COCO's order)."""
        x, y, w, h = self.proto.bbox
        return int(x), int(y), int(w), int(h)

    @property
    def predicted_iou(self) -> float:
        return self.proto.predicted_iou

    @property
    def stability_score(self) -> float:
        return self.proto.stability_score

    @property
    def point_coords(self) -> list[tuple[float, float]]:
        return [(p.x, p.y) for p in self.proto.point_coords]

    @property
    def crop_box(self) -> tuple[int, ...]:
        return tuple(self.proto.crop_box)

    @cached_property
    def array(self) -> npt.NDArray[np.bool_]:
        """The mask as an HxW bool array."""
        kind = self.proto.WhichOneof("data")
        if kind == "segmentation":
            return decode_png(self.proto.segmentation)
        if kind == "rle":
            return decode_rle(Rle(size=(self.proto.rle.size[0], self.proto.rle.size[1]), counts=self.proto.rle.counts))
        if kind == "polygons":
            return decode_polygons([list(p.points) for p in self.proto.polygons.polygons], self.height, self.width)
        return np.zeros((self.height, self.width), dtype=bool)

    def coco_rle(self) -> dict[str, Any]:
        """The mask as COCO RLE ({"size": [h, w], "counts": str})."""
        if self.proto.WhichOneof("data") == "rle":
            return {"size": list(self.proto.rle.size), "counts": self.proto.rle.counts}
        rle = encode_rle(self.array)
        return {"size": list(rle.size), "counts": rle.counts}


@dataclass(frozen=True)
class Cost:
    """What a call or an image ran and took (or, for a batch, is expected to): encoder passes,
    prompts decoded, seconds of inference and seconds waited for an inference slot."""

    encoder_passes: int = 0
    prompts: int = 0
    compute_s: float = 0.0
    queued_s: float = 0.0

    @classmethod
    def from_proto(cls, cost: cost_pb2.WorkCost) -> Cost:
        return cls(cost.encoder_passes, cost.prompts_decoded, cost.compute_seconds, cost.queued_seconds)


@dataclass(frozen=True)
class SegmentResult:
    """The masks found on one image."""

    width: int
    height: int
    masks: list[Mask]
    job_id: str = ""
    model: str = ""
    processing_time_s: float = 0.0
    cache_hit: bool = False
    visualization: bytes = b""
    cost: Cost = field(default_factory=Cost)

    @classmethod
    def from_response(cls, response: segmentation_service_pb2.SegmentResponse) -> SegmentResult:
        width, height = response.image_width, response.image_height
        return cls(
            width=width,
            height=height,
            masks=[Mask(m, width, height) for m in response.masks],
            job_id=response.job_id,
            model=response.model_type,
            processing_time_s=response.processing_time,
            cache_hit=response.cache_hit,
            visualization=response.visualization,
            cost=Cost.from_proto(response.cost),
        )

    def __len__(self) -> int:
        return len(self.masks)

    def __iter__(self) -> Iterator[Mask]:
        return iter(self.masks)

    def arrays(self) -> npt.NDArray[np.bool_]:
        """All masks as an NxHxW bool array."""
        if not self.masks:
            return np.zeros((0, self.height, self.width), dtype=bool)
        return np.stack([m.array for m in self.masks])

    def save_pngs(self, directory: str | Path, prefix: str = "mask_") -> list[Path]:
        """One 1-bit PNG per mask (`mask_000.png`, ...), in the result's order."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for number, mask in enumerate(self.masks):
            path = out / f"{prefix}{number:03d}.png"
            data = (
                mask.proto.segmentation if mask.proto.WhichOneof("data") == "segmentation" else encode_png(mask.array)
            )
            path.write_bytes(data)
            paths.append(path)
        return paths

    def coco(self, image_id: int = 1, file_name: str = "", first_annotation_id: int = 1) -> dict[str, Any]:
        """A COCO dataset of this image's masks (RLE segmentations, bbox, area, scores)."""
        return coco_dataset([(image_id, file_name, self)], first_annotation_id)

    def save_coco(self, path: str | Path, image_id: int = 1, file_name: str = "") -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(self.coco(image_id, file_name)), encoding="utf-8")
        return target

    def overlay(self, image: ImageLike) -> bytes:
        """PNG bytes of `image` with every mask painted over it (the server's visualization when it sent one)."""
        if self.visualization:
            return self.visualization
        return overlay_png(image_array(image), [m.array for m in self.masks])

    def save_overlay(self, image: ImageLike, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.overlay(image))
        return target


def coco_dataset(images: Sequence[tuple[int, str, SegmentResult]], first_annotation_id: int = 1) -> dict[str, Any]:
    """A COCO dataset for several images' results."""
    entries, annotations = [], []
    annotation_id = first_annotation_id
    for image_id, file_name, result in images:
        entries.append({"id": image_id, "file_name": file_name, "width": result.width, "height": result.height})
        for mask in result.masks:
            annotations.append(
                {
                    "id": annotation_id,
                    "image_id": image_id,
                    "category_id": COCO_CATEGORY["id"],
                    "segmentation": mask.coco_rle(),
                    "area": mask.area,
                    "bbox": list(mask.bbox),
                    "iscrowd": 0,
                    "predicted_iou": mask.predicted_iou,
                    "stability_score": mask.stability_score,
                    "point_coords": [list(p) for p in mask.point_coords],
                }
            )
            annotation_id += 1
    return {"images": entries, "annotations": annotations, "categories": [COCO_CATEGORY]}


@dataclass(frozen=True)
class ImageOutcome:
    """One image of a batch: its masks, or why it failed."""

    job_id: str
    index: int
    result: SegmentResult | None = None
    error: ClientError | None = None
    processing_time_s: float = 0.0
    #: An embedding job's image: its session id.
    image_id: str = ""
    #: Objects the batch's export wrote for this image (URLs or paths).
    exported_objects: tuple[str, ...] = ()
    #: Why the export of this image failed (its masks are in `result` all the same).
    export_error: ClientError | None = None
    #: What the image ran (encoder passes, prompts) and its seconds.
    cost: Cost = field(default_factory=Cost)

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_proto(cls, job_id: str, image: job_pb2.ImageResult, model: str = "") -> ImageOutcome:
        if image.HasField("error"):
            return cls(
                job_id,
                image.index,
                error=from_status(image.error),
                processing_time_s=image.processing_time,
                cost=Cost.from_proto(image.cost),
            )
        width, height = image.image_width, image.image_height
        result = SegmentResult(
            width=width,
            height=height,
            masks=[Mask(m, width, height) for m in image.masks],
            job_id=job_id,
            model=model,
            processing_time_s=image.processing_time,
            visualization=image.visualization,
            cost=Cost.from_proto(image.cost),
        )
        return cls(
            job_id,
            image.index,
            result=result,
            processing_time_s=image.processing_time,
            image_id=image.image_id,
            exported_objects=tuple(image.exported_objects),
            export_error=from_status(image.export_error) if image.HasField("export_error") else None,
            cost=Cost.from_proto(image.cost),
        )


@dataclass(frozen=True)
class JobUpdate:
    """One event of a job's stream: accepted, an image, progress, or finished (with the job)."""

    kind: str
    job_id: str
    cursor: str
    image: ImageOutcome | None = None
    processed: int = 0
    failed: int = 0
    total: int = 0
    estimated_time_s: int = 0
    #: On `accepted`: what each image is expected to cost.
    estimated_image_cost: Cost | None = None
    job: job_pb2.Job | None = field(default=None)

    @classmethod
    def from_proto(cls, event: job_pb2.JobEvent) -> JobUpdate:
        kind = event.WhichOneof("event") or ""
        job_id, cursor = event.job_id, event.cursor
        if kind == "accepted":
            accepted = event.accepted
            return cls(
                kind,
                job_id,
                cursor,
                total=accepted.total_images,
                estimated_time_s=accepted.estimated_time,
                estimated_image_cost=Cost.from_proto(accepted.estimated_image_cost),
            )
        if kind == "image":
            return cls(kind, job_id, cursor, image=ImageOutcome.from_proto(event.job_id, event.image))
        if kind == "progress":
            progress = event.progress
            return cls(
                kind,
                job_id,
                cursor,
                processed=progress.processed_images,
                failed=progress.failed_images,
                total=progress.total_images,
                estimated_time_s=progress.estimated_time,
            )
        job = event.finished.job
        return cls(
            kind,
            job_id,
            cursor,
            job=job,
            processed=job.processed_images,
            failed=job.failed_images,
            total=job.total_images,
        )
