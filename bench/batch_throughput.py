"""Batch time-to-first-image and throughput: embedded mode, then Redis mode with 1 and 2
`samsvc worker` processes, side by side in one run.

    uv run python -m bench.batch_throughput [--images 10] [--points-per-side 4] [--size 256x192]

Uses a tiny random-weight checkpoint (time does not depend on the weights), a real
redis-server on a free port and real worker processes; prints JSON and a short table and writes
the JSON to bench/results_batch_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import RedisServer, ServerThread, WorkerProcess, encode, scene, wait_for

RESULTS = Path(__file__).resolve().parent / "results_batch_throughput.json"


def run_batch(server: ServerThread, images: list[bytes], options: pb.SegmentOptions) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    count = 0
    for event in server.stub.SegmentBatch(pb.SubmitBatchRequest(images=images, options=options), timeout=3600):
        if event.WhichOneof("event") == "image":
            count += 1
            first = first or time.perf_counter() - started
    total = time.perf_counter() - started
    assert count == len(images)
    return {"time_to_first_image_s": first or 0.0, "total_s": total, "images_per_s": len(images) / total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10)
    parser.add_argument("--points-per-side", type=int, default=4)
    parser.add_argument("--size", default="256x192")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    images = [encode(scene(width, height, seed=i)) for i in range(args.images)]
    options = pb.SegmentOptions(points_per_side=args.points_per_side, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        checkpoint = root / "tiny.pth"
        digest = build_random_checkpoint(checkpoint, TINY_ARCHITECTURE)
        (root / "models.toml").write_text(models_file_entry("tiny", checkpoint, digest), encoding="utf-8")
        base = Settings(
            grpc_port=0, model_dir=root, models_file=root / "models.toml", default_model="tiny", data_dir=root / "data"
        )
        server = ServerThread(base)
        run_batch(server, images[:1], options)  # load the model
        results["embedded (1 in-process worker thread)"] = run_batch(server, images, options)
        server.stop()

        (root / "redis").mkdir()
        redis_server = RedisServer(root / "redis")
        settings = base.model_copy(update={"redis_url": redis_server.url})
        server = ServerThread(settings)
        workers: list[WorkerProcess] = []
        cpus = len(os.sched_getaffinity(0))
        try:
            for count in (1, 2):
                for worker in workers:
                    worker.stop()
                # Split the CPUs between the worker processes, as an operator would.
                threads = str(max(1, cpus // count))
                workers = [WorkerProcess(settings, env={"TORCH_THREADS": threads}) for _ in range(count)]
                wait_for(
                    lambda expected=count: server.running.jobs.health().live_workers == expected,  # type: ignore[misc]
                    timeout=120,
                    what=f"{count} live workers",
                )
                run_batch(server, images[:count], options)  # every worker loads its model
                label = f"redis, {count} worker process(es) x {threads} torch threads"
                results[label] = run_batch(server, images, options)
        finally:
            server.stop()
            for worker in workers:
                worker.stop()
            redis_server.stop()

    one, two = (v for k, v in results.items() if k.startswith("redis"))
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()},
        "images": args.images,
        "size": args.size,
        "points_per_side": args.points_per_side,
        "runs": results,
        "ratio_two_workers_over_one": two["images_per_s"] / one["images_per_s"],
    }
    print(json.dumps(report, indent=2))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'mode':<50} {'first image s':>14} {'total s':>9} {'images/s':>9}", file=sys.stderr)
    for mode, r in results.items():
        print(
            f"{mode:<50} {r['time_to_first_image_s']:>14.2f} {r['total_s']:>9.2f} {r['images_per_s']:>9.3f}",
            file=sys.stderr,
        )
    print(f"2 workers / 1 worker throughput: {two['images_per_s'] / one['images_per_s']:.2f}x", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
