"""Encoder batching (ENCODER_BATCH_SIZE): N images encoded by N threads that share batched
passes, against the same N images encoded one pass each, side by side in one run.

    uv run python -m bench.encoder_batch [--model vit_b] [--images 2] [--rounds 2]

On a GPU the batched pass fills the device; on a CPU the two are expected to be close.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from samsvc.engine.encoder_batching import BatchingEncoder
from samsvc.engine.registry import BUILTIN_ARCHITECTURES
from samsvc.engine.sam.family import build_sam


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b")
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder = build_sam(BUILTIN_ARCHITECTURES[args.model]).to(device).eval().image_encoder
    batching = BatchingEncoder(encoder, args.images, max_wait_s=5.0)
    inputs = [torch.randn(1, 3, 1024, 1024, device=device) for _ in range(args.images)]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def one_by_one() -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for x in inputs:
                encoder(x)
        sync()
        return time.perf_counter() - started

    def together() -> float:
        start = threading.Barrier(len(inputs))

        def run(x: torch.Tensor) -> None:
            start.wait()
            batching(x)

        started = time.perf_counter()
        with ThreadPoolExecutor(len(inputs)) as pool:
            list(pool.map(run, inputs))
        sync()
        return time.perf_counter() - started

    one_by_one()  # warm up
    single = statistics.median(one_by_one() for _ in range(args.rounds))
    batched = statistics.median(together() for _ in range(args.rounds))
    result = {
        "model": args.model,
        "device": str(device),
        "images": args.images,
        "torch_threads": torch.get_num_threads(),
        "one_pass_each_s": single,
        "shared_passes_s": batched,
        "passes": batching.passes,
        "ratio_single_over_batched": single / batched,
    }
    print(json.dumps(result, indent=2))
    print(f"{args.model} encoder, {args.images} images on {device}: one pass each / batched = "
          f"{single / batched:.2f}x ({single:.2f} s vs {batched:.2f} s)", file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
