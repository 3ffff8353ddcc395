"""SAM 2.1 hiera-tiny against SAM vit_b, side by side in one run, on this machine's device:
image encoder time, click latency (one point, one mask, from a computed embedding) and
automatic mask generation, each model through the service's engine (its family: samsvc's fast
engine for SAM, sam2's own generator for SAM 2). Random weights (no pretrained checkpoint can
be had here): time does not depend on them, except AMG's post-processing, so AMG keeps every
mask (thresholds 0, box NMS 1.0) for both.

    uv run python -m bench.sam2_vs_sam [--size 1024x768] [--rounds 3] [--clicks 30] [--points-per-side 8]

Prints JSON and a table, writes bench/results_sam2_vs_sam.json and the table under "SAM 2.1
against SAM" in docs/guides/sam2.md. No cache plays a part: each encoder run is a fresh computation.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.family import ModelFamily, family_for
from samsvc.engine.prompt_types import PromptSpec
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, SAM2_CONFIGS
from samsvc.engine.sam.family import build_sam
from samsvc.engine.sam2.family import build_sam2_model
from tests.support import scene

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- sam2:start -->", "<!-- sam2:end -->"


def fp32() -> contextlib.AbstractContextManager[Any]:
    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    name: str, family: ModelFamily, model: Any, image: np.ndarray, args: argparse.Namespace, device: torch.device
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    encodes = []
    embedding = None
    for _ in range(args.rounds):
        started = time.perf_counter()
        embedding = family.embed(model, image, fp32)
        sync(device)
        encodes.append(time.perf_counter() - started)
    assert embedding is not None
    height, width = image.shape[:2]
    clicks = []
    for _ in range(args.clicks):
        point = (float(rng.uniform(0, width)), float(rng.uniform(0, height)), 1)
        started = time.perf_counter()
        family.predict_prompts(model, embedding, [PromptSpec(points=(point,))], False, fp32, fast=True)
        sync(device)
        clicks.append(time.perf_counter() - started)
    options = AmgOptions(
        points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    started = time.perf_counter()
    masks = family.generate_masks(model, image, options, None, fast=True, precision=fp32)
    sync(device)
    amg_s = time.perf_counter() - started
    parameters = sum(p.numel() for p in model.parameters())
    print(f"{name}: encoder {statistics.median(encodes):.2f} s, AMG {amg_s:.1f} s", file=sys.stderr)
    return {
        "model": name,
        "parameters_m": round(parameters / 1e6, 1),
        "encoder_s_median": statistics.median(encodes),
        "click_ms_p50": 1000 * statistics.median(clicks),
        "click_ms_p90": 1000 * float(np.percentile(clicks, 90)),
        "amg_s": amg_s,
        "amg_masks": len(masks),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1024x768")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clicks", type=int, default=30)
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="leave docs/guides/sam2.md's table as it is")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    image = scene(width, height, seed=0)
    torch.manual_seed(0)
    models = [
        ("vit_b", family_for("sam"), build_sam(BUILTIN_ARCHITECTURES["vit_b"])),
        ("sam2.1_hiera_tiny", family_for("sam2"), build_sam2_model(SAM2_CONFIGS["sam2.1_hiera_t"])),
    ]
    with torch.inference_mode():
        runs = [measure(name, family, model.to(device).eval(), image, args, device) for name, family, model in models]
    sam, sam2 = runs
    report = {
        "machine": {
            "device": str(device),
            "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "",
            "cpu": platform.processor() or platform.machine(),
            "cpus": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "image": f"{width}x{height}",
        "points_per_side": args.points_per_side,
        "runs": runs,
        "ratios_vit_b_over_sam2_tiny": {
            key: sam[key] / sam2[key] for key in ("encoder_s_median", "click_ms_p50", "amg_s")
        },
    }
    print(json.dumps(report, indent=2))
    (ROOT / "bench" / "results_sam2_vs_sam.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = page_table(report)
    print("\n" + table, file=sys.stderr)
    if not args.no_write and device.type == "cpu":
        page = ROOT / "docs" / "guides" / "sam2.md"
        text = page.read_text(encoding="utf-8")
        head, _, rest = text.partition(START)
        _, _, tail = rest.partition(END)
        page.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    return 0


def page_table(report: dict[str, Any]) -> str:
    machine, (sam, sam2), ratios = report["machine"], report["runs"], report["ratios_vit_b_over_sam2_tiny"]
    where = machine["gpu"] or f"{machine['cpus']} CPU threads ({machine['cpu']})"
    lines = [
        f"Measured by `uv run python -m bench.sam2_vs_sam` on {where}, torch {machine['torch']}, a "
        f"{report['image']} image, random weights (time does not depend on them); AMG at points_per_side "
        f"{report['points_per_side']} keeping every mask.",
        "",
        "| | vit_b | sam2.1_hiera_tiny | vit_b / tiny |",
        "|---|---|---|---|",
        f"| parameters (M) | {sam['parameters_m']} | {sam2['parameters_m']} | |",
        f"| image encoder, median s | {sam['encoder_s_median']:.2f} | {sam2['encoder_s_median']:.2f} "
        f"| {ratios['encoder_s_median']:.2f}x |",
        f"| click from the embedding, p50 ms | {sam['click_ms_p50']:.1f} | {sam2['click_ms_p50']:.1f} "
        f"| {ratios['click_ms_p50']:.2f}x |",
        f"| click, p90 ms | {sam['click_ms_p90']:.1f} | {sam2['click_ms_p90']:.1f} | |",
        f"| automatic masks, s ({sam['amg_masks']} / {sam2['amg_masks']} masks) | {sam['amg_s']:.1f} "
        f"| {sam2['amg_s']:.1f} | {ratios['amg_s']:.2f}x |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
