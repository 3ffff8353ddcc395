"""The prompt decoder as CVAT's SAM plugin loads it (`/assets/decoder.onnx` of the `cvat_ui`
image; cvat-ai/cvat `cvat-ui/plugins/sam/src/ts/inference.worker.ts` and `index.tsx`).

CVAT's own file is segment-anything's `SamOnnxModel` exported with four more outputs (cvat-ai/cvat
PR #6019): the plugin feeds the usual inputs (`point_coords` [1, N, 2] scaled by
1024 / max(h, w) with no padding point, labels 1 positive, 0 negative, 2 and 3 a box's corners;
`orig_im_size` [h, w]; the previous `low_res_masks` as `mask_input` when the clicks extend the
last ones) and reads `xtl`, `ytl`, `xbr`, `ybr` (the inclusive bounding box of the mask, int64)
and `masks` cropped to that box (uint8; it keeps values > 0, row by row, `xbr - xtl + 1` wide),
then `low_res_masks` for the next click.

`CvatOnnxModel` wraps either of samsvc's graphs (decoder_graph: the folded one, or the reference
one for a decoder it does not rewrite) and adds that post-processing. Its mask is the one
`SamOnnxModel` picks: with one or two prompt tokens (a click, two clicks, a box) the best of the
three multimask outputs by predicted IoU, else the single-mask output; CVAT sends no padding
point, so a single click is one token (SamPredictor and SegmentPrompts would add one). An empty
mask answers the box (0, 0, 0, 0) and one pixel of 0, which the plugin draws as nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Outputs in CVAT's order (the plugin reads them by name).
OUTPUT_NAMES = ("masks", "iou_predictions", "low_res_masks", "xtl", "ytl", "xbr", "ybr")
#: segment-anything's mask threshold: a pixel is in the mask when its logit is above it.
MASK_THRESHOLD = 0.0
#: Beyond any image side (the first index of an empty row stands at it, then is replaced).
_NO_INDEX = 1 << 30


def _indices(flags: Tensor) -> Tensor:
    """0, 1, ... along a 1-D tensor, as graph values (its length follows each call's image)."""
    return torch.cumsum(torch.ones_like(flags, dtype=torch.int64), 0) - 1


def _span(flags: Tensor, found: Tensor) -> tuple[Tensor, Tensor]:
    """The first and last index where `flags` is set; (0, 0) when the mask is empty."""
    index = _indices(flags)
    zero = torch.zeros((), dtype=torch.int64)
    first = torch.where(flags, index, torch.full_like(index, _NO_INDEX)).min()
    last = torch.where(flags, index, torch.full_like(index, -1)).max()
    return torch.where(found, first, zero), torch.where(found, last, zero)


class CvatOnnxModel(nn.Module):
    """A decoder export model (decoder_graph's) with CVAT's outputs."""

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder

    @torch.no_grad()
    def forward(
        self,
        image_embeddings: Tensor,
        point_coords: Tensor,
        point_labels: Tensor,
        mask_input: Tensor,
        has_mask_input: Tensor,
        orig_im_size: Tensor,
    ) -> tuple[Tensor, ...]:
        masks, iou, low_res = self.decoder(
            image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size
        )
        mask = masks[0, 0] > MASK_THRESHOLD
        columns, rows = mask.any(dim=0), mask.any(dim=1)
        found = columns.any()
        xtl, xbr = _span(columns, found)
        ytl, ybr = _span(rows, found)
        # Tensor bounds (a Range in the graph): the crop follows each call's mask.
        rows_kept = torch.arange(ytl, ybr + 1)  # type: ignore[call-overload]
        crop = mask.index_select(0, rows_kept).index_select(1, torch.arange(xtl, xbr + 1))  # type: ignore[call-overload]
        return crop.to(torch.uint8)[None, None], iou, low_res, xtl.view(1), ytl.view(1), xbr.view(1), ybr.view(1)
