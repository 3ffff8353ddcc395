"""For a GPU machine, in one go: automatic mask generation with vit_b and vit_h (random weights:
time does not depend on them) at points_per_side 32 on 1024x768, segment-anything's reference
against samsvc's fast engine, and the fast engine in fp32, fp16 and bf16 (autocast); and SAM 2.1
models (sam2.1_hiera_tiny by default: sam2's own generator, the service's SAM 2 engine) in each
precision beside them. `bench.sam2_vs_sam` adds encoder and click times on the same device.

    uv run python -m bench.gpu_amg [--models vit_b,vit_h,sam2.1_hiera_tiny] [--points-per-side 32] [--batch 64,256] [--compile]

With --compile, the fast engine also runs on a torch.compile'd copy (TORCH_COMPILE) in each
precision, after one warm-up call that pays for compilation.

Then, end to end (skip with --end-to-end-images 0): a server on loopback (result cache off)
with vit_b and vit_h checkpoints written on the spot, `Segment` over gRPC at points_per_side 32
with the default thresholds and PNG masks, on that many different 1024x768 JPEGs, one after
another, in fp32 and fp16 (MODEL_DTYPE); per-image latency p50/p90 as a client sees it
(torchao's SAM 2 AMG server reports 112 ms p50 on an H100 in fp16, for comparison). Random
weights let few masks through the default thresholds, which makes mask encoding nearly free:
`--end-to-end-thresholds 0:0` keeps every mask (all 3 x 32 x 32 before NMS) for the other bound.

Prints JSON (one record per run: model, engine, dtype, prompt batch, seconds, masks, peak GPU
memory) and a table of ratios against the fp32 reference of the same model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.family import family_for
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelRegistry
from samsvc.engine.sam.amg import generate_masks
from samsvc.engine.sam.family import SamFamily, build_sam
from samsvc.engine.sam2.family import build_sam2_model
from tests.support import scene

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def run(
    sam: Any, image: np.ndarray, options: AmgOptions, fast: bool, dtype: str, device: torch.device
) -> dict[str, Any]:
    context = contextlib.nullcontext() if DTYPES[dtype] is None else torch.autocast(device.type, dtype=DTYPES[dtype])
    generate_masks(sam, image[:256, :256], options, fast=fast)  # warm up kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    with context:
        masks = generate_masks(sam, image, options, fast=fast)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
    return {"seconds": seconds, "masks": len(masks), "peak_gpu_bytes": peak}


def sam2_runs(name: str, config: str, image: np.ndarray, pps: int, device: torch.device) -> list[dict[str, Any]]:
    """A SAM 2 model through the service's SAM 2 engine (sam2's generator) in each precision."""
    model = build_sam2_model(config).to(device).eval()
    family = family_for("sam2")
    options = AmgOptions(points_per_side=pps, points_per_batch=64, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    records = []
    for dtype, autocast in DTYPES.items():

        def precision(autocast: Any = autocast) -> contextlib.AbstractContextManager[Any]:
            if autocast is None:
                return contextlib.nullcontext()
            return torch.autocast(device.type, dtype=autocast)

        family.generate_masks(model, image[:256, :256], options, None, fast=True, precision=precision)  # warm up
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        masks = family.generate_masks(model, image, options, None, fast=True, precision=precision)
        if device.type == "cuda":
            torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else 0
        records.append({"model": name, "engine": "reference", "dtype": dtype, "batch": 64,
                        "seconds": time.perf_counter() - started, "masks": len(masks), "peak_gpu_bytes": peak})  # fmt: skip
    del model
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="vit_b,vit_h,sam2.1_hiera_tiny")
    parser.add_argument("--points-per-side", type=int, default=32)
    parser.add_argument("--batch", default="64,256", help="prompt batch sizes for the fast engine")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    parser.add_argument("--end-to-end-images", type=int, default=20, help="images per end-to-end run (0: none)")
    parser.add_argument("--end-to-end-models", default="vit_b,vit_h")
    parser.add_argument("--end-to-end-thresholds", default="0.88:0.95", help="pred_iou_thresh:stability_score_thresh")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    image = scene(1024, 768, seed=0)
    records = []
    sam2_specs = {spec.name: spec for spec in ModelRegistry.load(Path("."), None) if spec.family == "sam2"}
    for name in args.models.split(","):
        if name in sam2_specs:
            records += sam2_runs(name, str(sam2_specs[name].config), image, args.points_per_side, device)
            continue
        sam = build_sam(BUILTIN_ARCHITECTURES[name]).to(device).eval()
        base = {"points_per_side": args.points_per_side, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
        records.append({"model": name, "engine": "reference", "dtype": "fp32", "batch": 64,
                        **run(sam, image, AmgOptions(points_per_batch=64, **base), False, "fp32", device)})  # fmt: skip
        for batch in (int(b) for b in args.batch.split(",")):
            for dtype in DTYPES:
                options = AmgOptions(points_per_batch=batch, **base)
                records.append({"model": name, "engine": "fast", "dtype": dtype, "batch": batch,
                                **run(sam, image, options, True, dtype, device)})  # fmt: skip
        if args.compile:
            compiled = build_sam(BUILTIN_ARCHITECTURES[name]).to(device).eval()
            compiled.load_state_dict(sam.state_dict())
            SamFamily().accelerate(compiled, compile_model=True, encoder_batch=(1, 0.0))
            for dtype in DTYPES:
                options = AmgOptions(points_per_batch=int(args.batch.split(",")[-1]), **base)
                run(compiled, image, options, True, dtype, device)  # compile for this precision's shapes
                records.append({"model": name, "engine": "fast+compile", "dtype": dtype, "batch": options.points_per_batch,
                                **run(compiled, image, options, True, dtype, device)})  # fmt: skip
            del compiled
        del sam
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(
        json.dumps(
            {
                "device": str(device),
                "gpu": torch.cuda.get_device_name() if device.type == "cuda" else "",
                "runs": records,
            },
            indent=2,
        )
    )
    latencies = []
    if args.end_to_end_images > 0:
        iou, stability = (float(v) for v in args.end_to_end_thresholds.split(":"))
        latencies = end_to_end(
            args.end_to_end_models.split(","), args.end_to_end_images, args.points_per_side, iou, stability
        )
        print(json.dumps({"end_to_end": latencies}, indent=2))
    for record in records:
        reference = next(r for r in records if r["model"] == record["model"] and r["engine"] == "reference")
        print(
            f"{record['model']:6} {record['engine']:9} {record['dtype']:4} batch {record['batch']:4}: "
            f"{record['seconds']:8.2f} s  {reference['seconds'] / record['seconds']:5.2f}x",
            file=sys.stderr,
        )
    for latency in latencies:
        print(
            f"{latency['model']:6} Segment over gRPC {latency['dtype']:4} pps {latency['points_per_side']}: "
            f"p50 {latency['p50_ms']:8.1f} ms  p90 {latency['p90_ms']:8.1f} ms  ({latency['images']} images, "
            f"{latency['masks_p50']} masks p50)",
            file=sys.stderr,
        )
    return 0


def end_to_end(
    models: list[str], images: int, pps: int, iou: float = 0.88, stability: float = 0.95
) -> list[dict[str, Any]]:
    """Per-image latency of Segment over gRPC, as a client sees it, per model and precision."""
    import statistics
    import tempfile

    from samsvc.config import Settings
    from samsvc.engine.checkpoints import build_random_checkpoint, models_file_entry
    from samsvc.v1 import mask_pb2
    from samsvc.v1 import segmentation_service_pb2 as pb
    from tests.support import ServerThread, encode

    pictures = [encode(scene(1024, 768, seed=100 + i), "JPEG", quality=90) for i in range(images)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        entries = ""
        for name in models:
            digest = build_random_checkpoint(root / f"{name}.pth", BUILTIN_ARCHITECTURES[name])
            entries += models_file_entry(f"e2e_{name}", root / f"{name}.pth", digest, BUILTIN_ARCHITECTURES[name])
        (root / "models.toml").write_text(entries, encoding="utf-8")
        for dtype in ("fp32", "fp16"):
            settings = Settings(
                grpc_port=0, model_dir=root, models_file=root / "models.toml", default_model=f"e2e_{models[0]}",
                data_dir=str(root / "data"), result_cache_ttl_s=0, result_cache_bytes=0, embedding_cache_bytes=0,
                model_dtype=dtype, metrics_port=-1, log_level="WARNING",
            )  # fmt: skip
            server = ServerThread(settings)
            try:
                for name in models:
                    request = pb.SegmentRequest(model_type=f"e2e_{name}", points_per_side=pps, pred_iou_thresh=iou,
                                                stability_score_thresh=stability,
                                                mask_format=mask_pb2.MASK_FORMAT_PNG)  # fmt: skip
                    request.image = pictures[0]
                    server.stub.Segment(request, timeout=600)  # load the model, warm the kernels
                    seconds, masks = [], []
                    for picture in pictures:
                        request.image = picture
                        started = time.perf_counter()
                        answer = server.stub.Segment(request, timeout=600)
                        seconds.append(time.perf_counter() - started)
                        assert not answer.cache_hit
                        masks.append(len(answer.masks))
                    ordered = sorted(seconds)
                    results.append({
                        "model": name, "dtype": dtype, "points_per_side": pps, "images": len(seconds),
                        "pred_iou_thresh": iou, "stability_score_thresh": stability,
                        "p50_ms": 1000 * statistics.median(ordered),
                        "p90_ms": 1000 * ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
                        "masks_p50": statistics.median(masks),
                    })  # fmt: skip
            finally:
                server.stop()
    return results


if __name__ == "__main__":
    raise SystemExit(main())
