"""Automatic mask generation: samsvc's fast engine against segment-anything's generator on the
same model, image and parameters, side by side in one run (alternating), answers compared.

    uv run python -m bench.amg_speed [--size 512x384] [--points-per-side 8] [--rounds 3]
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

import numpy as np
import torch

from samsvc.engine.amg import AmgOptions, generate_masks
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint
from samsvc.engine.loader import load_checkpoint
from samsvc.engine.registry import ModelSource, ModelSpec
from tests.support import scene


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    image = scene(width, height, seed=0)
    options = AmgOptions(points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tiny.pth"
        digest = build_random_checkpoint(path, TINY_ARCHITECTURE)
        sam = load_checkpoint(
            ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, path, sha256=digest), torch.device("cpu")
        )
    generate_masks(sam, image, options, fast=True)  # warm up
    reference_s, fast_s = [], []
    for _ in range(args.rounds):
        started = time.perf_counter()
        reference = generate_masks(sam, image, options)
        reference_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        fast = generate_masks(sam, image, options, fast=True)
        fast_s.append(time.perf_counter() - started)
    same_masks = len(reference) == len(fast) and all(
        np.array_equal(a.segmentation, b.segmentation) for a, b in zip(reference, fast, strict=True)
    )
    score_diff = max(
        (abs(a.predicted_iou - b.predicted_iou) for a, b in zip(reference, fast, strict=True)), default=0.0
    )
    result = {
        "machine": {"cpu": platform.machine(), "python": platform.python_version(), "torch": torch.__version__},
        "model": "tiny (random weights)",
        "image": args.size,
        "points_per_side": args.points_per_side,
        "masks": len(reference),
        "identical_masks": same_masks,
        "max_predicted_iou_difference": score_diff,
        "reference_median_s": statistics.median(reference_s),
        "fast_median_s": statistics.median(fast_s),
        "speedup_reference_over_fast": statistics.median(reference_s) / statistics.median(fast_s),
    }
    print(json.dumps(result, indent=2))
    print(f"AMG fast / reference speedup: {result['speedup_reference_over_fast']:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
