"""Redis going away and coming back, with real processes: synchronous Segment keeps working,
batch submission fails clearly (UNAVAILABLE), rate limits shared by two server processes fail
closed, and everything recovers by itself when Redis returns."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from samsvc.config import Settings
from samsvc.server.auth import digest, new_key
from samsvc.v1 import health_pb2, job_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import RedisServer, ServeProcess, WorkerProcess, encode, rich_status, scene, wait_for

pytestmark = pytest.mark.processes  # samsvc's own processes: workers, `samsvc serve`

TINY = pb.SegmentOptions(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)


def stub_for(process: ServeProcess) -> pb_grpc.SegmentationServiceStub:
    return pb_grpc.SegmentationServiceStub(grpc.insecure_channel(process.address))


def segment(stub: pb_grpc.SegmentationServiceStub, metadata: list[tuple[str, str]] | None = None) -> pb.SegmentResponse:
    request = pb.SegmentRequest(image=encode(scene(64, 48)), points_per_side=2)
    response: pb.SegmentResponse = stub.Segment(request, metadata=metadata, timeout=120)
    return response


def test_segment_survives_redis_outage_and_batches_recover(
    base_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:

    settings = base_settings.model_copy(
        update={"redis_url": redis_server.url, "data_dir": str(tmp_path / "data"), "result_cache_ttl_s": 600}
    )
    server = ServeProcess(settings, "--no-gateway")
    worker = WorkerProcess(settings)
    try:
        stub = stub_for(server)
        batch = pb.SubmitBatchRequest(images=[encode(scene(64, 48, seed=3))], options=TINY)
        assert stub.SubmitBatch(batch, timeout=60).job_id

        redis_server.kill()
        assert segment(stub).masks is not None, "Segment answers without Redis"
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitBatch(batch, timeout=60)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        message = rich_status(refused.value)[0].message
        assert message, "the refusal says why"
        assert "127.0.0.1" not in message and str(redis_server.port) not in message, "and names no internals"
        with pytest.raises(grpc.RpcError) as status:
            stub.GetJobStatus(pb.GetJobStatusRequest(job_id="job_x"), timeout=60)
        assert status.value.code() == grpc.StatusCode.UNAVAILABLE
        assert str(redis_server.port) not in (status.value.details() or "")
        health = stub.CheckHealth(health_pb2.CheckHealthRequest(), timeout=60)
        assert health.jobs.mode == "redis" and not health.jobs.store_reachable

        redis_server.start()
        job_id = wait_for(
            lambda: _submit_or_none(stub, batch), timeout=60, interval=0.5, what="batch submission to work again"
        )

        def completed() -> bool:
            job = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), timeout=30)
            return job.status == job_pb2.JOB_STATUS_COMPLETED

        wait_for(completed, timeout=180, interval=0.5, what="the batch submitted after the outage to complete")
        assert stub.CheckHealth(health_pb2.CheckHealthRequest(), timeout=60).jobs.store_reachable
    finally:
        worker.stop()
        server.stop()


def _submit_or_none(stub: pb_grpc.SegmentationServiceStub, batch: pb.SubmitBatchRequest) -> str | None:
    try:
        return str(stub.SubmitBatch(batch, timeout=30).job_id)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAVAILABLE:
            raise
        return None


def test_rate_limit_is_shared_by_two_servers_and_fails_closed(
    base_settings: Settings, redis_server: RedisServer, tmp_path: Path
) -> None:
    key = new_key()
    settings = base_settings.model_copy(
        update={
            "redis_url": redis_server.url,
            "data_dir": str(tmp_path / "data"),
            "api_keys": [f"labeler:{digest(key)}"],
            "rate_limit_requests_per_minute": 4,
        }
    )
    first, second = ServeProcess(settings, "--no-gateway"), ServeProcess(settings, "--no-gateway")
    metadata = [("x-api-key", key)]
    try:
        stubs = [stub_for(first), stub_for(second)]
        for call in range(4):
            stubs[call % 2].ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
        for stub in stubs:
            with pytest.raises(grpc.RpcError) as limited:
                stub.ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
            assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rich_status(limited.value)[1]["ErrorInfo"].reason == "RATE_LIMITED"

        redis_server.kill()
        with pytest.raises(grpc.RpcError) as unavailable:
            stubs[0].ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        assert rich_status(unavailable.value)[1]["ErrorInfo"].reason == "RATE_LIMIT_UNAVAILABLE"
        redis_server.start()  # AOF keeps the buckets: still limited, then answered again later
        with pytest.raises(grpc.RpcError) as still:
            stubs[1].ListModels(pb.ListModelsRequest(), metadata=metadata, timeout=30)
        assert still.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        first.stop()
        second.stop()
