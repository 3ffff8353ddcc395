"""What one caller can cost the gateway, through a real Envoy in front of a real server with
API keys on: credentials are checked before a body is read, each route buffers only what fits
it, slow and silent callers are cut off, and connections are capped."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from samsvc.config import Settings
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.auth import digest, new_key
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1 import segmentation_service_pb2_grpc as pb_grpc
from tests.support import ServerThread, closed_by_peer, raw_request, rich_status, wait_for
from tests.support.starts import starts

KEY = new_key()
MAX_CONNECTIONS = 12
ORIGIN = "http://labeler.example"


@dataclass
class Gated:
    server: ServerThread
    gateway: Gateway
    settings: Settings

    @property
    def port(self) -> int:
        return self.gateway.rest_port


def start_gated(base_settings: Settings, data_dir: Path, **limits: Any) -> Gated:
    """A server with API keys on and Envoy in front of it, with these gateway limits."""
    settings = base_settings.model_copy(
        update={
            "data_dir": str(data_dir),
            "rest_port": 0,
            "envoy_admin_port": 0,
            "api_keys": [f"caller:{digest(KEY)}"],
            **limits,
        }
    )
    server = ServerThread(settings)
    return Gated(server, start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port), settings)


@starts("envoy", scope="module")
def gated(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gated]:
    running = start_gated(
        base_settings,
        tmp_path_factory.mktemp("data"),
        max_image_bytes=2 * 1024 * 1024,
        max_batch_bytes=8 * 1024 * 1024,
        gateway_headers_timeout_s=1.0,
        gateway_receive_timeout_s=3.0,
        gateway_idle_timeout_s=2.0,
        gateway_max_connections=MAX_CONNECTIONS,
        cors_origins=[ORIGIN],
    )
    yield running
    running.gateway.stop()
    running.server.stop()


def envoy_heap(gated: Gated) -> int:
    import urllib.request

    admin = gated.gateway.envoy.admin_path.read_text().strip()  # Envoy writes its admin address there
    with urllib.request.urlopen(f"http://{admin}/memory", timeout=10) as answer:
        return int(json.loads(answer.read())["allocated"])


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(gated: Gated) -> None:
    """An 8 MiB batch without a key: the gateway used to buffer all of it (and more, up to its
    limit) before the server said 401. Now the 401 comes after the headers, the body unread."""
    before = envoy_heap(gated)
    json_body = {"Content-Type": "application/json"}
    answers = [
        raw_request(gated.port, "POST", "/api/v1/segment/batch", json_body, 8 << 20, pace=0.01) for _ in range(5)
    ]
    for answer in answers:
        assert answer.status == 401
        assert answer.sent < 1 << 20, f"{answer.sent} bytes sent before the refusal"
        assert json.loads(answer.body)["details"][0]["reason"] == "API_KEY_MISSING"
    assert envoy_heap(gated) - before < 4 << 20, "the gateway's heap did not grow with the refused bodies"
    form = {"Content-Type": "multipart/form-data; boundary=x"}
    multipart = raw_request(gated.port, "POST", "/api/v1/segment", form, 4 << 20, pace=0.01)
    assert multipart.status == 401 and multipart.sent < 1 << 20, "the multipart adapter reads nothing either"
    wrong = raw_request(gated.port, "POST", "/api/v1/segment", {"x-api-key": "sk_wrong"}, 2 << 20)
    assert wrong.status == 401 and json.loads(wrong.body)["details"][0]["reason"] == "API_KEY_INVALID"


def test_native_grpc_through_the_gateway_is_checked_first_too(gated: Gated) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{gated.port}") as channel:
        stub = pb_grpc.SegmentationServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitBatch(pb.SubmitBatchRequest(images=[b"\x00" * (1 << 20)]), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert rich_status(refused.value)[1]["ErrorInfo"].reason == "API_KEY_MISSING"
        assert stub.ListModels(pb.ListModelsRequest(), metadata=[("x-api-key", KEY)], timeout=30).models


def test_open_routes_stay_open(gated: Gated) -> None:
    for path in ("/health", "/docs", "/openapi.json"):
        assert raw_request(gated.port, "GET", path, {}).status == 200, path
    assert raw_request(gated.port, "GET", "/api/v1/models", {}).status == 401


def test_no_method_passes_without_a_key_and_open_routes_take_no_body(gated: Gated) -> None:
    """OPTIONS used to pass the authorization check on every path, and the open routes buffered
    up to an image: four unauthenticated OPTIONS holding 100 MiB each grew Envoy by 400 MiB, and
    `GET /health` with a 13 MiB body was buffered too. Now a preflight from an allowed origin is
    answered by the CORS filter, every other OPTIONS needs a key, and the open routes (pages,
    health) take a few KiB at most, while authenticated callers are served throughout."""
    import threading

    before = envoy_heap(gated)
    answers: list[Any] = []

    def options_upload() -> None:
        headers = {"Content-Type": "application/json"}
        answers.append(raw_request(gated.port, "OPTIONS", "/api/v1/segment/batch", headers, 100 << 20, pace=0.01))

    attackers = [threading.Thread(target=options_upload) for _ in range(6)]
    for thread in attackers:
        thread.start()
    served = raw_request(gated.port, "GET", "/api/v1/models", {"x-api-key": KEY})
    for thread in attackers:
        thread.join(timeout=60)
    assert served.status == 200, "an authenticated caller is served during the attack"
    assert len(answers) == 6
    for answer in answers:
        assert answer.status == 401 and answer.sent < 1 << 20, f"{answer.sent} bytes taken before {answer.status}"
        assert json.loads(answer.body)["details"][0]["reason"] == "API_KEY_MISSING"
    for method, path in [("GET", "/health"), ("GET", "/api/v1/health"), ("GET", "/docs"), ("GET", "/console/")]:
        answer = raw_request(gated.port, method, path, {}, 13 << 20, pace=0.01)
        taken = f"{path}: {answer.sent} bytes taken before {answer.status}"
        assert answer.status == 413 and answer.sent < 1 << 20, taken
        assert raw_request(gated.port, method, path, {}).status == 200, f"{path} stays open without a body"
    grpc_health = {"Content-Type": "application/grpc", "TE": "trailers"}
    answer = raw_request(gated.port, "POST", "/grpc.health.v1.Health/Check", grpc_health, 13 << 20, pace=0.01)
    assert answer.sent < 1 << 20, "the open gRPC health check takes no large body either"
    assert envoy_heap(gated) - before < 4 << 20, "the gateway's heap did not grow with the refused bodies"


def test_a_preflight_from_an_allowed_origin_needs_no_key(gated: Gated) -> None:
    import http.client

    def preflight(origin: str) -> tuple[int, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", gated.port, timeout=30)
        try:
            headers = {
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-api-key",
            }
            connection.request("OPTIONS", "/api/v1/segment", headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()

    status, headers = preflight(ORIGIN)
    assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in headers["access-control-allow-headers"]
    status, headers = preflight("http://evil.example")
    assert "access-control-allow-origin" not in headers, f"another origin's preflight is not allowed ({status})"
    assert status in {200, 401, 403}


def test_each_route_buffers_only_what_fits_it(gated: Gated) -> None:
    """Every route takes one image at most (2 MiB as base64 JSON, plus room), batch routes a
    batch. Before, every route buffered up to the largest batch."""
    auth = {"x-api-key": KEY, "Content-Type": "application/json"}
    image_route = raw_request(gated.port, "POST", "/api/v1/segment", auth, 6 << 20, pace=0.005)
    assert image_route.status == 413 and image_route.sent < 5 << 20, "refused once past one image's limit"
    other_route = raw_request(gated.port, "DELETE", "/api/v1/jobs/job_x", auth, 6 << 20, pace=0.005)
    assert other_route.status == 413
    batch_route = raw_request(gated.port, "POST", "/api/v1/segment/batch", auth, 6 << 20)
    assert batch_route.status == 400, "6 MiB of JSON fits a batch (and is judged by the server: not JSON)"


def test_slow_headers_and_slow_bodies_are_cut_off(gated: Gated) -> None:
    with socket.create_connection(("127.0.0.1", gated.port), timeout=30) as sock:
        sock.sendall(b"POST /api/v1/segment HTTP/1.1\r\nHost: localhost\r\n")  # and nothing more
        started = time.monotonic()
        answer = sock.recv(4096)
        assert time.monotonic() - started < 5, "closed after the headers timeout (1 s)"
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408")
    stalled = raw_request(
        gated.port, "POST", "/api/v1/segment/batch", {"x-api-key": KEY}, 4 << 20, send_at_most=64 << 10
    )
    assert stalled.status == 408, "a body still incomplete after the receive timeout (3 s)"
    assert stalled.seconds < 10


def test_idle_connections_are_closed_and_connections_are_capped(gated: Gated) -> None:
    with socket.create_connection(("127.0.0.1", gated.port), timeout=30) as idle:
        started = time.monotonic()
        assert idle.recv(1) == b""
        assert time.monotonic() - started < 6, "an idle connection is closed after the idle timeout (2 s)"
    held = [socket.create_connection(("127.0.0.1", gated.port), timeout=10) for _ in range(MAX_CONNECTIONS + 4)]
    try:
        over = len(held) - MAX_CONNECTIONS
        closed: list[socket.socket] = []

        def refused() -> bool:
            closed.extend(s for s in held if s not in closed and closed_by_peer(s))
            return len(closed) >= over

        # Refused at once, long before the idle timeout (2 s) could close any of them.
        wait_for(refused, timeout=1.5, what=f"{over} connections over the limit to be closed")
        assert len(held) - len(closed) == MAX_CONNECTIONS
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: raw_request(gated.port, "GET", "/health", {}).status == 200, timeout=20, what="new connections")


@pytest.mark.envoy
def test_the_overload_manager_refuses_requests_near_the_heap_limit(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Authenticated callers holding large half-sent batches fill Envoy's buffers; near
    GATEWAY_MAX_HEAP_BYTES Envoy refuses new requests (503) instead of taking on more, and takes
    them again once the memory is released. (Streams already buffering stay bounded by their
    route's limit; over HTTP/2 the largest are also reset.)"""
    import threading

    gated = start_gated(
        base_settings,
        tmp_path_factory.mktemp("data"),
        max_batch_bytes=16 * 1024 * 1024,
        gateway_max_heap_bytes=64 * 1024 * 1024,
        gateway_receive_timeout_s=60.0,
        gateway_idle_timeout_s=60.0,
    )
    stop = threading.Event()
    holders: list[socket.socket] = []

    def hold_upload() -> None:
        sock = socket.create_connection(("127.0.0.1", gated.port), timeout=60)
        holders.append(sock)
        head = (
            f"POST /api/v1/segment/batch HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY}\r\nContent-Length: {20 << 20}\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"A" * (256 << 10)
        for _ in range(48):  # 12 MiB of the 20 announced, then silence
            if stop.is_set():
                return
            try:
                sock.sendall(chunk)
            except OSError:
                return

    try:
        assert raw_request(gated.port, "GET", "/health", {}).status == 200
        threads = [threading.Thread(target=hold_upload, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()

        def shedding() -> bool:
            answer = raw_request(gated.port, "GET", "/health", {}, timeout=10)
            return answer.status == 503 or answer.status is None

        wait_for(shedding, timeout=60, interval=0.2, what="Envoy to refuse requests near its heap limit")
    finally:
        stop.set()
        for sock in holders:
            sock.close()
    try:
        wait_for(
            lambda: raw_request(gated.port, "GET", "/health", {}).status == 200,
            timeout=60,
            interval=0.5,
            what="Envoy to take requests again once the memory is released",
        )
    finally:
        gated.gateway.stop()
        gated.server.stop()


def test_refusals_at_the_gateway_keep_the_metrics_bounded(gated: Gated) -> None:
    """A refused request was counted under the last segment of its path: a caller choosing
    random paths grew the metrics (and the scrape) without bound. Unknown paths now share one
    label; every refusal is still counted."""
    import uuid

    from prometheus_client import REGISTRY

    labels = {"rpc": "(no route)", "code": "UNAUTHENTICATED"}
    before = REGISTRY.get_sample_value("samsvc_requests_total", labels) or 0.0
    paths = [f"/api/v1/{uuid.uuid4().hex}" for _ in range(30)]
    for path in paths:
        assert raw_request(gated.port, "GET", path, {}).status == 401
    assert REGISTRY.get_sample_value("samsvc_requests_total", labels) == before + 30
    names = {sample.labels.get("rpc") for metric in REGISTRY.collect() for sample in metric.samples}
    assert not any(path.rsplit("/", 1)[1] in names for path in paths)
