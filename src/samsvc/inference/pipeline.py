"""One image through decoding, the engine and the encodings: the unit of work that the
synchronous Segment RPC runs (and that batch workers run per image). Prompts and embeddings
are samsvc.inference.interactive's.

Input arrives already checked by samsvc.validation except for the pixels themselves, whose
decoding happens here, off the event loop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, overload

import numpy as np
import numpy.typing as npt

from samsvc.encoding.masks import (
    MaskEncoding,
    Polygon,
    Rle,
    encode_png,
    encode_polygons,
    encode_rle,
    encode_rle_runs,
)
from samsvc.encoding.visualization import overlay_png
from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord
from samsvc.engine.costs import WorkCost, grid_work
from samsvc.infra import metrics
from samsvc.validation.image import ImageHeader, decode_image

if TYPE_CHECKING:  # the engine loads in the processes that run it, not in every importer
    from samsvc.engine.loader import ModelManager


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
    #: What the grid ran (encoder passes, points) and its seconds (decoding and encoding included).
    work: WorkCost


def encode_pixels(mask: npt.NDArray[np.bool_], encoding: MaskEncoding) -> bytes | Rle | list[Polygon]:
    """A boolean mask in the requested wire encoding."""
    if encoding is MaskEncoding.PNG:
        return encode_png(mask)
    if encoding is MaskEncoding.RLE:
        return encode_rle(mask)
    return encode_polygons(mask)


def encode_mask(record: MaskRecord, encoding: MaskEncoding) -> EncodedMask:
    """The record's pixels in `encoding`, decoded from its runs only when the encoding needs the
    array (COCO RLE is written from the runs directly)."""
    if encoding is MaskEncoding.RLE:
        h, w = record.rle["size"]
        return EncodedMask(record, encode_rle_runs((int(h), int(w)), record.rle["counts"].tolist()))
    return EncodedMask(record, encode_pixels(record.segmentation, encoding))


class _Decoded(Sequence[npt.NDArray[np.bool_]]):
    """The records' masks, each decoded when read (one at a time, never all at once)."""

    def __init__(self, records: list[MaskRecord]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> npt.NDArray[np.bool_]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[npt.NDArray[np.bool_]]: ...

    def __getitem__(self, index: int | slice) -> npt.NDArray[np.bool_] | Sequence[npt.NDArray[np.bool_]]:
        if isinstance(index, slice):
            return _Decoded(self._records[index])
        return self._records[index].segmentation


def run_segment(task: SegmentTask, models: ModelManager, cancel: CancelToken | None = None) -> SegmentOutcome:
    """Decode, generate, encode. Blocking: call it from a worker thread."""
    started = time.perf_counter()
    image = decode_image(task.image, task.header)
    if cancel is not None:
        cancel.raise_if_cancelled()
    model = models.get(task.model)
    metrics.MODEL_LOAD_SECONDS.labels(task.model).set(model.load_time_s)
    generating = time.perf_counter()
    records = model.generate_masks(image, task.options, cancel, fast=task.fast)
    work = grid_work(task.options)
    models.costs.observe_grid(task.model, work, time.perf_counter() - generating)
    encoded = [encode_mask(record, task.encoding) for record in records]
    visualization = None
    if task.visualize:
        visualization = overlay_png(image, _Decoded(records), areas=[r.area for r in records])
    elapsed = time.perf_counter() - started
    metrics.IMAGE_SECONDS.labels(task.model).observe(elapsed)
    return SegmentOutcome(
        masks=encoded,
        visualization=visualization,
        width=int(image.shape[1]),
        height=int(image.shape[0]),
        model=task.model,
        processing_time_s=elapsed,
        work=WorkCost(work.encoder_passes, work.prompts, elapsed),
    )


def image_key(data: bytes) -> str:
    """Content hash of the image bytes, for cache keys."""
    return hashlib.sha256(data).hexdigest()


def result_cache_key(task: SegmentTask, digest: str, owner: str) -> str:
    """Everything that shapes a Segment answer: the image's bytes, the checkpoint's digest and
    every output-affecting option (points_per_batch changes speed only); and whose it is: an
    answer is cached for the key that asked, so a hit never tells one key what another sent."""
    options = dataclasses.asdict(task.options)
    options.pop("points_per_batch")
    material = json.dumps(
        {
            "owner": owner,
            "image": image_key(task.image),
            "model": task.model,
            "digest": digest,
            "options": options,
            "encoding": task.encoding.value,
            "visualize": task.visualize,
            "engine": "fast" if task.fast else "reference",
        },
        sort_keys=True,
    )
    return "segment:" + hashlib.sha256(material.encode()).hexdigest()
