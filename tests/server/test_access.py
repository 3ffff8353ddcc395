"""Who may do what: jobs belong to the key that made them, admin operations need an admin JWT,
per-key rate limits, and no unauthenticated service on a network address. Over gRPC and REST."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.errors import ConfigurationError
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.app import start_server
from samsvc.server.auth import digest, new_key
from samsvc.v1 import admin_service_pb2 as admin_pb
from samsvc.v1 import admin_service_pb2_grpc
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import ServerThread, encode, rich_status, scene
from tests.support.starts import starts

ADMIN_SECRET = "test-admin-secret-that-is-long-enough-for-hs256"


def admin_token(claim: bool = True, expires_in: float = 300, secret: str = ADMIN_SECRET) -> str:
    claims: dict[str, Any] = {"sub": "ops", "exp": int(time.time() + expires_in)}
    if claim:
        claims["samsvc_admin"] = True
    return jwt.encode(claims, secret, algorithm="HS256")


@dataclass
class Setup:
    server: ServerThread
    gateway: Gateway
    alice: str
    bob: str

    @property
    def admin(self) -> admin_service_pb2_grpc.AdminServiceStub:
        return admin_service_pb2_grpc.AdminServiceStub(self.server.channel)

    def rest(self, method: str, path: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.gateway.rest_port}{path}",
            data=data,
            method=method,
            headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


@starts("envoy", scope="module")
def setup(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    alice, bob = new_key(), new_key()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"alice:{digest(alice)}", f"bob:{digest(bob)}"],
            "admin_jwt_key": SecretStr(ADMIN_SECRET),
            "data_dir": str(tmp_path_factory.mktemp("data")),
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(
        settings.model_copy(update={"envoy_admin_port": 0}).gateway_options(), "127.0.0.1", server.running.port
    )
    yield Setup(server, gateway, alice, bob)
    gateway.stop()
    server.stop()


def key(value: str) -> list[tuple[str, str]]:
    return [("x-api-key", value)]


def bearer(value: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {value}")]


def segment(setup: Setup, caller: str) -> str:
    request = pb.SegmentRequest(image=encode(scene(48, 32)), points_per_side=1)
    response: pb.SegmentResponse = setup.server.stub.Segment(request, metadata=key(caller))
    return response.job_id


def _drain(call: Any) -> None:
    result = call()
    if hasattr(result, "__iter__"):
        list(result)


def code_and_reason(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        _drain(call)
    return caught.value.code(), rich_status(caught.value)[1]["ErrorInfo"].reason


def test_jobs_belong_to_the_key_that_made_them(setup: Setup) -> None:
    stub = setup.server.stub
    job_id = segment(setup, setup.alice)
    mine = stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=key(setup.alice))
    assert mine.owner == "alice"
    assert stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id), metadata=key(setup.alice)).job.owner == "alice"
    for call in (
        lambda: stub.GetJobStatus(pb.GetJobStatusRequest(job_id=job_id), metadata=key(setup.bob)),
        lambda: stub.GetJobResults(pb.GetJobResultsRequest(job_id=job_id), metadata=key(setup.bob)),
        lambda: stub.CancelJob(pb.CancelJobRequest(job_id=job_id), metadata=key(setup.bob)),
        lambda: stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=key(setup.bob)),
    ):
        assert code_and_reason(call) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    alice_jobs = [j.job_id for j in stub.ListJobs(pb.ListJobsRequest(), metadata=key(setup.alice)).jobs]
    bob_jobs = [j.job_id for j in stub.ListJobs(pb.ListJobsRequest(), metadata=key(setup.bob)).jobs]
    assert job_id in alice_jobs and job_id not in bob_jobs
    # Through Envoy: the same answer as HTTP statuses.
    assert setup.rest("GET", f"/api/v1/jobs/{job_id}/status", setup.alice)[0] == 200
    status, body = setup.rest("GET", f"/api/v1/jobs/{job_id}/status", setup.bob)
    assert status == 404 and body["details"][0]["reason"] == "JOB_NOT_FOUND"


def test_request_ids_are_scoped_to_their_key(setup: Setup) -> None:
    stub = setup.server.stub
    request = pb.SubmitBatchRequest(
        images=[encode(scene(40, 30))], options=pb.SegmentOptions(points_per_side=1), request_id="same-id"
    )
    first = stub.SubmitBatch(request, metadata=key(setup.alice))
    again = stub.SubmitBatch(request, metadata=key(setup.alice))
    other = stub.SubmitBatch(request, metadata=key(setup.bob))
    assert first.job_id == again.job_id != other.job_id


# Credentials are made when each test runs (tokens made at collection could expire before it).
ADMIN_CASES: dict[str, tuple[Callable[[Setup], list[tuple[str, str]]], grpc.StatusCode, str]] = {
    "none": (lambda s: [], grpc.StatusCode.UNAUTHENTICATED, "ADMIN_TOKEN_MISSING"),
    "api key": (lambda s: key(s.alice), grpc.StatusCode.PERMISSION_DENIED, "ADMIN_TOKEN_REQUIRED"),
    "no claim": (
        lambda s: bearer(admin_token(claim=False)),
        grpc.StatusCode.PERMISSION_DENIED,
        "ADMIN_CLAIM_MISSING",
    ),
    "expired": (
        lambda s: bearer(admin_token(expires_in=-600)),
        grpc.StatusCode.UNAUTHENTICATED,
        "ADMIN_TOKEN_EXPIRED",
    ),
    "other signer": (
        lambda s: bearer(admin_token(secret="another-secret-of-sufficient-length-xyz")),
        grpc.StatusCode.UNAUTHENTICATED,
        "ADMIN_TOKEN_INVALID",
    ),
    "garbage": (lambda s: bearer("not.a.jwt"), grpc.StatusCode.UNAUTHENTICATED, "ADMIN_TOKEN_INVALID"),
}


@pytest.mark.parametrize("case", list(ADMIN_CASES))
def test_admin_operations_need_an_admin_token(setup: Setup, case: str) -> None:
    credentials, code, reason = ADMIN_CASES[case]
    metadata = credentials(setup)
    call = lambda: setup.admin.ListAllJobs(admin_pb.ListAllJobsRequest(), metadata=metadata)  # noqa: E731
    assert code_and_reason(call) == (code, reason)


def test_admin_lists_purges_and_manages_models(setup: Setup) -> None:
    token = bearer(admin_token())
    alice_job, bob_job = segment(setup, setup.alice), segment(setup, setup.bob)
    everyone = {j.job_id: j.owner for j in setup.admin.ListAllJobs(admin_pb.ListAllJobsRequest(), metadata=token).jobs}
    assert everyone[alice_job] == "alice" and everyone[bob_job] == "bob"
    only_bob = setup.admin.ListAllJobs(admin_pb.ListAllJobsRequest(owner="bob"), metadata=token).jobs
    assert {j.owner for j in only_bob} == {"bob"}

    purged = setup.admin.PurgeJob(admin_pb.PurgeJobRequest(job_id=alice_job), metadata=token)
    assert purged.job_id == alice_job and not purged.cancelled
    gone = lambda: setup.server.stub.GetJobStatus(pb.GetJobStatusRequest(job_id=alice_job), metadata=key(setup.alice))  # noqa: E731
    assert code_and_reason(gone) == (grpc.StatusCode.NOT_FOUND, "JOB_NOT_FOUND")
    again = lambda: setup.admin.PurgeJob(admin_pb.PurgeJobRequest(job_id=alice_job), metadata=token)  # noqa: E731
    assert code_and_reason(again)[0] == grpc.StatusCode.NOT_FOUND

    unloaded = setup.admin.UnloadModel(admin_pb.UnloadModelRequest(name="tiny"), metadata=token)
    assert unloaded.name == "tiny" and not unloaded.loaded
    loaded = setup.admin.LoadModel(admin_pb.LoadModelRequest(name="tiny"), metadata=token)
    assert loaded.loaded and loaded.load_time_seconds > 0
    missing = lambda: setup.admin.LoadModel(admin_pb.LoadModelRequest(name="nope"), metadata=token)  # noqa: E731
    assert code_and_reason(missing) == (grpc.StatusCode.NOT_FOUND, "MODEL_NOT_FOUND")

    # Through Envoy: 403 for an API key, 200 with the token.
    status, body = setup.rest("GET", "/api/v1/admin/jobs?owner=bob", setup.bob)
    assert status == 403 and body["details"][0]["reason"] == "ADMIN_TOKEN_REQUIRED"
    status, body = setup.rest("GET", "/api/v1/admin/jobs?owner=bob", admin_token())
    assert status == 200 and body["jobs"] and {j["owner"] for j in body["jobs"]} == {"bob"}
    status, body = setup.rest("POST", "/api/v1/admin/models/tiny:unload", admin_token(), {})
    assert status == 200 and body["loaded"] is False


def test_admin_operations_are_off_without_a_jwt_key(base_settings: Settings) -> None:
    server = ServerThread(base_settings)
    try:
        stub = admin_service_pb2_grpc.AdminServiceStub(server.channel)
        call = lambda: stub.ListAllJobs(admin_pb.ListAllJobsRequest(), metadata=bearer(admin_token()))  # noqa: E731
        assert code_and_reason(call) == (grpc.StatusCode.PERMISSION_DENIED, "ADMIN_DISABLED")
    finally:
        server.stop()


@pytest.mark.envoy
def test_rate_limits_per_key_in_memory(base_settings: Settings, tmp_path: Path) -> None:
    alice, bob = new_key(), new_key()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"alice:{digest(alice)}", f"bob:{digest(bob)}"],
            "rate_limit_requests_per_minute": 3,
            "rate_limit_images_per_minute": 2,
            "data_dir": str(tmp_path),
        }
    )
    server = ServerThread(settings)
    try:
        stub = server.stub
        for _ in range(3):
            stub.ListModels(pb.ListModelsRequest(), metadata=key(alice))
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListModels(pb.ListModelsRequest(), metadata=key(alice))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = rich_status(caught.value)[1]
        assert details["ErrorInfo"].reason == "RATE_LIMITED"
        assert 0 < details["RetryInfo"].retry_delay.ToTimedelta().total_seconds() <= 20
        # Another key has its own budget; a batch larger than the image limit can never pass.
        stub.ListModels(pb.ListModelsRequest(), metadata=key(bob))
        three = pb.SubmitBatchRequest(images=[encode(scene(40, 30))] * 3, options=pb.SegmentOptions(points_per_side=1))
        with pytest.raises(grpc.RpcError) as too_big:
            stub.SubmitBatch(three, metadata=key(bob))
        assert too_big.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_status(too_big.value)[1]["BadRequest"].field_violations[0].field == "images"
        # Through Envoy: 429 with the retry delay in the JSON error body.
        gateway = start_gateway(
            settings.model_copy(update={"envoy_admin_port": 0}).gateway_options(), "127.0.0.1", server.running.port
        )
        try:
            rest = Setup(server, gateway, alice, bob)
            status, body = rest.rest("GET", "/api/v1/models", alice)
            assert status == 429 and body["details"][0]["reason"] == "RATE_LIMITED"
            assert any("retry_delay" in detail for detail in body["details"]), body
        finally:
            gateway.stop()
    finally:
        server.stop()


def test_refuses_a_network_address_without_keys(base_settings: Settings) -> None:
    import asyncio

    exposed = base_settings.model_copy(update={"grpc_host": "0.0.0.0"})
    with pytest.raises(ConfigurationError, match="ALLOW_UNAUTHENTICATED"):
        asyncio.run(start_server(exposed))
    allowed = ServerThread(exposed.model_copy(update={"allow_unauthenticated": True}))
    try:
        assert allowed.stub.ListModels(pb.ListModelsRequest()).models
    finally:
        allowed.stop()
    with_keys = ServerThread(exposed.model_copy(update={"api_keys": [f"k:{digest(new_key())}"]}))
    with_keys.stop()
