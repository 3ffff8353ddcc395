"""Automatic mask generation with the reference's answer, faster.

The procedure is `segment_anything.SamAutomaticMaskGenerator`'s step for step (the same point
grids, crops, batches, filters, NMS and ordering), with changes that leave every result the
same:
- the image encoder computes its attention a slice of queries at a time
  (samsvc.engine.sam.fast_encoder: the same embedding in half the time and a fraction of the memory);
- the mask decoder computes what all prompts of a batch share once and folds its projections
  into the prompt tokens (samsvc.engine.sam.fast_decoder);
- masks are dropped by predicted IoU before the decoder's upscaling (a prompt none of whose
  masks pass is never upscaled) and before they are upsampled to full resolution, so only
  survivors pay for either (both are per mask, so survivors come out the same),
  and upsampling skips the padding rows and columns the reference computes and then crops
  (bit-identical), a few masks at a time;
- run-length encoding splits all masks' change points at once instead of scanning them once
  per mask, and decoding expands all runs with one `np.repeat`;
- mask records are joined without segment-anything's per-batch `deepcopy` of every RLE.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (PyTorch's convention)
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam
from segment_anything.utils.amg import (
    MaskData,
    area_from_rle,
    batch_iterator,
    batched_mask_to_box,
    box_xyxy_to_xywh,
    build_all_layer_point_grids,
    calculate_stability_score,
    generate_crop_boxes,
    is_box_near_crop_edge,
    uncrop_boxes_xyxy,
    uncrop_masks,
    uncrop_points,
)
from torchvision.ops.boxes import batched_nms, box_area  # type: ignore[import-untyped]

from samsvc.engine.amg_types import AmgOptions, CancelToken, MaskRecord, compact_rle
from samsvc.engine.sam.fast_decoder import decode_prompts
from samsvc.engine.sam.fast_encoder import FastPredictor


def masks_to_rles(masks: torch.Tensor) -> list[dict[str, Any]]:
    """Uncompressed COCO RLEs of B x H x W boolean masks, equal to segment-anything's
    `mask_to_rle_pytorch` but with one pass over all masks' change points."""
    b, h, w = masks.shape
    flat = masks.permute(0, 2, 1).flatten(1)
    change = (flat[:, 1:] ^ flat[:, :-1]).nonzero()
    per_mask = torch.bincount(change[:, 0], minlength=b).tolist() if b else []
    positions = (change[:, 1] + 1).cpu().numpy()
    first = flat[:, 0].tolist()
    out: list[dict[str, Any]] = []
    start = 0
    for i in range(b):
        edges = np.concatenate(([0], positions[start : start + per_mask[i]], [h * w]))
        start += per_mask[i]
        counts: list[int] = [] if first[i] == 0 else [0]
        counts.extend(np.diff(edges).tolist())
        out.append({"size": [h, w], "counts": counts})
    return out


#: Masks upsampled at a time on a CPU (per mask, so the answer does not depend on it). 16 masks
#: of a 1000 x 872 photo on this project's 2-core CPUs (`uv run python -m bench.cpu_defaults`,
#: 2026-12): 1 to 4 at a time within 6% of one another (4: 46 ms), 8 to 16 at once 1.06-1.32x.
DEFAULT_CPU_UPSAMPLE_GROUP = 4


