"""The interactive routes through a real Envoy, as curl or a browser calls them: the embedding as
JSON or, for `Accept: application/octet-stream`, as the raw tensor with its description in
headers; image sessions; prompts by image_id; the ONNX decoder as a download."""

from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import onnx

from tests.gateway.conftest import Stack
from tests.gateway.test_rest import call, image_b64, post_json

RAW = {"Accept": "application/octet-stream"}


def test_embedding_as_json_or_raw_by_accept(stack: Stack) -> None:
    image = image_b64(120, 90, seed=61)
    status, session = post_json(f"{stack.base}/api/v1/images", {"image": image})
    assert status == 200 and session["image_width"] == 120 and session["image_id"].startswith("img_")
    image_id = session["image_id"]

    status, _, body = call(f"{stack.base}/api/v1/images/{image_id}/embedding")
    as_json = json.loads(body)
    assert status == 200 and as_json["tensors"][0]["shape"] == [1, 256, 64, 64]
    tensor = base64.b64decode(as_json["tensors"][0]["data"])
    assert as_json["transform"]["resized_height"] == 768 and as_json["transform"]["input_size"] == 1024

    status, headers, raw = call(f"{stack.base}/api/v1/images/{image_id}/embedding", headers=RAW)
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    assert raw == tensor and len(raw) == 4 * 256 * 64 * 64
    assert headers["x-samsvc-shape"] == "1,256,64,64" and headers["x-samsvc-dtype"] == "float32"
    assert headers["x-samsvc-checkpoint-sha256"] == as_json["checkpoint_sha256"]
    assert headers["x-samsvc-original-size"] == "90,120" and headers["x-samsvc-image-id"] == image_id

    # Posting the image works the same way, in float16 too.
    status, headers, half = call(
        f"{stack.base}/api/v1/embeddings",
        "POST",
        json.dumps({"image": image, "dtype": "TENSOR_DTYPE_FLOAT16"}).encode(),
        {"Content-Type": "application/json", **RAW},
    )
    assert status == 200 and headers["x-samsvc-dtype"] == "float16" and len(half) == 2 * 256 * 64 * 64
    values = np.frombuffer(half, dtype="<f2").astype(np.float32)
    assert np.allclose(values, np.frombuffer(raw, dtype="<f4"), atol=1e-2)


def test_sessions_and_prompts_by_id_over_rest(stack: Stack) -> None:
    status, session = post_json(f"{stack.base}/api/v1/images", {"image": image_b64(80, 60, seed=62)})
    image_id = session["image_id"]
    status, answer = post_json(
        f"{stack.base}/api/v1/segment/prompts",
        {"image_id": image_id, "prompts": [{"points": [{"x": 40, "y": 30}]}], "mask_format": "MASK_FORMAT_RLE"},
    )
    assert (
        status == 200 and answer["embedding_cache_hit"] and answer["results"][0]["masks"][0]["rle"]["size"] == [60, 80]
    )
    status, answer = post_json(
        f"{stack.base}/api/v1/segment/prompts", {"image_id": image_id, "prompts": [{"points": [{"x": 81, "y": 3}]}]}
    )
    assert status == 400 and answer["details"][1]["field_violations"][0]["field"] == "prompts[0].points[0].x"
    status, _, body = call(f"{stack.base}/api/v1/images/{image_id}", "DELETE")
    assert status == 200 and json.loads(body)["image_id"] == image_id
    for method, path in (("GET", f"/api/v1/images/{image_id}"), ("GET", f"/api/v1/images/{image_id}/embedding")):
        status, _, body = call(f"{stack.base}{path}", method, headers=RAW if path.endswith("embedding") else None)
        assert status == 404 and json.loads(body)["details"][0]["reason"] == "IMAGE_SESSION_EXPIRED"


def test_the_decoder_downloads_as_onnx(stack: Stack) -> None:
    status, headers, data = call(f"{stack.base}/api/v1/models/tiny/decoder.onnx")
    assert status == 200 and headers["content-type"] == "application/octet-stream"
    digest = hashlib.sha256(data).hexdigest()
    assert headers["x-samsvc-onnx-sha256"] == digest and headers["etag"] == f'"{digest}"'
    assert "tiny-decoder-folded-fp32.onnx" in headers["content-disposition"]
    assert headers["x-samsvc-decoder-graph"] == "folded"
    model = onnx.load_from_string(data)
    assert [i.name for i in model.graph.input][:2] == ["image_embeddings", "point_coords"]
    status, _, info = call(f"{stack.base}/api/v1/models/tiny/decoder?quantization=DECODER_QUANTIZATION_INT8")
    described = json.loads(info)
    assert status == 200 and described["quantization"] == "DECODER_QUANTIZATION_INT8"
    status, headers, quantized = call(
        f"{stack.base}/api/v1/models/tiny/decoder.onnx?quantization=DECODER_QUANTIZATION_INT8"
    )
    assert hashlib.sha256(quantized).hexdigest() == described["onnx_sha256"] != digest
    status, headers, reference = call(f"{stack.base}/api/v1/models/tiny/decoder.onnx?graph=DECODER_GRAPH_REFERENCE")
    assert status == 200 and headers["x-samsvc-decoder-graph"] == "reference"
    assert "tiny-decoder-reference-fp32.onnx" in headers["content-disposition"]
    assert [i.name for i in onnx.load_from_string(reference).graph.input] == [i.name for i in model.graph.input]
    assert hashlib.sha256(reference).hexdigest() != digest
    status, _, body = call(f"{stack.base}/api/v1/models/tiny/decoder.onnx?graph=7")
    refused = json.loads(body)  # the gateway's own check, in the API's error shape
    assert status == 400 and refused["message"].startswith("graph: invalid value")
    assert refused["details"][0]["reason"] == "MALFORMED_REQUEST"
    status, _, body = call(f"{stack.base}/api/v1/models/nope/decoder.onnx")
    assert status == 400 and json.loads(body)["details"][0]["reason"] == "UNKNOWN_MODEL"
