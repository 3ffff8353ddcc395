"""Segment over gRPC against segment-anything's reference generator, side by side in one process.

    uv run python -m bench.segment_latency [--image photo.jpg] [--points-per-side 8] [--rounds 5]

Builds a tiny random-weight checkpoint (no pretrained weights needed; time does not depend on
the weights), starts a real server on a loopback port, and alternates: reference
`SamAutomaticMaskGenerator.generate` on the decoded image, then `Segment` over a real channel
with the same parameters (RLE masks). Prints medians and the ratio, with machine and versions.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import segment_anything
import torch
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator

from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.v1 import mask_pb2, segmentation_service_pb2_grpc
from samsvc.v1 import segmentation_service_pb2 as pb


def machine() -> dict[str, str]:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cpus": str(os.cpu_count()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "grpcio": grpc.__version__,
        "segment_anything": getattr(segment_anything, "__version__", "1.0"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, help="image file (default: a synthetic 720x480 scene)")
    parser.add_argument("--points-per-side", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    if args.image:
        data = args.image.read_bytes()
    else:
        from tests.support import encode, scene

        data = encode(scene(720, 480, seed=0), "JPEG", quality=92)
    with Image.open(io.BytesIO(data)) as picture:
        image = np.asarray(picture.convert("RGB"))
    params = dict(points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0)

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "tiny.pth"
        digest = build_random_checkpoint(checkpoint, TINY_ARCHITECTURE)
        models = Path(tmp) / "models.toml"
        models.write_text(models_file_entry("tiny", checkpoint, digest), encoding="utf-8")
        # The result cache off: the same request every round would otherwise be answered from it.
        settings = Settings(
            grpc_port=0, model_dir=Path(tmp), models_file=models, default_model="tiny", max_workers=1,
            result_cache_ttl_s=0, result_cache_bytes=0,
        )  # fmt: skip

        from tests.support import ServerThread

        server = ServerThread(settings)
        manager = ModelManager(ModelRegistry.load(Path(tmp), models), device="cpu")
        reference_model = manager.get("tiny").model
        request = pb.SegmentRequest(image=data, mask_format=mask_pb2.MASK_FORMAT_RLE, **params)
        stub: segmentation_service_pb2_grpc.SegmentationServiceStub = server.stub
        stub.Segment(request)  # load the model and warm up both paths
        SamAutomaticMaskGenerator(reference_model, **params).generate(image)

        reference_s: list[float] = []
        service_s: list[float] = []
        for _ in range(args.rounds):
            started = time.perf_counter()
            ref = SamAutomaticMaskGenerator(reference_model, **params).generate(image)
            reference_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            response = stub.Segment(request)
            service_s.append(time.perf_counter() - started)
            assert len(response.masks) == len(ref) and not response.cache_hit
        server.stop()

    result = {
        "machine": machine(),
        "image": f"{image.shape[1]}x{image.shape[0]}",
        "params": params,
        "masks": len(ref),
        "reference_median_s": statistics.median(reference_s),
        "grpc_segment_median_s": statistics.median(service_s),
        "ratio_grpc_over_reference": statistics.median(service_s) / statistics.median(reference_s),
    }
    print(json.dumps(result, indent=2))
    print(
        f"\nSegment over gRPC {result['grpc_segment_median_s']:.3f} s vs reference generate "
        f"{result['reference_median_s']:.3f} s (median of {args.rounds}): "
        f"ratio {result['ratio_grpc_over_reference']:.3f}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
