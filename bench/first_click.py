"""The first click on a new image through gRPC, per encoder runtime, side by side in one run.

    uv run python -m bench.first_click [--model vit_b] [--images 3] [--write-docs]

Starts a server in this process on loopback with one random-weight checkpoint of `--model`'s
shape (time does not depend on the weights) registered three times: encoder torch, openvino and
openvino-int8 (MODELS_FILE `encoder`). Each is compiled (and int8 quantized) first, and warmed
up with one click; then each gets one click (SegmentPrompts, one point) on each of `--images`
new 1024x768 images with the embedding cache off, so every click runs the encoder: the wait a
user has on a new image. Prints the median seconds, the ratio to torch's and the worst IoU of a
click's mask against torch's for the same click (random weights: the masks are arbitrary shapes,
but the same arithmetic), and with
--write-docs the table between the `first_click` markers of docs/development/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samsvc.config import Settings
from samsvc.encoding.masks import decode_png
from samsvc.engine.checkpoints import build_random_checkpoint, models_file_entry
from samsvc.engine.registry import BUILTIN_ARCHITECTURES
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "development" / "benchmarks.md"
ENCODERS = ("torch", "openvino", "openvino-int8")


def click(server: ServerThread, model: str, seed: int, masks: dict[tuple[str, int], Any] | None = None) -> float:
    image = encode(scene(1024, 768, seed=seed))
    request = pb.SegmentPromptsRequest(
        image=image, model_type=model, prompts=[pb.Prompt(points=[pb.PointPrompt(x=500, y=380)])]
    )
    started = time.perf_counter()
    answer = server.stub.SegmentPrompts(request, timeout=600)
    elapsed = time.perf_counter() - started
    assert answer.cost.encoder_passes == 1, "the click must run the encoder"
    if masks is not None:
        masks[model, seed] = decode_png(answer.results[0].masks[0].segmentation)
    return elapsed


def iou(a: Any, b: Any) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vit_b", choices=sorted(BUILTIN_ARCHITECTURES))
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="samsvc-first-click-"))
    architecture = BUILTIN_ARCHITECTURES[args.model]
    digest = build_random_checkpoint(folder / "model.pth", architecture)
    entries = "".join(
        models_file_entry(encoder, folder / "model.pth", digest, architecture) + f'encoder = "{encoder}"\n'
        for encoder in ENCODERS
    )
    (folder / "models.toml").write_text(entries)
    settings = Settings(
        grpc_host="127.0.0.1", grpc_port=0, model_dir=folder, models_file=folder / "models.toml",
        default_model="torch", embedding_cache_bytes=0, result_cache_ttl_s=0, metrics_port=-1,
        worker_metrics_port=-1, gateway=False, max_image_side=2048,
    )  # fmt: skip
    server = ServerThread(settings)
    try:
        prepare = {}
        for encoder in ENCODERS:
            started = time.perf_counter()
            click(server, encoder, seed=100)  # loads, compiles (int8: quantizes), warms up
            prepare[encoder] = time.perf_counter() - started
        masks: dict[tuple[str, int], Any] = {}
        times = {
            e: statistics.median(click(server, e, seed=i, masks=masks) for i in range(args.images)) for e in ENCODERS
        }
    finally:
        server.stop()
    agreement = {e: min(iou(masks[e, i], masks["torch", i]) for i in range(args.images)) for e in ENCODERS}
    rows = [
        f"| {e} | {times[e]:.2f} | {times['torch'] / times[e]:.2f}x | {agreement[e]:.4f} | {prepare[e]:.0f} |"
        for e in ENCODERS
    ]
    table = "\n".join(
        [
            f"{args.model}, random weights, {torch.get_num_threads()} threads, 1024x768 images, "
            f"median of {args.images} new images:",
            "",
            "| encoder | first click s | vs torch | worst mask IoU vs torch | first load s (compile, quantize, warm-up) |",
            "|---|---|---|---|---|",
            *rows,
        ]
    )
    print(table)
    if args.write_docs:
        text = PAGE.read_text()
        start, end = "<!-- first_click:start -->", "<!-- first_click:end -->"
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        PAGE.write_text(f"{before}{start}\n{table}\n{end}{after}")


if __name__ == "__main__":
    main()
