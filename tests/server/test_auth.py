"""API keys over gRPC, through Envoy (REST) and for grpcurl: missing or wrong keys get
UNAUTHENTICATED (HTTP 401), health and reflection stay open."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.gateway.launcher import start_gateway
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.server.test_grpcurl import GRPCURL
from tests.support import ServerThread, encode, rich_status, scene
from tests.support.starts import starts


@starts("processes", scope="module")
def key_and_server(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, ServerThread]]:
    created = subprocess.run(
        [sys.executable, "-m", "samsvc.cli", "keys", "create", "labeler"], capture_output=True, text=True, check=True
    )
    lines = created.stdout.splitlines()
    key = lines[0].rsplit(" ", 1)[1]
    entry = lines[-1]
    assert entry.startswith("labeler:") and key not in entry, "only the digest is stored"
    keys_file = tmp_path_factory.mktemp("keys") / "api_keys"
    keys_file.write_text(f"# samsvc keys\n{entry}\n")
    settings = base_settings.model_copy(
        update={"api_keys_file": keys_file, "data_dir": str(tmp_path_factory.mktemp("d"))}
    )
    server = ServerThread(settings)
    yield key, server
    server.stop()


def segment(server: ServerThread, metadata: list[tuple[str, str]]) -> pb.SegmentResponse:
    request = pb.SegmentRequest(image=encode(scene(48, 32)), points_per_side=1)
    response: pb.SegmentResponse = server.stub.Segment(request, metadata=metadata)
    return response


@pytest.mark.parametrize(
    "metadata,reason",
    [
        ([], "API_KEY_MISSING"),
        ([("x-api-key", "sk_wrong")], "API_KEY_INVALID"),
        ([("authorization", "Bearer nope")], "API_KEY_INVALID"),
    ],
)
def test_refused_without_a_valid_key(key_and_server: tuple[str, ServerThread], metadata: list, reason: str) -> None:
    _, server = key_and_server
    with pytest.raises(grpc.RpcError) as caught:
        segment(server, metadata)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert rich_status(caught.value)[1]["ErrorInfo"].reason == reason
    with pytest.raises(grpc.RpcError) as streamed:
        list(server.stub.WatchJob(pb.WatchJobRequest(job_id="job_x"), metadata=metadata))
    assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_both_header_forms_work(key_and_server: tuple[str, ServerThread]) -> None:
    key, server = key_and_server
    assert segment(server, [("authorization", f"Bearer {key}")]).image_width == 48
    assert segment(server, [("x-api-key", key)]).image_width == 48


def test_health_and_reflection_stay_open(key_and_server: tuple[str, ServerThread]) -> None:
    _, server = key_and_server
    status = health_pb2_grpc.HealthStub(server.channel).Check(health_pb2.HealthCheckRequest())
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert GRPCURL
    listed = subprocess.run([GRPCURL, "-plaintext", server.address, "list"], capture_output=True, text=True, timeout=60)
    assert "samsvc.v1.SegmentationService" in listed.stdout


@pytest.mark.envoy
def test_rest_gets_401_then_200_with_a_key(key_and_server: tuple[str, ServerThread]) -> None:
    key, server = key_and_server
    settings = server.settings.model_copy(update={"rest_port": 0, "envoy_admin_port": 0})
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    base = f"http://127.0.0.1:{gateway.rest_port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(f"{base}/models", timeout=30)
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["details"][0]["reason"] == "API_KEY_MISSING"
        request = urllib.request.Request(f"{base}/models", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and len(json.loads(response.read())["models"]) == 8
    finally:
        gateway.stop()


def test_health_without_a_key_says_only_whether_it_serves(key_and_server: tuple[str, ServerThread]) -> None:
    from samsvc.v1 import health_pb2 as samsvc_health

    key, server = key_and_server
    anonymous = server.stub.CheckHealth(samsvc_health.CheckHealthRequest())
    assert anonymous.status == samsvc_health.SERVING_STATUS_SERVING
    assert not anonymous.models and not anonymous.version and not anonymous.HasField("process")
    assert not anonymous.HasField("limits") and not anonymous.HasField("jobs")
    detailed = server.stub.CheckHealth(samsvc_health.CheckHealthRequest(), metadata=[("x-api-key", key)])
    assert detailed.models and detailed.version and detailed.limits.max_image_bytes > 0


def test_admin_token_keys_are_checked_at_start(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from samsvc.errors import ConfigurationError
    from samsvc.server.auth import Authenticator

    pem = tmp_path_factory.mktemp("pem") / "public.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pem) + ".key"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(pem) + ".key", "-pubout", "-out", str(pem)], check=True, capture_output=True
    )
    cases = {
        "a short HMAC secret": {"admin_jwt_key": SecretStr("only-20-bytes-secret")},
        "a PEM key for HS256": {"admin_jwt_key_file": pem},
        "a secret for RS256": {"admin_jwt_key": SecretStr("x" * 40), "admin_jwt_algorithms": ["RS256"]},
    }
    for case, update in cases.items():
        with pytest.raises(ConfigurationError) as refused:
            Authenticator.from_options(base_settings.model_copy(update=update).auth_options())
        assert "ADMIN_JWT_KEY" in refused.value.message, case
    strong = base_settings.model_copy(update={"admin_jwt_key": SecretStr("s" * 32)})
    assert Authenticator.from_options(strong.auth_options()).admin_policy
    rsa = base_settings.model_copy(update={"admin_jwt_key_file": pem, "admin_jwt_algorithms": ["RS256"]})
    assert Authenticator.from_options(rsa.auth_options()).admin_policy
