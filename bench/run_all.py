"""All engine and service benchmarks in one run, each figure a ratio measured side by side.

    uv run python -m bench.run_all [--quick]

(a) AMG samsvc fast engine / segment-anything reference (tiny model and vit_b, random weights),
    and vit_b's image encoder: segment-anything's attention / samsvc's sliced attention
(b) gRPC Segment end to end / in-process reference generate (service overhead, on the reference
    engine; and the default fast engine's Segment against the same)
(c) Segment result cache: miss / hit
(d) prompts: the first prompt on an image (encoder) / each of the 2nd..10th (cached embedding)
(e) mask encodings: bytes and seconds for PNG, RLE and polygons of one mask set

Writes bench/results.json and the table between the benchmark markers in docs/development/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import torch
from segment_anything import SamAutomaticMaskGenerator

from bench.amg_speed import side_by_side
from samsvc.config import Settings
from samsvc.encoding.masks import encode_png, encode_polygons, encode_rle
from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoint_reader import load_checkpoint
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.engine.prompt_types import PromptSpec
from samsvc.engine.registry import BUILTIN_ARCHITECTURES, ModelSource, ModelSpec
from samsvc.engine.sam import fast_encoder
from samsvc.engine.sam.embedding import embed
from samsvc.engine.sam.family import build_sam
from samsvc.engine.sam.prompts import predict_prompts
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def timed(fn: Callable[[], Any], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round each, no vit_b")
    args = parser.parse_args()
    rounds = 1 if args.quick else 3
    results: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "grpcio": grpc.__version__,
        }
    }
    image = scene(512, 384, seed=0)
    permissive = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digest = build_random_checkpoint(root / "tiny.pth", TINY_ARCHITECTURE)
        spec = ModelSpec("tiny", TINY_ARCHITECTURE, ModelSource.REGISTERED, root / "tiny.pth", sha256=digest)
        tiny = load_checkpoint(spec, torch.device("cpu"))

        # (a)
        # box_nms_thresh 1.0: random weights give near-identical masks that NMS would collapse to one.
        results["a_amg_tiny_512x384_pps8"] = side_by_side(
            tiny, image, AmgOptions(points_per_side=8, box_nms_thresh=1.0, **permissive), rounds
        )
        if not args.quick:
            vit_b = build_sam(BUILTIN_ARCHITECTURES["vit_b"]).eval()
            results["a_amg_vit_b_512x384_pps4"] = side_by_side(
                vit_b, image, AmgOptions(points_per_side=4, box_nms_thresh=1.0, **permissive), 1
            )
            x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
            with torch.inference_mode():
                reference_s, sliced_s = [], []
                for _ in range(rounds):
                    reference_s.append(timed(lambda: vit_b.image_encoder(x), 1))
                    sliced_s.append(timed(lambda: fast_encoder.encode(vit_b.image_encoder, x), 1))
                identical = torch.equal(vit_b.image_encoder(x), fast_encoder.encode(vit_b.image_encoder, x))
            results["a_encoder_vit_b"] = {
                "reference_s": statistics.median(reference_s),
                "sliced_s": statistics.median(sliced_s),
                "ratio": statistics.median(reference_s) / statistics.median(sliced_s),
                "bit_identical": identical,
            }
            prompt_b = [PromptSpec(points=((200.0, 150.0, 1),))]
            first_b = timed(lambda: predict_prompts(vit_b, embed(vit_b, image), prompt_b, True), 1)
            cached_b = embed(vit_b, image)
            later_b = timed(lambda: [predict_prompts(vit_b, cached_b, prompt_b, True) for _ in range(9)], 1) / 9
            results["d_embedding_reuse_vit_b"] = {
                "first_prompt_s": first_b,
                "later_prompt_s": later_b,
                "ratio": first_b / later_b,
            }
            del vit_b

        # (b), (c)
        (root / "models.toml").write_text(models_file_entry("tiny", root / "tiny.pth", digest), encoding="utf-8")
        settings = Settings(
            grpc_port=0, model_dir=root, models_file=root / "models.toml", default_model="tiny",
            data_dir=str(root / "data"), max_workers=1, result_cache_ttl_s=0, result_cache_bytes=0,
        )  # fmt: skip
        data = encode(image, "JPEG", quality=92)
        options = {"points_per_side": 8, **permissive}
        request = pb.SegmentRequest(image=data, mask_format=mask_pb2.MASK_FORMAT_RLE, **options)

        # The service on the reference engine against the reference in process: the overhead.
        # Then the default (fast) engine against the same: what a caller gets. One server at a
        # time, each call alternating with an in-process run.
        def against_in_process(engine: str, rounds: int) -> tuple[float, float]:
            server = ServerThread(settings.model_copy(update={"amg_engine": engine}))
            server.stub.Segment(request)
            in_process_s, grpc_s, answers = [], [], []
            for _ in range(rounds):
                in_process_s.append(timed(lambda: SamAutomaticMaskGenerator(tiny, **options).generate(image), 1))
                grpc_s.append(timed(lambda: answers.append(server.stub.Segment(request)), 1))
            assert not any(answer.cache_hit for answer in answers), "(b) times the model, not the result cache"
            server.stop()
            return statistics.median(in_process_s), statistics.median(grpc_s)

        in_process, over_grpc = against_in_process("reference", 2 * rounds - 1)
        in_process_fast, fast_grpc = against_in_process("fast", rounds)
        results["b_service_overhead"] = {
            "grpc_s": over_grpc,
            "in_process_s": in_process,
            "ratio": over_grpc / in_process,
            "grpc_fast_engine_s": fast_grpc,
            "in_process_beside_fast_s": in_process_fast,
            "fast_engine_ratio": fast_grpc / in_process_fast,
        }

        server = ServerThread(settings.model_copy(update={"result_cache_ttl_s": 600}))
        misses, hits = [], []
        for seed in range(rounds):
            fresh = pb.SegmentRequest(image=encode(scene(512, 384, seed=100 + seed), "JPEG"), **options)
            started = time.perf_counter()
            assert not server.stub.Segment(fresh).cache_hit
            misses.append(time.perf_counter() - started)
            started = time.perf_counter()
            assert server.stub.Segment(fresh).cache_hit
            hits.append(time.perf_counter() - started)
        server.stop()
        miss, hit = statistics.median(misses), statistics.median(hits)
        results["c_result_cache"] = {"miss_s": miss, "hit_s": hit, "ratio": miss / hit}

        # (d)
        prompt = [PromptSpec(points=((200.0, 150.0, 1),))]
        first = timed(lambda: predict_prompts(tiny, embed(tiny, image), prompt, True), rounds)
        cached = embed(tiny, image)
        later = timed(lambda: [predict_prompts(tiny, cached, prompt, True) for _ in range(9)], rounds) / 9
        results["d_embedding_reuse"] = {"first_prompt_s": first, "later_prompt_s": later, "ratio": first / later}

    # (e)
    # A typical mask set: 100 solid objects (discs and boxes) of assorted sizes on 1024x768
    # (random-weight masks are speckled, which no real model produces).
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:768, 0:1024]
    masks = []
    for _ in range(100):
        cx, cy, r = int(rng.integers(0, 1024)), int(rng.integers(0, 768)), int(rng.integers(8, 200))
        disc = rng.random() < 0.5
        masks.append(
            ((xx - cx) ** 2 + (yy - cy) ** 2 < r**2) if disc else ((abs(xx - cx) < r) & (abs(yy - cy) < r // 2))
        )
    encodings: dict[str, Any] = {}
    for name, fn in (("png", encode_png), ("rle", encode_rle), ("polygons", encode_polygons)):
        started = time.perf_counter()
        encoded = [fn(m) for m in masks]
        seconds = time.perf_counter() - started
        size = sum(
            len(e) if isinstance(e, bytes) else len(json.dumps(e if isinstance(e, list) else e.counts)) for e in encoded
        )
        encodings[name] = {"seconds": seconds, "bytes": size}
    results["e_mask_encodings_100_masks_1024x768"] = encodings

    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = render(results)
    page = ROOT / "docs" / "development" / "benchmarks.md"
    text = page.read_text(encoding="utf-8")
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        page.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")
    print(table)
    return 0


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"Measured by `uv run python -m bench.run_all` on {m['cpus']} CPUs ({m['cpu']}), Python {m['python']}, "
        f"torch {m['torch']}, grpcio {m['grpcio']}; tiny model and vit_b with random weights (time does not "
        "depend on weights).",
        "",
        "| figure | measured | ratio |",
        "|---|---|---|",
    ]
    for key, label in (("a_amg_tiny_512x384_pps8", "(a) AMG tiny 512x384 pps 8: reference / fast"),
                       ("a_amg_vit_b_512x384_pps4", "(a) AMG vit_b 512x384 pps 4: reference / fast")):  # fmt: skip
        if key in results:
            r = results[key]
            lines.append(
                f"| {label} | {r['reference_s']:.2f} s / {r['fast_s']:.2f} s; {r['masks']} masks, "
                f"{r['bit_identical_masks']} bit-identical, min IoU {r['min_mask_iou']:.5f} | {r['ratio']:.2f}x |"
            )
    if "a_encoder_vit_b" in results:
        r = results["a_encoder_vit_b"]
        lines.append(
            f"| (a) image encoder vit_b 1024x1024: reference / sliced attention | {r['reference_s']:.2f} s / "
            f"{r['sliced_s']:.2f} s; bit-identical: {r['bit_identical']} | {r['ratio']:.2f}x |"
        )
    b = results["b_service_overhead"]
    lines.append(
        f"| (b) gRPC Segment (AMG_ENGINE=reference) / in-process reference | {b['grpc_s']:.2f} s / "
        f"{b['in_process_s']:.2f} s | {b['ratio']:.3f} |"
    )
    lines.append(
        f"| (b) gRPC Segment (default fast engine) / in-process reference | {b['grpc_fast_engine_s']:.2f} s / "
        f"{b['in_process_beside_fast_s']:.2f} s | {b['fast_engine_ratio']:.3f} |"
    )
    c = results["c_result_cache"]
    lines.append(
        f"| (c) result cache miss / hit | {c['miss_s']:.3f} s / {c['hit_s'] * 1000:.1f} ms | {c['ratio']:.0f}x |"
    )
    for key, label in (("d_embedding_reuse", "tiny"), ("d_embedding_reuse_vit_b", "vit_b")):
        if key in results:
            d = results[key]
            lines.append(
                f"| (d) {label}: first prompt / each of prompts 2-10 | {d['first_prompt_s'] * 1000:.0f} ms / "
                f"{d['later_prompt_s'] * 1000:.0f} ms | {d['ratio']:.1f}x |"
            )
    e = results["e_mask_encodings_100_masks_1024x768"]
    summary = ", ".join(f"{k} {v['bytes'] / 1024:.0f} KiB in {v['seconds'] * 1000:.0f} ms" for k, v in e.items())
    lines.append(f"| (e) 100 masks 1024x768 | {summary} | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
