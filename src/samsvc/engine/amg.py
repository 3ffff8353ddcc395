"""Automatic mask generation: a grid of point prompts over the image (and its crops), the
masks SAM returns for them, filtered and de-duplicated.

The answer is segment-anything's `SamAutomaticMaskGenerator`'s, computed by it: this module
only adds a cancellation check between prompt batches (the safe point where a request that
went away stops), keeps crop layers that find no mask from failing, and returns plain records.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from samsvc.errors import Cancelled

#: The seed's defaults (they differ from segment-anything's 32 / 0.88 / 0.95).
DEFAULT_POINTS_PER_SIDE = 64
DEFAULT_PRED_IOU_THRESH = 0.90
DEFAULT_STABILITY_SCORE_THRESH = 0.92
#: segment-anything's defaults for the rest.
DEFAULT_POINTS_PER_BATCH = 64
DEFAULT_STABILITY_SCORE_OFFSET = 1.0
DEFAULT_BOX_NMS_THRESH = 0.7
DEFAULT_CROP_N_LAYERS = 0
DEFAULT_CROP_NMS_THRESH = 0.7
DEFAULT_CROP_OVERLAP_RATIO = 512 / 1500
DEFAULT_CROP_N_POINTS_DOWNSCALE_FACTOR = 1
DEFAULT_MIN_MASK_REGION_AREA = 0
#: SAM 2's mask-to-mask refinement (its generator's use_m2m) is off unless asked for.
DEFAULT_USE_M2M = False


@dataclass(frozen=True)
class AmgOptions:
    """Every parameter of automatic mask generation; all affect the output except points_per_batch."""

    points_per_side: int = DEFAULT_POINTS_PER_SIDE
    points_per_batch: int = DEFAULT_POINTS_PER_BATCH
    pred_iou_thresh: float = DEFAULT_PRED_IOU_THRESH
    stability_score_thresh: float = DEFAULT_STABILITY_SCORE_THRESH
    stability_score_offset: float = DEFAULT_STABILITY_SCORE_OFFSET
    box_nms_thresh: float = DEFAULT_BOX_NMS_THRESH
    crop_n_layers: int = DEFAULT_CROP_N_LAYERS
    crop_nms_thresh: float = DEFAULT_CROP_NMS_THRESH
    crop_overlap_ratio: float = DEFAULT_CROP_OVERLAP_RATIO
    crop_n_points_downscale_factor: int = DEFAULT_CROP_N_POINTS_DOWNSCALE_FACTOR
    min_mask_region_area: int = DEFAULT_MIN_MASK_REGION_AREA
    #: SAM 2 only: refine each mask by prompting the decoder with it (SAM2AutomaticMaskGenerator).
    use_m2m: bool = DEFAULT_USE_M2M

    def generator_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of SamAutomaticMaskGenerator for these options (all but use_m2m)."""
        return {
            "points_per_side": self.points_per_side,
            "points_per_batch": self.points_per_batch,
            "pred_iou_thresh": self.pred_iou_thresh,
            "stability_score_thresh": self.stability_score_thresh,
            "stability_score_offset": self.stability_score_offset,
            "box_nms_thresh": self.box_nms_thresh,
            "crop_n_layers": self.crop_n_layers,
            "crop_nms_thresh": self.crop_nms_thresh,
            "crop_overlap_ratio": self.crop_overlap_ratio,
            "crop_n_points_downscale_factor": self.crop_n_points_downscale_factor,
            "min_mask_region_area": self.min_mask_region_area,
        }


@dataclass(frozen=True)
class MaskRecord:
    """One mask as SAM's generator describes it. Its pixels stay run-length encoded (a few KB
    where the H x W array is megabytes) until something asks for them, so the memory of the
    masks a request keeps grows with their outlines, not with their number times the image."""

    #: segment-anything's uncompressed RLE: {"size": [h, w], "counts": column-major run lengths
    #: starting with a run of zeros}, the counts as a uint32 array (4 bytes a run).
    rle: dict[str, Any] = field(repr=False)
    area: int
    #: [x, y, width, height] in pixels.
    bbox: tuple[int, int, int, int]
    predicted_iou: float
    stability_score: float
    point_coords: tuple[tuple[float, float], ...]
    #: [x, y, width, height] of the crop the mask came from.
    crop_box: tuple[int, int, int, int]

    @property
    def segmentation(self) -> npt.NDArray[np.bool_]:
        """The H x W mask, decoded now (each call decodes again)."""
        return rle_to_mask(self.rle)


