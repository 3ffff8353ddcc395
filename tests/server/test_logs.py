"""Structured logs of a real `samsvc serve` process: every line is one JSON object, and the
caller's x-request-id follows the request into the server and into the job's worker."""

from __future__ import annotations

import base64
import json

import grpc
import pytest

from samsvc.config import Settings
from samsvc.v1 import job_pb2, segmentation_service_pb2_grpc
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServeProcess, encode, scene, wait_for


def log_lines(serve: ServeProcess) -> list[dict[str, object]]:
    serve.log.flush()
    serve.log.seek(0)
    return [json.loads(line) for line in serve.log.read().splitlines() if line.strip()]


@pytest.mark.processes
def test_json_lines_carry_the_correlation_id(base_settings: Settings) -> None:
    serve = ServeProcess(base_settings.model_copy(update={"log_format": "json"}))
    image = encode(scene(64, 48))
    try:
        with grpc.insecure_channel(serve.address) as channel:
            stub = segmentation_service_pb2_grpc.SegmentationServiceStub(channel)
            _, call = stub.Segment.with_call(
                pb.SegmentRequest(image=image, points_per_side=1), metadata=[("x-request-id", "corr-7")]
            )
            assert dict(call.initial_metadata())["x-request-id"] == "corr-7"
            submitted = stub.SubmitBatch(
                pb.SubmitBatchRequest(images=[image], options=pb.SegmentOptions(points_per_side=1)),
                metadata=[("x-request-id", "corr-8")],
            )
            wait_for(
                lambda: (
                    stub.GetJobStatus(pb.GetJobStatusRequest(job_id=submitted.job_id)).status
                    == job_pb2.JOB_STATUS_COMPLETED
                ),
                what="the batch",
            )
        lines = wait_for(
            lambda: [e for e in log_lines(serve) if e.get("job_id") == submitted.job_id] and log_lines(serve),
            what="the worker's log line",
        )
        assert all({"ts", "level", "logger", "message"} <= set(entry) for entry in lines)
        rpc = [e for e in lines if e.get("rpc") == "Segment" and e.get("request_id") == "corr-7"]
        assert rpc and rpc[0]["code"] == "OK" and float(rpc[0]["seconds"]) > 0  # type: ignore[arg-type]
        worker = [e for e in lines if e.get("job_id") == submitted.job_id]
        assert worker[0]["request_id"] == "corr-8"
        text = json.dumps(lines)
        assert base64.b64encode(image)[:40].decode() not in text, "image bytes are never logged"
    finally:
        serve.stop()
