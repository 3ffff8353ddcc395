"""grpcurl through Envoy's port: reflection and native gRPC pass through the gateway."""

from __future__ import annotations

import base64
import json
import subprocess

from tests.gateway.conftest import Stack
from tests.server.test_grpcurl import GRPCURL
from tests.support import encode, scene


def grpcurl(stack: Stack, *args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    assert GRPCURL
    command = [GRPCURL, "-plaintext", "-max-msg-sz", str(64 * 1024 * 1024)]
    if data is not None:
        command += ["-d", "@"]
    address = f"127.0.0.1:{stack.gateway.rest_port}"
    return subprocess.run(
        [*command, address, *args], input=data, capture_output=True, text=True, timeout=120, check=False
    )


def test_list_and_describe_through_envoy(stack: Stack) -> None:
    listed = grpcurl(stack, "list")
    assert listed.returncode == 0, listed.stderr
    assert "samsvc.v1.SegmentationService" in listed.stdout.split()
    described = grpcurl(stack, "describe", "samsvc.v1.SegmentationService")
    assert described.returncode == 0, described.stderr
    assert "rpc Segment ( .samsvc.v1.SegmentRequest )" in described.stdout


def test_segment_health_and_jobs_through_envoy(stack: Stack) -> None:
    image = base64.b64encode(encode(scene(64, 48))).decode()
    segmented = grpcurl(
        stack, "samsvc.v1.SegmentationService/Segment", data=json.dumps({"image": image, "points_per_side": 1})
    )
    assert segmented.returncode == 0, segmented.stderr
    job_id = json.loads(segmented.stdout)["job_id"]
    status = grpcurl(stack, "samsvc.v1.SegmentationService/GetJobStatus", data=json.dumps({"job_id": job_id}))
    assert status.returncode == 0 and "JOB_STATUS_COMPLETED" in status.stdout
    cancel = grpcurl(stack, "samsvc.v1.SegmentationService/CancelJob", data=json.dumps({"job_id": job_id}))
    assert cancel.returncode == 0
    health = grpcurl(stack, "grpc.health.v1.Health/Check")
    assert health.returncode == 0 and "SERVING" in health.stdout
