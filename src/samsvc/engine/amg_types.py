"""What automatic mask generation takes and gives, as plain data: its options (with their
`DEFAULT_*` values), the mask records it returns, the number of prompts it runs, and the cancel
token it checks. Nothing here imports torch or a model library, so the processes that only
carry jobs (the job store, the webhook process) use these types without loading the engine."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from samsvc.errors import Cancelled

#: The design document's defaults (they differ from segment-anything's 32 / 0.88 / 0.95).
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
