"""The whole Segment call, as a user meets it, against segment-anything's generator in process.

    uv run python -m bench.segment_end_to_end [--size 512x384] [--rounds 1]
        [--settings 64:0.90:0.92,32:0.88:0.95,8:0.88:0.95] [--models tiny,discs] [--no-write]

Starts a server and Envoy on loopback (result cache off: every answer is checked not to be a
hit) with two models: `tiny`, random weights (its masks rarely pass the default thresholds, so
the decoder dominates), and `discs`, the hand-weighted model of samsvc.engine.sam.disc_checkpoint
(hundreds of masks survive, so filtering, NMS, mask encoding and sending count). For each model
and setting (points per side : pred_iou_thresh : stability_score_thresh; NMS 0.7, PNG masks)
it alternates, round by round:
- the reference: `SamAutomaticMaskGenerator(sam, ...).generate(image)` on the decoded image, in
  this process (what a home-made wrapper runs before its own encoding and transport);
- Segment over gRPC (the client's time from sending the JPEG to holding the parsed answer);
- the same over REST/JSON through Envoy;
and checks the service's masks against the reference's: same count and order, IoU >= 0.999 each,
scores within 1e-4. Then it profiles one service-equivalent run in process, split into image
decode, encoder, decoder (transformer and upscaling), post-processing (filters, NMS, RLE), mask
encoding (PNG) and serialization (protobuf; JSON for REST), and prints the engine-only ratio
beside the end-to-end ones. Results go to bench/results_segment_end_to_end.json and the table
under "End to end" in docs/development/benchmarks.md.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import json_format
from PIL import Image
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam

from samsvc.config import Settings
from samsvc.engine.amg_types import AmgOptions
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.engine.loader import ModelManager
from samsvc.engine.registry import ModelRegistry
from samsvc.engine.sam import fast_amg, fast_decoder
from samsvc.engine.sam.amg import generate_masks
from samsvc.engine.sam.disc_checkpoint import build_disc_checkpoint
from samsvc.engine.sam.fast_encoder import FastPredictor
from samsvc.gateway.launcher import start_gateway
from samsvc.v1 import mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, scene

RESULTS = Path(__file__).with_name("results_segment_end_to_end.json")
PAGE = Path(__file__).parent.parent / "docs/development/benchmarks.md"


def parse_settings(text: str) -> list[tuple[int, float, float]]:
    settings = []
    for item in text.split(","):
        pps, iou, stability = item.split(":")
        settings.append((int(pps), float(iou), float(stability)))
    return settings


def png_mask(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("1"), dtype=bool)


def check_answer(reference: list[dict[str, Any]], masks: Any) -> float:
    """The service's masks against the reference's; returns the smallest IoU."""
    assert len(masks) == len(reference), f"{len(masks)} masks, the reference {len(reference)}"
    smallest = 1.0
    for ours, theirs in zip(masks, reference, strict=True):
        pixels = png_mask(ours.segmentation)
        union = np.logical_or(pixels, theirs["segmentation"]).sum()
        iou = 1.0 if union == 0 else float(np.logical_and(pixels, theirs["segmentation"]).sum() / union)
        smallest = min(smallest, iou)
        assert iou >= 0.999, f"a mask differs from the reference's (IoU {iou:.5f})"
        assert abs(ours.predicted_iou - theirs["predicted_iou"]) <= 1e-4
        assert abs(ours.stability_score - theirs["stability_score"]) <= 1e-4, (
            f"stability {ours.stability_score} against {theirs['stability_score']} (area {theirs['area']})"
        )
    return smallest


class Timers:
    """Seconds spent in named stages, summed over a run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.stage(name):
                return function(*args, **kwargs)

        return timed


