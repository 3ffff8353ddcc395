"""The attacks on the edges added after the bounded-cost work (the Label Studio and CVAT adapters,
exports, decoders, sessions, the pages), run by bench.abuse against the same `samsvc serve`:
each is bounded in count and time and stays on loopback. Their numbers (31.N) follow the
hardening points they probe."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from samsvc.v1 import health_pb2, interactive_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.support import encode, raw_request, scene

if TYPE_CHECKING:
    from bench.abuse import Target

#: Label Studio's token in the bench (what must never leave for another path).
STUDIO_TOKEN = "bench-studio-token"
Attack = Callable[[], tuple[list[float], str]]


class StudioFiles:
    """Label Studio's media server on loopback: one task image; every request is counted."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        seen, image = self.requests, encode(scene(64, 48, seed=3))

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                ok = self.path == "/data/upload/1/photo.png"
                body = image if ok else b"no"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def timed(attempt: Callable[[], Any], rounds: int) -> tuple[list[float], Any]:
    """Seconds each of `rounds` attempts took, and the last attempt's outcome."""
    took, outcome = [], None
    for _ in range(rounds):
        started = time.perf_counter()
        outcome = attempt()
        took.append(time.perf_counter() - started)
    return took, outcome


def _reason(call: Callable[[], object]) -> str:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    try:
        call()
    except grpc.RpcError as error:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
        for detail in status.details if status else []:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                return f"{error.code().name} ({info.reason})"
        return str(error.code().name)
    return "ACCEPTED"


def _adapter_port(target: Target) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{target.admin_port}/clusters?format=json", timeout=10) as answer:
        clusters = json.loads(answer.read())["cluster_statuses"]
    adapter = next(c for c in clusters if c["name"] == "samsvc_adapter")
    return int(adapter["host_statuses"][0]["address"]["socket_address"]["port_value"])


def _predict(image: str) -> bytes:
    keypoint = {
        "original_width": 64, "original_height": 48, "type": "keypointlabels", "is_positive": True,
        "value": {"x": 50, "y": 50, "keypointlabels": ["Object"]},
    }  # fmt: skip
    config = (
        '<View><Image name="image" value="$image"/><BrushLabels name="tag" toName="image">'
        '<Label value="Object"/></BrushLabels></View>'
    )
    body = {
        "tasks": [{"data": {"image": image}}],
        "label_config": config,
        "params": {"context": {"result": [keypoint]}},
    }
    return json.dumps(body).encode()