def upsample_masks(
    model: Sam, low_res: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
) -> torch.Tensor:
    """`Sam.postprocess_masks` bit for bit, upsampling only the low-resolution rows and columns
    that survive its crop to `input_size`.

    The reference upsamples every mask to the padded model input (1024 x 1024), crops the
    image's part and resizes that to the original size. Here the low-resolution masks are cut to
    the rows and columns the crop reads (plus one for the interpolation's right neighbour) and
    upsampled by the same factor: the scale (rows in / rows out) is the same number, so every
    kept pixel is computed from the same inputs with the same weights.
    """
    img = model.image_encoder.img_size
    low_h, low_w = low_res.shape[-2:]
    if img % low_h or img % low_w:
        result: torch.Tensor = model.postprocess_masks(low_res, input_size, original_size)
        return result
    fh, fw = img // low_h, img // low_w
    rows = min(low_h, -(-input_size[0] // fh) + 1)
    cols = min(low_w, -(-input_size[1] // fw) + 1)
    cut = low_res[..., :rows, :cols].contiguous()

    def upsample(group: torch.Tensor) -> torch.Tensor:
        masks = F.interpolate(group, (rows * fh, cols * fw), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)

    if cut.device.type != "cpu" or cut.shape[0] <= DEFAULT_CPU_UPSAMPLE_GROUP:
        return upsample(cut)
    # A few masks at a time: the model-input-sized intermediate of a whole batch is tens of MiB,
    # and on a CPU a fresh allocation of that size costs more in page faults than the work.
    out = cut.new_empty(*cut.shape[:-2], *original_size)
    for start in range(0, cut.shape[0], DEFAULT_CPU_UPSAMPLE_GROUP):
        out[start : start + DEFAULT_CPU_UPSAMPLE_GROUP] = upsample(cut[start : start + DEFAULT_CPU_UPSAMPLE_GROUP])
    return out


class UnsharedMaskData(MaskData):  # type: ignore[misc]
    """MaskData whose lists (the RLEs) are joined without `deepcopy`.

    segment-anything's `MaskData.cat` deep-copies every list it receives and rebuilds the
    accumulated one, once per prompt batch and again per crop: for RLEs that is a copy of every
    run length, a large share of a whole generation on a CPU. The RLEs here are built by this
    module and never shared, so joining them is enough; tensors and arrays are concatenated as
    the reference does, and `filter` reads the keep mask once instead of once per list item.
    """

    def cat(self, new_stats: MaskData) -> None:
        for key, value in new_stats.items():
            current = self._stats.get(key)
            if current is None:
                self._stats[key] = list(value) if isinstance(value, list) else value
            elif isinstance(value, torch.Tensor):
                self._stats[key] = torch.cat([current, value], dim=0)
            elif isinstance(value, np.ndarray):
                self._stats[key] = np.concatenate([current, value], axis=0)
            elif isinstance(value, list):
                current.extend(value)
            else:
                raise TypeError(f"MaskData key {key} has an unsupported type {type(value)}.")

    def filter(self, keep: torch.Tensor) -> None:
        keep = torch.as_tensor(keep)
        rows = keep.nonzero()[:, 0].tolist() if keep.dtype == torch.bool else keep.tolist()
        lists = {key: value for key, value in self._stats.items() if isinstance(value, list)}
        for key in lists:
            del self._stats[key]
        super().filter(keep)
        self._stats.update({key: [value[i] for i in rows] for key, value in lists.items()})


#: Prompts per decoder pass on a CPU. After the decoder's first layer every prompt carries its
#: own copy of the image tokens (4096 x 256 floats), so the work is memory-bound and a few prompts
#: at a time stay in cache. A whole 16 x 16 grid on a 1000 x 872 photo on this project's 2-core
#: CPUs (`uv run python -m bench.cpu_defaults --only prompt_batch`, three runs, 2026-12): 2 and 4
#: per pass at the bottom (4.7-5.5 s; 2 took 0.87x, 0.91x and 1.04x of 4's time), 8 1.06x, 16
#: and 64 per pass 1.0-1.2x, 1 per pass 1.3x of 2's.
#: On a GPU the request's points_per_batch is kept.
#: Masks and their order do not depend on it: every step is per mask until the final NMS.
DEFAULT_CPU_PROMPT_BATCH = 2


class FastMaskGenerator:
    def __init__(
        self,
        model: Sam,
        options: AmgOptions,
        cancel: CancelToken | None = None,
        precision: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model = model
        #: Context for the network passes (autocast for fp16/bf16); post-processing stays fp32.
        self.precision = precision or contextlib.nullcontext
        self.options = options
        self.cancel = cancel
        self.predictor = FastPredictor(model)
        self.point_grids = build_all_layer_point_grids(
            options.points_per_side, options.crop_n_layers, options.crop_n_points_downscale_factor
        )

    def _prompt_batch(self) -> int:
        if self.predictor.device.type == "cpu":
            return min(self.options.points_per_batch, DEFAULT_CPU_PROMPT_BATCH)
        return self.options.points_per_batch

    def _check(self) -> None:
        if self.cancel is not None:
            self.cancel.raise_if_cancelled()

    @torch.inference_mode()
    def generate(self, image: npt.NDArray[np.uint8]) -> list[MaskRecord]:
        o = self.options
        data = self._generate_masks(image)
        if o.min_mask_region_area > 0:
            data = SamAutomaticMaskGenerator.postprocess_small_regions(
                data, o.min_mask_region_area, max(o.box_nms_thresh, o.crop_nms_thresh)
            )
        records = []
        for idx, rle in enumerate(data["rles"]):
            x, y, w, h = (int(v) for v in box_xyxy_to_xywh(data["boxes"][idx]).tolist())
            cx, cy, cw, ch = (int(v) for v in box_xyxy_to_xywh(data["crop_boxes"][idx]).tolist())
            px, py = data["points"][idx].tolist()
            records.append(
                MaskRecord(
                    rle=compact_rle(rle),
                    area=int(area_from_rle(rle)),
                    bbox=(x, y, w, h),
                    predicted_iou=float(data["iou_preds"][idx].item()),
                    stability_score=float(data["stability_score"][idx].item()),
                    point_coords=((float(px), float(py)),),
                    crop_box=(cx, cy, cw, ch),
                )
            )
        return records

    def _generate_masks(self, image: npt.NDArray[np.uint8]) -> MaskData:
        orig_size = image.shape[:2]
        crop_boxes, layer_idxs = generate_crop_boxes(
            orig_size, self.options.crop_n_layers, self.options.crop_overlap_ratio
        )
        data = UnsharedMaskData()
        for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True):
            data.cat(self._process_crop(image, crop_box, layer_idx, orig_size))
        if len(crop_boxes) > 1:
            scores = 1 / box_area(data["crop_boxes"])
            scores = scores.to(data["boxes"].device)
            keep = batched_nms(
                data["boxes"].float(),
                scores,
                torch.zeros_like(data["boxes"][:, 0]),
                iou_threshold=self.options.crop_nms_thresh,
            )
            data.filter(keep)
        data.to_numpy()
        return data

    def _process_crop(
        self, image: npt.NDArray[np.uint8], crop_box: list[int], layer_idx: int, orig_size: tuple[int, ...]
    ) -> MaskData:
        x0, y0, x1, y1 = crop_box
        cropped = image[y0:y1, x0:x1, :]
        cropped_size = cropped.shape[:2]
        self._check()
        with self.precision():
            self.predictor.set_image(cropped)
        points_scale = np.array(cropped_size)[None, ::-1]
        points_for_image = self.point_grids[layer_idx] * points_scale
        data = UnsharedMaskData()
        for (points,) in batch_iterator(self._prompt_batch(), points_for_image):
            self._check()
            data.cat(self._process_batch(points, cropped_size, crop_box, orig_size))
        self.predictor.reset_image()
        keep = batched_nms(
            data["boxes"].float(),
            data["iou_preds"],
            torch.zeros_like(data["boxes"][:, 0]),
            iou_threshold=self.options.box_nms_thresh,
        )
        data.filter(keep)
        data["boxes"] = uncrop_boxes_xyxy(data["boxes"], crop_box)
        data["points"] = uncrop_points(data["points"], crop_box)
        crop_boxes = [crop_box for _ in range(len(data["rles"]))]
        data["crop_boxes"] = torch.tensor(crop_boxes, dtype=torch.int64).reshape(-1, 4)  # (0, 4) when empty
        return data

    def _process_batch(
        self, points: npt.NDArray[Any], im_size: tuple[int, ...], crop_box: list[int], orig_size: tuple[int, ...]
    ) -> MaskData:
        o = self.options
        orig_h, orig_w = orig_size
        predictor = self.predictor
        model = self.model
        transformed = predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, device=predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        sparse, dense = model.prompt_encoder(points=(in_points[:, None, :], in_labels[:, None]), boxes=None, masks=None)
        with self.precision():
            decoded = decode_prompts(
                model.mask_decoder, predictor.features, model.prompt_encoder.get_dense_pe(), sparse, dense
            )
            iou_preds = decoded.iou_pred[:, 1:].float()  # multimask output
            if o.pred_iou_thresh > 0.0:
                passing = iou_preds > o.pred_iou_thresh
            else:
                passing = torch.ones_like(iou_preds, dtype=torch.bool)
            # Prompts none of whose masks pass the IoU filter are never upscaled.
            prompts = passing.any(dim=1)
            keep = passing[prompts].flatten()
            low_res = decoded.masks(model.mask_decoder, prompts)[:, 1:].float().flatten(0, 1)[keep]
        iou_flat = iou_preds[prompts].flatten()[keep]
        point_rows = torch.as_tensor(points)[prompts.cpu()].repeat_interleave(iou_preds.shape[1], dim=0)[keep]
        masks = upsample_masks(model, low_res[:, None], predictor.input_size, predictor.original_size)[:, 0]
        data = UnsharedMaskData(masks=masks, iou_preds=iou_flat, points=point_rows)
        data["stability_score"] = calculate_stability_score(
            data["masks"], model.mask_threshold, o.stability_score_offset
        )
        if o.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= o.stability_score_thresh)
        data["masks"] = data["masks"] > model.mask_threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep_mask = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep_mask):
            data.filter(keep_mask)
        data["masks"] = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = masks_to_rles(data["masks"])
        del data["masks"]
        return data
