"""Chaos soak: batch jobs run while Redis and workers are killed at random; nothing may be lost.

    uv run python -m bench.chaos_soak [--jobs 24] [--images 4] [--chaos-seconds 120] [--seed 7]
                                      [--workers 2] [--appendfsync always|everysec]

A real redis-server (AOF on), one `samsvc serve --no-gateway` process and `--workers`
`samsvc worker` processes, all on loopback, with a tiny random-weight checkpoint. Jobs are
submitted (retried with their request_id while Redis is down) while a seeded chaos loop,
every 2-6 s, does one of (each once per round of four, in a seeded order): SIGKILL Redis and start it again after 0.5-3 s; SIGKILL a whole
`samsvc worker` and start another; SIGKILL one Dramatiq worker process (its supervisor starts
them again); pause Redis for 2 s (CLIENT PAUSE). After the chaos stops, it waits (at most
--recover-bound s) for every accepted job to end, then reports jobs accepted and ended,
images lost (no result; must be 0), duplicates (an image recorded twice in the event log;
must be 0), the faults injected and the time to recover. Exits 1 if anything was lost.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import psutil
import redis

from samsvc.config import Settings
from samsvc.engine.checkpoints import TINY_ARCHITECTURE, build_random_checkpoint, models_file_entry
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import RedisServer, ServeProcess, WorkerProcess, encode, scene

FINAL = (job_pb2.JOB_STATUS_COMPLETED, job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED)
#: The reconciler acts within seconds (the defaults are minutes: see the configuration reference).
RECOVERY = {
    "broker_heartbeat_timeout_ms": 5000,
    "broker_maintenance_chance": 100_000,
    "job_lease_s": 3.0,
    "reconcile_interval_s": 2.0,
    "reconcile_grace_s": 6.0,
    "job_min_backoff_ms": 500,
    "job_max_backoff_ms": 4000,
}


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        checkpoint = root / "tiny.pth"
        digest = build_random_checkpoint(checkpoint, TINY_ARCHITECTURE)
        (root / "models.toml").write_text(models_file_entry("tiny", checkpoint, digest), encoding="utf-8")
        (root / "redis").mkdir()
        self.redis = RedisServer(root / "redis", appendfsync=args.appendfsync)
        self.settings = Settings(
            grpc_port=0,
            model_dir=root,
            models_file=root / "models.toml",
            default_model="tiny",
            data_dir=root / "data",
            redis_url=self.redis.url,
            metrics_port=-1,
            worker_metrics_port=-1,
            log_level="WARNING",
            **RECOVERY,
        )
        self.server = ServeProcess(self.settings, "--no-gateway")
        self.stub = pb_grpc.SegmentationServiceStub(grpc.insecure_channel(self.server.address))
        self.workers = [WorkerProcess(self.settings) for _ in range(args.workers)]
        self.faults: dict[str, int] = {"redis_killed": 0, "worker_killed": 0, "worker_process_killed": 0, "paused": 0}
        self.accepted: list[str] = []
        self.images = [encode(scene(96, 72, seed=i)) for i in range(args.images)]
        self.options = pb.SegmentOptions(points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0)

    def submit_all(self) -> None:
        for number in range(self.args.jobs):
            request = pb.SubmitBatchRequest(images=self.images, options=self.options, request_id=f"soak-{number}")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    self.accepted.append(self.stub.SubmitBatch(request, timeout=30).job_id)
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    time.sleep(0.5)
            time.sleep(self.rng.uniform(0.5, 2.0))

    def chaos(self, until: float, submitting: threading.Thread) -> None:
        kinds: list[str] = []
        while time.monotonic() < until or submitting.is_alive():
            time.sleep(self.rng.uniform(2.0, 6.0))
            if not kinds:  # every kind once per round, in a seeded order
                kinds = ["redis", "worker", "process", "pause"]
                self.rng.shuffle(kinds)
            fault = kinds.pop()
            if fault == "redis":
                self.redis.kill()
                time.sleep(self.rng.uniform(0.5, 3.0))
                self.redis.start()
                self.faults["redis_killed"] += 1
            elif fault == "worker":
                victim = self.workers.pop(self.rng.randrange(len(self.workers)))
                os.killpg(victim.process.pid, signal.SIGKILL)
                victim.process.wait(timeout=30)
                self.workers.append(WorkerProcess(self.settings))
                self.faults["worker_killed"] += 1
            elif fault == "process":
                processes = [p for w in self.workers for p in _dramatiq_workers(w)]
                if processes:
                    os.kill(self.rng.choice(processes), signal.SIGKILL)
                    self.faults["worker_process_killed"] += 1
            else:
                try:
                    redis.Redis.from_url(self.redis.url).execute_command("CLIENT", "PAUSE", "2000", "ALL")
                    self.faults["paused"] += 1
                except redis.RedisError:
                    pass

    def ended(self) -> bool:
        for job_id in self.accepted:
            try:
                job = self.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)
            except grpc.RpcError:
                return False
            if job.status not in FINAL:
                return False
        return True

    def tally(self) -> dict[str, int]:
        counts = {"jobs_ended": 0, "images_recorded": 0, "images_lost": 0, "duplicates": 0, "images_failed": 0}
        for job_id in self.accepted:
            job = self.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)
            counts["jobs_ended"] += job.status in FINAL
            results = self.stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=50), timeout=30)
            indexes = {r.index for r in results.results}
            counts["images_recorded"] += len(indexes)
            counts["images_lost"] += job.total_images - len(indexes)
            counts["images_failed"] += sum(1 for r in results.results if r.HasField("error"))
            events = list(self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60))
            images = [e.image.index for e in events if e.WhichOneof("event") == "image"]
            counts["duplicates"] += len(images) - len(set(images))
        return counts

    def stop(self) -> None:
        self.server.stop()
        for worker in self.workers:
            worker.stop()
        self.redis.stop()


def _dramatiq_workers(worker: WorkerProcess) -> list[int]:
    """Pids of the Dramatiq worker processes (grandchildren of `samsvc worker`)."""
    try:
        top = psutil.Process(worker.process.pid)
        return [p.pid for child in top.children() for p in child.children()]
    except psutil.NoSuchProcess:
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--chaos-seconds", type=float, default=120.0)
    parser.add_argument("--recover-bound", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--appendfsync", choices=["always", "everysec"], default="always")
    parser.add_argument("--json", type=Path, default=Path(__file__).with_name("results_chaos_soak.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        soak = Soak(args, Path(tmp))
        try:
            started = time.monotonic()
            submitting = threading.Thread(target=soak.submit_all, daemon=True)
            submitting.start()
            soak.chaos(started + args.chaos_seconds, submitting)
            chaos_end = time.monotonic()
            deadline = chaos_end + args.recover_bound
            while not soak.ended() and time.monotonic() < deadline:
                time.sleep(0.5)
            recovered = time.monotonic() - chaos_end
            report: dict[str, Any] = {
                "seed": args.seed,
                "appendfsync": args.appendfsync,
                "workers": args.workers,
                "chaos_s": round(chaos_end - started, 1),
                "jobs_accepted": len(soak.accepted),
                "images_accepted": len(soak.accepted) * args.images,
                **soak.tally(),
                "faults": soak.faults,
                "time_to_recover_s": round(recovered, 1),
            }
        finally:
            soak.stop()
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(report, indent=2))
    print(
        f"\n{report['jobs_accepted']} jobs accepted, {report['jobs_ended']} ended; "
        f"{report['images_accepted']} images: {report['images_lost']} lost, {report['duplicates']} duplicates, "
        f"{report['images_failed']} failed; faults {report['faults']}; "
        f"all ended {report['time_to_recover_s']} s after the chaos stopped"
    )
    lost = report["images_lost"] or report["duplicates"] or report["jobs_ended"] < report["jobs_accepted"]
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
