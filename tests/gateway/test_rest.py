"""The documented REST routes through a real Envoy in front of a real server, called as curl
would call them."""

from __future__ import annotations

import base64
import json
import ssl
import threading
import uuid
from typing import Any

import pytest

from tests.gateway.conftest import ALLOWED_ORIGIN, Stack, call
from tests.support import encode, raw_request, scene

PERMISSIVE = {"points_per_side": 2, "pred_iou_thresh": 0, "stability_score_thresh": 0}


def post_json(url: str, payload: dict[str, Any]) -> tuple[int, Any]:
    status, _, body = call(url, "POST", json.dumps(payload).encode(), {"Content-Type": "application/json"})
    return status, json.loads(body) if body else None


def image_b64(width: int = 64, height: int = 48, seed: int = 0) -> str:
    return base64.b64encode(encode(scene(width, height, seed=seed))).decode()


def multipart(fields: list[tuple[str, str]], files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields:
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, filename, data in files:
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_segment_json_prints_snake_case_and_zeros(stack: Stack, prefix: str) -> None:
    status, body = post_json(f"{stack.base}{prefix}/segment", {"image": image_b64(), **PERMISSIVE})
    assert status == 200, body
    assert body["job_id"].startswith("seg_")
    assert body["image_width"] == 64 and body["image_height"] == 48
    assert body["visualization"] == "", "empty bytes printed, not omitted"
    assert body["mask_format"] == "MASK_FORMAT_PNG"
    mask = body["masks"][0]
    assert set(mask) >= {"segmentation", "area", "bbox", "predicted_iou", "stability_score", "point_coords", "crop_box"}
    assert base64.b64decode(mask["segmentation"]).startswith(b"\x89PNG")


@pytest.mark.parametrize("path", ["/health", "/api/v1/health", "/models", "/api/v1/models"])
def test_read_routes(stack: Stack, path: str) -> None:
    status, _, body = call(stack.base + path)
    assert status == 200
    data = json.loads(body)
    models = data["models"]
    assert [m["name"] for m in models][:3] + [m["name"] for m in models][-1:] == ["vit_h", "vit_l", "vit_b", "tiny"]
    assert {m["name"]: m["family"] for m in models}["sam2.1_hiera_tiny"] == "MODEL_FAMILY_SAM2"
    assert models[0]["loaded"] is False and models[0]["load_time_seconds"] == 0, "zeros are printed"
    assert models[0]["size_bytes"] == "2564550879", "int64 is a JSON string"


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_job_routes(stack: Stack, prefix: str) -> None:
    status, submitted = post_json(
        f"{stack.base}{prefix}/segment/batch",
        {"images": [image_b64(seed=1), image_b64(seed=2)], "options": PERMISSIVE, "priority": "PRIORITY_HIGH"},
    )
    assert status == 200, submitted
    job_id = submitted["job_id"]
    assert submitted["status"] == "JOB_STATUS_QUEUED" and submitted["total_images"] == 2

    def finished() -> bool:
        _, _, raw = call(f"{stack.base}{prefix}/jobs/{job_id}/status")
        return json.loads(raw)["status"] == "JOB_STATUS_COMPLETED"

    from tests.support import wait_for

    wait_for(finished, timeout=120, what="the batch")
    status, _, raw = call(f"{stack.base}{prefix}/jobs/{job_id}/results?page_size=1")
    page = json.loads(raw)
    assert status == 200 and [r["index"] for r in page["results"]] == [0] and page["next_page_token"]
    status, _, raw = call(
        f"{stack.base}{prefix}/jobs/{job_id}/results?page_size=1&page_token={page['next_page_token']}"
    )
    assert [r["index"] for r in json.loads(raw)["results"]] == [1]
    status, _, raw = call(f"{stack.base}{prefix}/jobs/{job_id}", "DELETE")
    assert status == 200 and json.loads(raw)["status"] == "JOB_STATUS_COMPLETED", (
        "cancelling an ended job changes nothing"
    )
    status, _, raw = call(f"{stack.base}/api/v1/jobs?job_type=JOB_TYPE_BATCH&page_size=50")
    assert job_id in [j["job_id"] for j in json.loads(raw)["jobs"]]


def test_streaming_batch_is_newline_delimited_json(stack: Stack) -> None:
    payload = {"images": [image_b64(seed=3), image_b64(seed=4)], "options": PERMISSIVE}
    status, _, body = call(
        f"{stack.base}/api/v1/segment/batch:stream",
        "POST",
        json.dumps(payload).encode(),
        {"Content-Type": "application/json"},
    )
    assert status == 200
    events = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    kinds = [next(k for k in ("accepted", "image", "progress", "finished") if k in e) for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "finished" and kinds.count("image") == 2
    job_id = events[0]["job_id"]
    status, _, replay = call(f"{stack.base}/api/v1/jobs/{job_id}/events?cursor={events[2]['cursor']}")
    assert [json.loads(line)["cursor"] for line in replay.decode().splitlines()] == [e["cursor"] for e in events[3:]]


def test_bad_input_is_400_with_field_violations(stack: Stack) -> None:
    status, body = post_json(f"{stack.base}/api/v1/segment", {"image": image_b64(), "points_per_side": 0})
    assert status == 400
    assert body["code"] == 3 and "points_per_side" in body["message"]
    kinds = {d["@type"].rsplit("/", 1)[1]: d for d in body["details"]}
    assert kinds["google.rpc.ErrorInfo"]["reason"] == "INVALID_PARAMETER"
    assert kinds["google.rpc.BadRequest"]["field_violations"][0]["field"] == "points_per_side"


def test_unknown_job_is_404(stack: Stack) -> None:
    status, _, body = call(f"{stack.base}/jobs/job_missing/status")
    assert status == 404 and json.loads(body)["details"][0]["reason"] == "JOB_NOT_FOUND"


def test_unknown_route_and_query_parameter(stack: Stack) -> None:
    assert call(f"{stack.base}/no/such/route")[0] == 404
    assert call(f"{stack.base}/api/v1/segment", "GET")[0] == 404
    status, _, body = call(f"{stack.base}/models?colour=red")
    assert status == 400 and b"colour" in body


def test_body_limits(stack: Stack) -> None:
    settings = stack.server.settings
    big = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * (settings.max_image_bytes + 10)).decode()
    status, body = post_json(f"{stack.base}/api/v1/segment", {"image": big})
    assert status == 400 and body["details"][0]["reason"] == "IMAGE_TOO_LARGE"
    oversized = raw_request(
        stack.gateway.rest_port,
        "POST",
        "/api/v1/segment",
        {"Content-Type": "application/json"},
        settings.max_batch_bytes * 2,
        pace=0.002,
    )
    assert oversized.status == 413


def test_raw_upload_with_query_options(stack: Stack) -> None:
    data = encode(scene(80, 60, seed=5))
    status, _, body = call(
        f"{stack.base}/api/v1/segment?points_per_side=2&pred_iou_thresh=0&stability_score_thresh=0&mask_format=MASK_FORMAT_RLE",
        "POST",
        data,
        {"Content-Type": "image/png"},
    )
    assert status == 200, body
    result = json.loads(body)
    assert result["image_width"] == 80 and result["masks"][0]["rle"]["size"] == [60, 80]


def test_multipart_single_and_batch(stack: Stack) -> None:
    form, kind = multipart(
        [
            ("points_per_side", "2"),
            ("pred_iou_thresh", "0"),
            ("stability_score_thresh", "0"),
            ("return_visualization", "true"),
        ],
        [("image", "photo.png", encode(scene(64, 48, seed=6)))],
    )
    status, _, body = call(f"{stack.base}/api/v1/segment", "POST", form, {"Content-Type": kind})
    assert status == 200, body
    result = json.loads(body)
    assert result["masks"] and base64.b64decode(result["visualization"]).startswith(b"\x89PNG")

    form, kind = multipart(
        [("points_per_side", "2"), ("priority", "PRIORITY_LOW")],
        [("images", f"{i}.png", encode(scene(64, 48, seed=i))) for i in range(3)],
    )
    status, _, body = call(f"{stack.base}/segment/batch", "POST", form, {"Content-Type": kind})
    assert status == 200, body
    assert json.loads(body)["total_images"] == 3

    # Options as query parameters of a multipart upload count too; an unknown one is an error.
    form, kind = multipart([], [("image", "photo.png", encode(scene(64, 48, seed=6)))])
    query = "points_per_side=2&pred_iou_thresh=0&stability_score_thresh=0&mask_format=MASK_FORMAT_RLE"
    status, _, body = call(f"{stack.base}/api/v1/segment?{query}", "POST", form, {"Content-Type": kind})
    assert status == 200, body
    assert json.loads(body)["masks"][0]["rle"]["size"] == [48, 64]
    status, _, body = call(f"{stack.base}/api/v1/segment?points_per_sid=2", "POST", form, {"Content-Type": kind})
    assert status == 400 and "points_per_sid" in json.loads(body)["message"]

    form, kind = multipart([("points_per_side", "0")], [("image", "p.png", encode(scene(64, 48)))])
    status, _, body = call(f"{stack.base}/segment", "POST", form, {"Content-Type": kind})
    assert status == 400 and "points_per_side" in json.loads(body)["message"]


def test_cors_preflight(stack: Stack) -> None:
    headers = {
        "Origin": ALLOWED_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, answer, _ = call(f"{stack.base}/api/v1/segment", "OPTIONS", headers=headers)
    assert status == 200
    assert answer["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in answer["access-control-allow-methods"]
    _, refused, _ = call(
        f"{stack.base}/api/v1/segment", "OPTIONS", headers={**headers, "Origin": "http://evil.example"}
    )
    assert "access-control-allow-origin" not in refused


def test_tls_listener(stack: Stack) -> None:
    context = ssl.create_default_context(cafile=str(stack.cert))
    status, _, body = call(f"{stack.tls_base}/health", context=context)
    assert status == 200 and json.loads(body)["status"] == "SERVING_STATUS_SERVING"


def test_request_id_reaches_the_server(stack: Stack) -> None:
    status, headers, _ = call(f"{stack.base}/models", headers={"x-request-id": "trace-42"})
    assert status == 200 and headers["x-request-id"] == "trace-42"


def test_docs_and_openapi(stack: Stack) -> None:
    status, _, page = call(f"{stack.base}/docs")
    assert status == 200 and b"swagger-ui-bundle.js" in page and b"http" not in page.split(b"<script")[1][:40]
    assert call(f"{stack.base}/redoc")[0] == 200
    assert call(f"{stack.base}/docs/assets/redoc.standalone.js")[0] == 200
    status, _, raw = call(f"{stack.base}/openapi.json")
    spec = json.loads(raw)
    assert status == 200 and "/api/v1/segment" in spec["paths"] and "/jobs/{job_id}/status" in spec["paths"]
    points = spec["components"]["schemas"]["samsvc.v1.SegmentRequest"]["properties"]["points_per_side"]
    assert "Point prompts per side" in points["description"]


def test_overload_is_429(stack: Stack, base_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> None:
    from samsvc.gateway.launcher import start_gateway
    from tests.support import ServerThread

    settings = base_settings.model_copy(
        update={
            "max_workers": 1,
            "max_queue": 0,
            "rest_port": 0,
            "envoy_admin_port": 0,
            "data_dir": str(tmp_path_factory.mktemp("d")),
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    base = f"http://127.0.0.1:{gateway.rest_port}"
    slow = {"image": image_b64(160, 120), "points_per_side": 6, "points_per_batch": 4, "pred_iou_thresh": 0}
    try:
        first: list[int] = []
        worker = threading.Thread(target=lambda: first.append(post_json(f"{base}/api/v1/segment", slow)[0]))
        worker.start()
        from tests.support import wait_for

        wait_for(lambda: json.loads(call(f"{base}/health")[2])["inference"]["running"] == 1, what="a running request")
        status, body = post_json(f"{base}/api/v1/segment", slow)
        assert status == 429 and body["details"][0]["reason"] == "SERVER_OVERLOADED"
        worker.join(timeout=120)
        assert first == [200]
    finally:
        gateway.stop()
        server.stop()


def test_prompted_segmentation_over_rest(stack: Stack) -> None:
    payload = {
        "image": image_b64(80, 60, seed=9),
        "prompts": [
            {"points": [{"x": 20, "y": 30}, {"x": 60, "y": 10, "background": True}]},
            {"box": {"x0": 5, "y0": 5, "x1": 50, "y1": 40}},
        ],
        "multimask_output": True,
    }
    status, body = post_json(f"{stack.base}/api/v1/segment/prompts", payload)
    assert status == 200, body
    assert [len(r["masks"]) for r in body["results"]] == [3, 3]
    assert body["embedding_cache_hit"] is False and body["results"][0]["low_res_logits"] == ""
    status, again = post_json(f"{stack.base}/segment/prompts", payload)
    assert status == 200 and again["embedding_cache_hit"] is True


def test_python_client_over_tls_through_envoy(stack: Stack) -> None:
    from samsvc.client import Client

    with Client(f"localhost:{stack.gateway.tls_port}", ca_file=stack.cert) as client:
        assert any(model.name == "tiny" for model in client.list_models())
        result = client.segment(scene(64, 48, seed=8), points_per_side=2, pred_iou_thresh=0, stability_score_thresh=0)
        assert result.arrays().shape[1:] == (48, 64)
