"""Overload: offer twice the Segment load one server can carry and see what callers get.

    uv run python -m bench.overload [--factor 2] [--requests 60] [--max-workers 1] [--max-queue 2]

First measures the server's capacity (sequential Segment calls, requests per second), then
sends `--requests` calls at `--factor` times that rate as an open loop (arrivals at fixed
intervals, whatever the answers), and prints: the share refused with RESOURCE_EXHAUSTED, how
fast refusals come back, the p50/p99 latency of admitted calls against the bound admission
control promises ((max_queue + max_workers) / max_workers service times), and the server
process's resident memory before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import psutil

from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import ServerThread, encode, scene


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    seconds: float


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def capacity(stub: pb_grpc.SegmentationServiceStub, request: pb.SegmentRequest, rounds: int = 5) -> float:
    """Median seconds of one call on an idle server."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        stub.Segment(request, timeout=600)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def offer_load(
    stub: pb_grpc.SegmentationServiceStub, request: pb.SegmentRequest, interval_s: float, count: int, timeout_s: float
) -> list[Outcome]:
    """`count` calls started every `interval_s` seconds regardless of answers (an open loop)."""
    outcomes: list[Outcome | None] = [None] * count
    threads: list[threading.Thread] = []

    def call(index: int) -> None:
        started = time.perf_counter()
        try:
            stub.Segment(request, timeout=timeout_s)
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        outcomes[index] = Outcome(code, time.perf_counter() - started)

    begin = time.perf_counter()
    for index in range(count):
        delay = begin + index * interval_s - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        thread = threading.Thread(target=call, args=(index,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=timeout_s + 30)
    return [o for o in outcomes if o is not None]


def summarize(outcomes: list[Outcome], service_s: float, max_workers: int, max_queue: int) -> dict[str, float]:
    admitted = [o.seconds for o in outcomes if o.code == grpc.StatusCode.OK]
    refused = [o.seconds for o in outcomes if o.code == grpc.StatusCode.RESOURCE_EXHAUSTED]
    other = [o for o in outcomes if o.code not in (grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED)]
    return {
        "requests": len(outcomes),
        "admitted": len(admitted),
        "refused": len(refused),
        "other_errors": len(other),
        "rejection_rate": len(refused) / max(len(outcomes), 1),
        "refusal_p99_s": percentile(refused, 0.99),
        "admitted_p50_s": percentile(admitted, 0.50),
        "admitted_p99_s": percentile(admitted, 0.99),
        "service_s": service_s,
        "admitted_bound_s": service_s * (max_queue + max_workers) / max_workers,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument("--max-queue", type=int, default=2)
    parser.add_argument("--size", default="256x192")
    parser.add_argument("--points-per-side", type=int, default=4)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    request = pb.SegmentRequest(
        image=encode(scene(width, height, seed=4), "JPEG", quality=90),
        points_per_side=args.points_per_side,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        digest = build_random_checkpoint(root / "tiny.pth", TINY_ARCHITECTURE)
        (root / "models.toml").write_text(models_file_entry("tiny", root / "tiny.pth", digest), encoding="utf-8")
        settings = Settings(
            grpc_port=0, gateway=False, model_dir=root, models_file=root / "models.toml", default_model="tiny",
            data_dir=root / "data", max_workers=args.max_workers, max_queue=args.max_queue, result_cache_ttl_s=0,
            metrics_port=-1,
        )  # fmt: skip
        server = ServerThread(settings)
        try:
            stub = server.stub
            stub.Segment(request, timeout=600)  # load the model
            service_s = capacity(stub, request)
            rss_before = psutil.Process().memory_info().rss
            interval = service_s / args.max_workers / args.factor
            outcomes = offer_load(stub, request, interval, args.requests, timeout_s=600)
            rss_after = psutil.Process().memory_info().rss
        finally:
            server.stop()
    result = summarize(outcomes, service_s, args.max_workers, args.max_queue)
    result.update(
        {
            "factor": args.factor,
            "image": args.size,
            "points_per_side": args.points_per_side,
            "max_workers": args.max_workers,
            "max_queue": args.max_queue,
            "rss_before_mb": rss_before / 1e6,
            "rss_after_mb": rss_after / 1e6,
        }
    )
    print(json.dumps(result, indent=2))
    print(
        f"{args.factor:g}x load: {result['rejection_rate']:.0%} refused (p99 {result['refusal_p99_s'] * 1000:.0f} ms), "
        f"admitted p50 {result['admitted_p50_s']:.2f} s / p99 {result['admitted_p99_s']:.2f} s "
        f"(bound {result['admitted_bound_s']:.2f} s, one call alone {service_s:.2f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