def profile(sam: Sam, data: bytes, options: AmgOptions) -> dict[str, float]:
    """One run of what Segment does, in process, split into stages (seconds)."""
    from samsvc.encoding.masks import MaskEncoding
    from samsvc.inference.pipeline import encode_mask
    from samsvc.server.convert import segment_response
    from samsvc.validation.image import ImageLimits, check_image_bytes, decode_image

    timers = Timers()
    set_image = FastPredictor.set_image
    decode_prompts, masks = fast_amg.decode_prompts, fast_decoder.DecodedPrompts.masks
    FastPredictor.set_image = timers.wrap("encoder", set_image)  # type: ignore[method-assign]
    fast_amg.decode_prompts = timers.wrap("decoder", decode_prompts)  # type: ignore[assignment]
    fast_decoder.DecodedPrompts.masks = timers.wrap("decoder", masks)  # type: ignore[method-assign]
    try:
        with timers.stage("image decode"):
            header = check_image_bytes(data, ImageLimits(max_bytes=64 << 20, max_side=8192))
            image = decode_image(data, header)
        with timers.stage("generate"):
            records = generate_masks(sam, image, options, fast=True)
        with timers.stage("mask encoding (PNG)"):
            encoded = [encode_mask(record, MaskEncoding.PNG) for record in records]
    finally:
        FastPredictor.set_image = set_image  # type: ignore[method-assign]
        fast_amg.decode_prompts = decode_prompts
        fast_decoder.DecodedPrompts.masks = masks  # type: ignore[method-assign]
    from samsvc.inference.pipeline import SegmentOutcome
    from samsvc.jobs.records import ImageResult

    outcome = SegmentOutcome(
        masks=encoded, visualization=None, width=int(image.shape[1]), height=int(image.shape[0]), model="m",
        processing_time_s=0.0,
    )  # fmt: skip
    with timers.stage("serialization (protobuf)"):
        result = ImageResult.from_outcome(0, outcome)
        response = segment_response("job", result, "m", MaskEncoding.PNG, 0.0)
        response.SerializeToString()
    with timers.stage("serialization (JSON, REST)"):
        json_format.MessageToJson(response, preserving_proto_field_name=True)
    split = dict(timers.seconds)
    split["post-processing"] = split.pop("generate") - split.get("encoder", 0.0) - split.get("decoder", 0.0)
    return split


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="512x384")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settings", default="64:0.90:0.92,32:0.88:0.95,8:0.88:0.95")
    parser.add_argument("--models", default="tiny,discs")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    data = encode(scene(width, height, seed=5), "JPEG", quality=92)
    image = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    encoded_image = base64.b64encode(data).decode()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tiny_digest = build_random_checkpoint(root / "tiny.pth", TINY_ARCHITECTURE)
        discs_digest = build_disc_checkpoint(root / "discs.pth")
        (root / "models.toml").write_text(
            models_file_entry("tiny", root / "tiny.pth", tiny_digest)
            + models_file_entry("discs", root / "discs.pth", discs_digest),
            encoding="utf-8",
        )
        settings = Settings(
            grpc_port=0, rest_port=0, envoy_admin_port=0, metrics_port=-1, model_dir=root,
            models_file=root / "models.toml", default_model="tiny", data_dir=str(root / "data"), max_workers=1,
            result_cache_ttl_s=0, result_cache_bytes=0, embedding_cache_bytes=0, log_level="WARNING",
            rest_timeout_s=3600,
        )  # fmt: skip
        manager = ModelManager(ModelRegistry.load(root, root / "models.toml"), device="cpu")
        server = ServerThread(settings)
        gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
        url = f"http://127.0.0.1:{gateway.rest_port}/api/v1/segment"
        try:
            for name in args.models.split(","):
                sam = manager.get(name).model
                # Warm every path once (first calls allocate and initialise) at a cheap setting.
                measure(server, url, sam, name, image, data, encoded_image, 2, 0.0, 0.0, args, profiled=False)
                for pps, iou, stability in parse_settings(args.settings):
                    rows.append(measure(server, url, sam, name, image, data, encoded_image, pps, iou, stability, args))
        finally:
            gateway.stop()
            server.stop()
    report = {
        "machine": {"cpu": platform.machine(), "cpus": torch.get_num_threads(), "torch": torch.__version__},
        "image": f"{width}x{height} JPEG",
        "rounds": args.rounds,
        "rows": rows,
    }
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = render(report)
    print(table)
    if not args.no_write:
        text = PAGE.read_text(encoding="utf-8")
        start, end = "<!-- end_to_end:start -->", "<!-- end_to_end:end -->"
        if start in text and end in text:
            before, rest = text.split(start, 1)
            PAGE.write_text(before + start + "\n" + table + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")
    return 0


def measure(
    server: ServerThread, url: str, sam: Sam, name: str, image: np.ndarray, data: bytes, encoded_image: str,
    pps: int, iou: float, stability: float, args: argparse.Namespace, profiled: bool = True,
) -> dict[str, Any]:  # fmt: skip
    params = {"points_per_side": pps, "pred_iou_thresh": iou, "stability_score_thresh": stability}
    options = AmgOptions(**params)
    request = pb.SegmentRequest(image=data, model_type=name, mask_format=mask_pb2.MASK_FORMAT_PNG, **params)
    body = json.dumps({"image": encoded_image, "model_type": name, "mask_format": "MASK_FORMAT_PNG", **params}).encode()

    def rest() -> dict[str, Any]:
        call = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(call, timeout=3600) as response:
            answer: dict[str, Any] = json.loads(response.read())
        assert answer.get("cache_hit") is False, "a REST answer came from the result cache"
        return answer

    reference_s, engine_s, grpc_s, rest_s, server_s = [], [], [], [], []
    smallest_iou, masks = 1.0, 0
    generator_kwargs = options.generator_kwargs()
    for _ in range(args.rounds if profiled else 1):
        started = time.perf_counter()
        reference = SamAutomaticMaskGenerator(sam, **generator_kwargs).generate(image)
        reference_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        generate_masks(sam, image, options, fast=True)
        engine_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        answer = server.stub.Segment(request, timeout=3600)
        grpc_s.append(time.perf_counter() - started)
        assert not answer.cache_hit, "a gRPC answer came from the result cache"
        server_s.append(answer.processing_time)
        started = time.perf_counter()
        rest_answer = rest()
        rest_s.append(time.perf_counter() - started)
        assert len(rest_answer["masks"]) == len(reference)
        if profiled:  # the warm-up keeps every mask, specks included, where one pixel moves a score
            smallest_iou = min(smallest_iou, check_answer(reference, answer.masks))
        masks = len(reference)
    split = profile(sam, data, options) if profiled else {}
    reference_median = statistics.median(reference_s)
    row = {
        "model": name,
        "points_per_side": pps,
        "pred_iou_thresh": iou,
        "stability_score_thresh": stability,
        "masks": masks,
        "min_mask_iou": smallest_iou,
        "reference_s": reference_median,
        "engine_s": statistics.median(engine_s),
        "grpc_s": statistics.median(grpc_s),
        "grpc_server_processing_s": statistics.median(server_s),
        "rest_s": statistics.median(rest_s),
        "engine_ratio": reference_median / statistics.median(engine_s),
        "grpc_ratio": reference_median / statistics.median(grpc_s),
        "rest_ratio": reference_median / statistics.median(rest_s),
        "profile_s": split,
    }
    if profiled:
        print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Measured by `uv run python -m bench.segment_end_to_end` on {report['machine']['cpus']} CPUs, "
        f"{report['image']}, median of {report['rounds']} round(s); NMS 0.7, PNG masks, result cache off. "
        "Ratios are segment-anything's in-process `generate` over ours (higher is faster).",
        "",
        "| model | pps : iou : stability | masks | reference | engine only | gRPC Segment | REST Segment "
        "| engine / gRPC / REST ratio | profile: decode, encoder, decoder, post, PNG, protobuf, JSON |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        p = row["profile_s"]
        stages = ("image decode", "encoder", "decoder", "post-processing", "mask encoding (PNG)")
        profile_text = ", ".join(f"{p.get(stage, 0.0):.2f}" for stage in stages)
        profile_text += f", {p['serialization (protobuf)']:.2f}, {p['serialization (JSON, REST)']:.2f} s"
        lines.append(
            f"| {row['model']} | {row['points_per_side']} : {row['pred_iou_thresh']} : {row['stability_score_thresh']} "
            f"| {row['masks']} | {row['reference_s']:.2f} s | {row['engine_s']:.2f} s | {row['grpc_s']:.2f} s "
            f"| {row['rest_s']:.2f} s | {row['engine_ratio']:.2f}x / {row['grpc_ratio']:.2f}x / "
            f"{row['rest_ratio']:.2f}x | {profile_text} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
