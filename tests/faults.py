"""Helpers of the fault tests: settings that let the reconciler act in seconds, failpoints for
worker processes, and the check every fault test ends with (each image recorded once, the
job ended)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc

from samsvc.config import Settings
from samsvc.v1 import job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import wait_for

#: Leases, grace and sweeps in seconds, dead workers found in 3 s, retries soon.
FAST_RECOVERY: dict[str, Any] = {
    "broker_heartbeat_timeout_ms": 3000,
    "broker_maintenance_chance": 1_000_000,
    "job_lease_s": 2.0,
    "reconcile_interval_s": 1.0,
    "reconcile_grace_s": 3.0,
    "job_min_backoff_ms": 200,
    "job_max_backoff_ms": 1000,
    "job_max_retries": 2,
    "job_store_retry_s": 120.0,
}
FINAL = (job_pb2.JOB_STATUS_COMPLETED, job_pb2.JOB_STATUS_FAILED, job_pb2.JOB_STATUS_CANCELLED)
#: The bound within which every fault test's job must end.
RECOVERY_BOUND_S = 180.0


def fast(settings: Settings, **more: Any) -> Settings:
    return settings.model_copy(update={**FAST_RECOVERY, **more})


def failpoints_env(**points: dict[str, Any]) -> dict[str, str]:
    """FAILPOINTS for a worker process's environment: name (dots as double underscores) -> action."""
    return {"FAILPOINTS": json.dumps({name.replace("__", "."): spec for name, spec in points.items()})}


def reached(directory: Path, name: str, timeout: float = 120) -> None:
    wait_for(lambda: (directory / f"{name}.reached").exists(), timeout=timeout, interval=0.05, what=f"{name}")


def release(directory: Path, name: str) -> None:
    (directory / f"{name}.release").touch()


def wait_ended(stub: pb_grpc.SegmentationServiceStub, job_id: str, timeout: float = RECOVERY_BOUND_S) -> job_pb2.Job:
    def ended() -> job_pb2.Job | None:
        try:
            job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNAVAILABLE:
                raise
            return None  # Redis is coming back
        return job if job.status in FINAL else None

    return wait_for(ended, timeout=timeout, interval=0.2, what=f"job {job_id} to end")


def assert_each_image_once(
    stub: pb_grpc.SegmentationServiceStub, job_id: str, total: int
) -> dict[int, job_pb2.ImageResult]:
    """The job ended with one result per image, and its event log names each image once."""
    job = wait_ended(stub, job_id)
    assert job.processed_images == total, f"{job.processed_images} of {total} images recorded"
    results = {r.index: r for r in stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id, page_size=50)).results}
    assert sorted(results) == list(range(total))
    events = list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), timeout=60))
    images = [e.image.index for e in events if e.WhichOneof("event") == "image"]
    assert sorted(images) == list(range(total)), f"each image recorded exactly once: {images}"
    assert events[-1].WhichOneof("event") == "finished"
    return results


def reason_of(result: job_pb2.ImageResult) -> str:
    from google.rpc import error_details_pb2

    for packed in result.error.details:
        info = error_details_pb2.ErrorInfo()
        if packed.Unpack(info):
            return str(info.reason)
    return ""
