"""Automatic mask generation: samsvc's fast engine against segment-anything's generator on the
same model, image and parameters, side by side in one run (alternating), answers compared.

    uv run python -m bench.amg_speed [--size 512x384] [--points-per-side 8] [--rounds 3] [--box-nms-thresh 1.0]
        [--pred-iou-thresh 0.0]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam

from samsvc.engine.amg_types import AmgOptions, MaskRecord
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint
from samsvc.engine.registry import ModelSource, ModelSpec
from samsvc.engine.sam.amg import generate_masks
from tests.support import scene


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(reference: list[MaskRecord], fast: list[MaskRecord]) -> dict[str, Any]:
    """How close the fast engine's answer is to the reference's, mask by mask in order."""
    paired = list(zip(reference, fast, strict=True)) if len(reference) == len(fast) else []
    return {
        "masks": len(reference),
        "same_mask_count": len(reference) == len(fast),
        "bit_identical_masks": sum(np.array_equal(a.segmentation, b.segmentation) for a, b in paired),
        "min_mask_iou": min((mask_iou(a.segmentation, b.segmentation) for a, b in paired), default=0.0),
        "max_predicted_iou_difference": max((abs(a.predicted_iou - b.predicted_iou) for a, b in paired), default=0.0),
    }


def side_by_side(sam: Sam, image: np.ndarray, options: AmgOptions, rounds: int) -> dict[str, Any]:
    """Reference and fast engine alternating round by round (after one warm-up call): median
    seconds of each, their ratio, and how close the answers are."""
    generate_masks(sam, image, options, fast=True)
    reference_s, fast_s = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        reference = generate_masks(sam, image, options)
        reference_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        fast = generate_masks(sam, image, options, fast=True)
        fast_s.append(time.perf_counter() - started)
    reference_median, fast_median = statistics.median(reference_s), statistics.median(fast_s)
    return {
        "reference_s": reference_median,
        "fast_s": fast_median,
        "ratio": reference_median / fast_median,
        **compare(reference, fast),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    # 1.0 keeps every mask: random weights give near-identical masks that NMS would collapse to
    # one, and the comparison should cover all of them.
    parser.add_argument("--box-nms-thresh", type=float, default=1.0)
    # Random weights predict IoUs of about -0.02..0.06, so 0 keeps every mask; a threshold in
    # that range shows the filter's effect (prompts with no surviving mask skip the upscaling).
    parser.add_argument("--pred-iou-thresh", type=float, default=0.0)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    image = scene(width, height, seed=0)
    options = AmgOptions(
        points_per_side=args.points_per_side,
        pred_iou_thresh=args.pred_iou_thresh,
        stability_score_thresh=0.0,
        box_nms_thresh=args.box_nms_thresh,
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.pth"
        digest = build_random_checkpoint(path, TINY_ARCHITECTURE)
        sam = load_checkpoint(
            ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest), torch.device("cpu")
        )
    timings = side_by_side(sam, image, options, args.rounds)
    result = {
        "machine": {"cpu": platform.machine(), "python": platform.python_version(), "torch": torch.__version__},
        "model": "tiny (random weights)",
        "image": args.size,
        "points_per_side": args.points_per_side,
        "box_nms_thresh": args.box_nms_thresh,
        "pred_iou_thresh": args.pred_iou_thresh,
        **timings,
    }
    print(json.dumps(result, indent=2))
    print(f"AMG fast / reference speedup: {result['ratio']:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
