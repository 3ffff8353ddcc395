"""How close the server's cost estimates come to what a call then takes: a model is loaded and
probed as the server does at start (samsvc.engine.costs), then grids of several sizes run on a
1000x872 image, each printed with its estimate and the ratio actual / estimate, side by side.

    uv run python -m bench.cost_estimates [--model tiny|vit_b] [--threads 2]

Random weights (no pretrained weights here): a grid's time depends on how many masks pass its
thresholds, so the thresholds are the defaults a caller gets.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.engine.costs import grid_work
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelRegistry
from tests.support.images import scene

#: The grids timed: (label, options).
GRIDS = (
    ("points_per_side 16", AmgOptions(points_per_side=16)),
    ("points_per_side 32", AmgOptions(points_per_side=32)),
    ("points_per_side 32, 1 crop layer (downscale 2)", AmgOptions(points_per_side=32, crop_n_layers=1, crop_n_points_downscale_factor=2)),
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", choices=("tiny", "vit_b"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    architecture = TINY_ARCHITECTURE if args.model == "tiny" else BUILTIN_ARCHITECTURES[args.model]
    folder = Path(tempfile.mkdtemp(prefix="samsvc-cost-"))
    digest = build_random_checkpoint(folder / "model.pth", architecture)
    (folder / "models.toml").write_text(models_file_entry("m", folder / "model.pth", digest, architecture))
    models = ModelManager(ModelRegistry.load(folder, folder / "models.toml"))
    loaded = models.get("m")
    started = time.perf_counter()
    figures = models.costs.probe(loaded, fast=True)
    probe_s = time.perf_counter() - started
    print(f"model {args.model} (random weights), {args.threads} threads: probe {probe_s:.1f} s")
    print(f"  {figures.encode_s:.3f} s an encoder pass, {figures.point_s * 1000:.2f} ms a grid point")
    image = np.asarray(scene(1000, 872, seed=1))
    print(f"{'grid':<48} {'points':>6} {'estimate s':>10} {'actual s':>9} {'actual/estimate':>16}")
    for label, options in GRIDS:
        work = grid_work(options)
        estimate = models.costs.seconds("m", work) or 0.0
        started = time.perf_counter()
        loaded.generate_masks(image, options, fast=True)
        actual = time.perf_counter() - started
        print(f"{label:<48} {work.prompts:>6} {estimate:>10.2f} {actual:>9.2f} {actual / estimate:>15.2f}x")


if __name__ == "__main__":
    main()
