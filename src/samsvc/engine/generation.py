"""What every family's automatic mask generator shares (segment-anything's and sam2's have the
same structure): a cancellation check between prompt batches, crop layers without masks kept
from failing, and the generators' mask dicts as plain records."""

from __future__ import annotations

from typing import Any

import torch

from samsvc.engine.amg_types import CancelToken, MaskRecord, compact_rle


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
