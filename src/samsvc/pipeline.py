"""One image through decoding, the engine and the encodings: the unit of work that the
synchronous Segment RPC runs (and that batch workers run per image).

Input arrives already checked by samsvc.validation except for the pixels themselves, whose
decoding happens here, off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from samsvc.encoding.masks import MaskEncoding, Polygon, Rle, encode_png, encode_polygons, encode_rle
from samsvc.encoding.visualization import overlay_png
from samsvc.engine.amg import AmgOptions, CancelToken, MaskRecord, generate_masks
from samsvc.engine.loader import ModelManager
from samsvc.validation.image import ImageHeader, decode_image


@dataclass(frozen=True)
class SegmentTask:
    """A checked request: the image bytes with their header, and the options to run."""

    image: bytes
    header: ImageHeader
    model: str
    options: AmgOptions
    encoding: MaskEncoding
    visualize: bool
    #: Run samsvc's faster generator (AMG_ENGINE=fast) instead of segment-anything's.
    fast: bool = False


@dataclass(frozen=True)
class EncodedMask:
    """A mask record with its pixels in the requested encoding."""

    record: MaskRecord
    data: bytes | Rle | list[Polygon]


@dataclass(frozen=True)
class SegmentOutcome:
    masks: list[EncodedMask]
    visualization: bytes | None
    width: int
    height: int
    model: str
    processing_time_s: float


def encode_mask(record: MaskRecord, encoding: MaskEncoding) -> EncodedMask:
    if encoding is MaskEncoding.PNG:
        return EncodedMask(record, encode_png(record.segmentation))
    if encoding is MaskEncoding.RLE:
        return EncodedMask(record, encode_rle(record.segmentation))
    return EncodedMask(record, encode_polygons(record.segmentation))


def run_segment(task: SegmentTask, models: ModelManager, cancel: CancelToken | None = None) -> SegmentOutcome:
    """Decode, generate, encode. Blocking: call it from a worker thread."""
    started = time.perf_counter()
    image = decode_image(task.image, task.header)
    if cancel is not None:
        cancel.raise_if_cancelled()
    model = models.get(task.model)
    records = generate_masks(model.sam, image, task.options, cancel, fast=task.fast)
    encoded = [encode_mask(record, task.encoding) for record in records]
    visualization = overlay_png(image, [r.segmentation for r in records]) if task.visualize else None
    return SegmentOutcome(
        masks=encoded,
        visualization=visualization,
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        model=task.model,
        processing_time_s=time.perf_counter() - started,
    )