def edge_attacks(target: Target, rounds: int, key: str, other: str, studio: StudioFiles) -> dict[str, Attack]:
    port, stub = target.rest_port, target.stub
    auth, other_auth = [("x-api-key", key)], [("x-api-key", other)]

    def options_uploads() -> tuple[list[float], str]:
        answers: list[Any] = []

        def one() -> None:
            headers = {"Content-Type": "application/json"}
            answers.append(raw_request(port, "OPTIONS", "/api/v1/segment/batch", headers, 100 << 20, pace=0.005))

        started = time.perf_counter()
        threads = [threading.Thread(target=one) for _ in range(4)]
        for thread in threads:
            thread.start()
        served = raw_request(port, "GET", "/api/v1/models", {"x-api-key": key}).status
        for thread in threads:
            thread.join(timeout=120)
        took = [time.perf_counter() - started]
        sent = max(answer.sent for answer in answers) >> 10
        return took, f"HTTP {answers[0].status} after {sent} KiB of 100 MiB each; a keyed call meanwhile: {served}"

    def health_body() -> tuple[list[float], str]:
        took, answer = timed(lambda: raw_request(port, "GET", "/health", {}, 13 << 20, pace=0.005), rounds)
        return took, f"HTTP {answer.status} after {answer.sent >> 10} KiB of 13 MiB"

    def foreign_bucket() -> tuple[list[float], str]:
        request = pb.SubmitBatchRequest(images=[encode(scene(32, 32))], export_url="s3://finance-reports/q3/")
        took, outcome = timed(lambda: _reason(lambda: stub.SubmitBatch(request, metadata=auth)), rounds)
        return took, f"{outcome}, nothing written, the same for a bucket that does not exist"

    def adapter_without_gateway() -> tuple[list[float], str]:
        adapter = _adapter_port(target)
        studio.requests.clear()

        def one() -> int | None:
            with socket.create_connection(("127.0.0.1", adapter), timeout=10) as sock:
                body = _predict("/data/upload/1/photo.png")
                head = f"POST /label-studio/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                sock.sendall(head.encode() + body)
                answer = sock.recv(64)
            return int(answer.split()[1]) if answer.startswith(b"HTTP/1.") else None

        took, status = timed(one, rounds)
        return took, f"HTTP {status} (no key, past Envoy); Label Studio asked {len(studio.requests)} times"

    def token_to_other_paths() -> tuple[list[float], str]:
        studio.requests.clear()
        basic = base64.b64encode(f"labelstudio:{key}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}

        def one() -> int | None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/label-studio/predict",
                data=_predict("/data/upload/../../api/users/"),
                headers=headers,
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as answer:
                    return int(answer.status)
            except urllib.error.HTTPError as error:
                return int(error.code)

        took, status = timed(one, rounds)
        return took, f"HTTP {status} (IMAGE_URL_FORBIDDEN); Label Studio asked {len(studio.requests)} times"

    def failing_model_loads() -> tuple[list[float], str]:
        request = interactive_pb2.GetDecoderRequest(model_type="tampered")
        session = interactive_pb2.GetImageSessionRequest(image_id="img_" + "0" * 32 + "_tiny")
        waits: list[float] = []
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=70) as pool:
            outcomes = [pool.submit(_reason, lambda: stub.GetDecoderInfo(request, metadata=auth)) for _ in range(70)]
            for _ in range(10):
                begun = time.perf_counter()
                _reason(lambda: stub.GetImageSession(session, metadata=other_auth))
                waits.append(time.perf_counter() - begun)
            counts: dict[str, int] = {}
            for outcome in outcomes:
                counts[outcome.result()] = counts.get(outcome.result(), 0) + 1
        took = [time.perf_counter() - started]
        summary = ", ".join(f"{n} x {reason}" for reason, n in sorted(counts.items()))
        return took, f"{summary}; another key's call p50 {statistics.median(waits) * 1000:.1f} ms meanwhile"

    def absent_weights() -> tuple[list[float], str]:
        request = interactive_pb2.GetDecoderRequest(model_type="vit_b")
        messages: list[str] = []

        def one() -> str:
            try:
                stub.GetDecoderInfo(request, metadata=auth)
            except grpc.RpcError as error:
                messages.append(error.details() or "")
            return messages[-1] if messages else ""

        took, _ = timed(one, rounds)
        return took, f"FAILED_PRECONDITION (MODEL_WEIGHTS_MISSING); names a path: {any('/' in m for m in messages)}"

    def another_keys_image() -> tuple[list[float], str]:
        image = encode(scene(256, 192, seed=int(time.time()) % 1000))
        create = interactive_pb2.CreateImageSessionRequest(image=image, model_type="tiny")
        owner = stub.CreateImageSession(create, metadata=auth)
        hit_took, hit = timed(lambda: stub.CreateImageSession(create, metadata=auth), 1)
        took, theirs = timed(lambda: stub.CreateImageSession(create, metadata=other_auth), 1)
        assert not owner.embedding_cache_hit and hit.embedding_cache_hit
        return took, (
            f"cache hit for the other key: {theirs.embedding_cache_hit} ({took[0] * 1000:.0f} ms; "
            f"the owner's own hit {hit_took[0] * 1000:.0f} ms)"
        )

    def knocking() -> tuple[list[float], str]:
        before = target.log_lines("refused ListModels")
        took, outcome = timed(lambda: _reason(lambda: stub.ListModels(pb.ListModelsRequest())), 1000)
        lines = target.log_lines("refused ListModels") - before
        return took, f"{outcome} x 1000; {lines} log lines"

    def keyed_health_models() -> tuple[list[float], str]:
        took, answer = timed(lambda: stub.CheckHealth(health_pb2.CheckHealthRequest(), metadata=other_auth), rounds)
        names = [m.name for m in answer.models]
        return took, f"a key for tiny sees {names}; paths shown: {any('/' in m.checkpoint for m in answer.models)}"

    return {
        "31.1 4 unauthenticated OPTIONS of 100 MiB": options_uploads,
        "31.1 GET /health with a 13 MiB body": health_body,
        "31.2 export into s3://finance-reports/": foreign_bucket,
        "31.3 keyless predict on the adapter's port": adapter_without_gateway,
        "31.3 Label Studio's token to /data/upload/../../api/users/": token_to_other_paths,
        "31.4 70 GetDecoderInfo on a checkpoint failing its checksum": failing_model_loads,
        "31.5 a model's absent weights": absent_weights,
        "31.5 health and models seen by a limited key": keyed_health_models,
        "31.6 another key's image in the embedding cache": another_keys_image,
        "31.7 1000 calls without a key": knocking,
    }