def compact_rle(rle: dict[str, Any]) -> dict[str, Any]:
    """segment-anything's RLE with its run lengths in a uint32 array instead of a list of ints."""
    return {"size": [int(v) for v in rle["size"]], "counts": np.asarray(rle["counts"], dtype=np.uint32)}


def rle_to_mask(rle: dict[str, Any]) -> npt.NDArray[np.bool_]:
    """segment-anything's `rle_to_mask` (an H x W view of a column-major run expansion) with the
    runs expanded by one `np.repeat` instead of a Python loop over them."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    mask = np.repeat(np.arange(counts.size) % 2 == 1, counts)
    return mask.reshape(w, h).transpose()


#: Masks each point prompt yields before filtering (SAM's multimask output).
MASKS_PER_PROMPT = 3


def prompt_count(options: AmgOptions) -> int:
    """The point prompts automatic mask generation runs for `options`, known before it starts:
    crop layer i has (2**i)**2 crops of int(points_per_side / downscale**i)**2 points each
    (segment-anything's generate_crop_boxes and build_all_layer_point_grids)."""
    total = 0
    for layer in range(options.crop_n_layers + 1):
        side = int(options.points_per_side / options.crop_n_points_downscale_factor**layer)
        total += (2**layer) ** 2 * side * side
    return total


class CancelToken:
    """Set by whoever owns the request; checked by the engine at its safe points."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("segmentation was cancelled", reason="REQUEST_CANCELLED")


class CancellableGeneration:
    """Mixed into a family's automatic mask generator (segment-anything's or sam2's: the same
    structure): stop between prompt batches when `_cancel` fires, and keep crop layers that
    find no mask from failing."""

    _cancel: CancelToken | None

    def _process_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self._cancel is not None:
            self._cancel.raise_if_cancelled()
        return super()._process_batch(*args, **kwargs)  # type: ignore[misc]

    def _process_crop(self, *args: Any, **kwargs: Any) -> Any:
        data = super()._process_crop(*args, **kwargs)  # type: ignore[misc]
        if len(data["rles"]) == 0:
            # The generators make a crop without masks a 1-D empty tensor of crop boxes, which
            # their crop NMS cannot index when no crop has masks (IndexError on a valid request).
            data["crop_boxes"] = torch.zeros((0, 4), dtype=torch.int64)
        return data


class _CancellableGenerator(CancellableGeneration, SamAutomaticMaskGenerator):  # type: ignore[misc]
    """The reference generator, stopping between prompt batches when its token is cancelled."""

    def __init__(self, model: Sam, cancel: CancelToken | None, **kwargs: Any) -> None:
        super().__init__(model, output_mode="uncompressed_rle", **kwargs)
        self._cancel = cancel


def generate_masks(
    model: Sam,
    image: npt.NDArray[np.uint8],
    options: AmgOptions,
    cancel: CancelToken | None = None,
    *,
    fast: bool = False,
    precision: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
) -> list[MaskRecord]:
    """Masks for an HxWx3 uint8 RGB image; raises Cancelled if `cancel` fires mid-way.

    `fast` uses samsvc.engine.fast_amg (the same masks and order; scores equal to within float
    rounding) instead of segment-anything's own generator; `precision` (autocast for fp16 or
    bf16) applies to the fast engine's network passes. The reference always runs in fp32.
    """
    if fast:
        from samsvc.engine.fast_amg import FastMaskGenerator

        return FastMaskGenerator(model, options, cancel, precision).generate(image)
    generator = _CancellableGenerator(model, cancel, **options.generator_kwargs())
    with torch.inference_mode():
        raw = generator.generate(image)
    return [amg_record(item) for item in raw]


def amg_record(item: dict[str, Any]) -> MaskRecord:
    """A generator's mask dict (segment-anything's or sam2's: the same keys) as a record."""
    x, y, w, h = (int(v) for v in item["bbox"])
    cx, cy, cw, ch = (int(v) for v in item["crop_box"])
    return MaskRecord(
        rle=compact_rle(item["segmentation"]),
        area=int(item["area"]),
        bbox=(x, y, w, h),
        predicted_iou=float(item["predicted_iou"]),
        stability_score=float(item["stability_score"]),
        point_coords=tuple((float(px), float(py)) for px, py in item["point_coords"]),
        crop_box=(cx, cy, cw, ch),
    )
