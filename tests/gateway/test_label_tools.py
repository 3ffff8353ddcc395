"""Label Studio's ML backend protocol and CVAT's SAM function answered by samsvc through Envoy,
called as those tools call them: Label Studio with basic authentication (the password is an API
key) and its own request shapes, task images read from a Label Studio file server on loopback
with its token; CVAT through the Nuclio function in deploy/cvat."""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from samsvc.encoding.brush_rle import decode_brush_rle
from samsvc.encoding.masks import decode_png
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.gateway.conftest import HEIGHT, IMAGE, KEY, TOKEN, WIDTH, Tools
from tests.gateway.test_rest import call

BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Banana" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Banana" showInline="true"/></KeyPointLabels>
  <RectangleLabels name="tag3" toName="image" smart="true"><Label value="Banana" showInline="true"/></RectangleLabels>
</View>"""
POLYGON_CONFIG = BRUSH_CONFIG.replace("BrushLabels", "PolygonLabels")


def keypoint(x: float, y: float, positive: bool = True) -> dict[str, Any]:
    """A smart keypoint as Label Studio puts it in `params.context.result`."""
    return {
        "original_width": WIDTH,
        "original_height": HEIGHT,
        "image_rotation": 0,
        "value": {"x": 100 * x / WIDTH, "y": 100 * y / HEIGHT, "width": 0.3, "keypointlabels": ["Banana"]},
        "is_positive": positive,
        "id": "fBWv1t0S2L",
        "from_name": "tag2",
        "to_name": "image",
        "type": "keypointlabels",
        "origin": "manual",
    }


def predict_request(
    results: list[dict[str, Any]], config: str = BRUSH_CONFIG, image: str = "/data/upload/1/photo.png"
) -> dict[str, Any]:
    """The body Label Studio posts to /predict (label_studio_ml's documented request)."""
    return {
        "tasks": [{"id": 7, "data": {"image": image}, "annotations": [], "predictions": []}],
        "model_version": "",
        "project": "3.1733130000",
        "label_config": config,
        "params": {"login": None, "password": None, "context": {"result": results}},
    }


def session_mask(tools: Tools, points: list[tuple[float, float, bool]]) -> np.ndarray:
    """What SegmentPrompts gives for the same clicks (its best of three masks)."""
    metadata = [("x-api-key", KEY)]
    request = ipb.CreateImageSessionRequest(image=IMAGE)
    image_id = tools.server.stub.CreateImageSession(request, metadata=metadata).image_id
    answer = tools.server.stub.SegmentPrompts(
        pb.SegmentPromptsRequest(
            image_id=image_id,
            prompts=[pb.Prompt(points=[pb.PointPrompt(x=x, y=y, background=not p) for x, y, p in points])],
            multimask_output=True,
        ),
        metadata=metadata,
    )
    return decode_png(max(answer.results[0].masks, key=lambda m: m.predicted_iou).segmentation)


def test_health_and_setup(tools: Tools) -> None:
    status, _, body = call(tools.base + "/label-studio/health", headers={"Authorization": "Bearer " + KEY})
    assert status == 200 and json.loads(body)["status"] == "UP"
    setup = {"project": "3.1733130000", "schema": BRUSH_CONFIG, "extra_params": ""}
    status, answer = tools.post("/label-studio/setup", setup)
    assert status == 200 and answer["model_version"].startswith("samsvc-")
    status, answer = tools.post("/label-studio/setup", {"project": "3.1", "schema": BRUSH_CONFIG}, auth="wrong")
    assert status == 401


def test_a_smart_keypoint_becomes_a_brush_mask(tools: Tools) -> None:
    tools.files.requests.clear()
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(60, 45), keypoint(130, 20, False)]))
    assert status == 200
    (prediction,) = answer["results"]
    (result,) = prediction["result"]
    assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
    assert (result["original_width"], result["original_height"]) == (WIDTH, HEIGHT)
    assert result["value"]["format"] == "rle" and result["value"]["brushlabels"] == ["Banana"]
    mask = decode_brush_rle(result["value"]["rle"], HEIGHT, WIDTH)
    assert np.array_equal(mask, session_mask(tools, [(60, 45, True), (130, 20, False)]))
    # The image came from Label Studio, with its token.
    assert tools.files.requests == [("/data/upload/1/photo.png", f"Token {TOKEN}")]


def test_a_rectangle_and_polygons(tools: Tools) -> None:
    box = {
        "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0,
        "value": {"x": 10.0, "y": 20.0, "width": 50.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["Banana"]},
        "from_name": "tag3", "to_name": "image", "type": "rectanglelabels", "origin": "manual",
    }  # fmt: skip
    status, answer = tools.post("/label-studio/predict", predict_request([box], POLYGON_CONFIG))
    assert status == 200
    result = answer["results"][0]["result"][0]
    assert result["type"] == "polygonlabels" and result["value"]["closed"]
    points = result["value"]["points"]
    assert len(points) >= 3 and all(0 <= x <= 100 and 0 <= y <= 100 for x, y in points)


def test_no_interaction_yet_and_bad_requests(tools: Tools) -> None:
    # No clicks: a preannotation per task (this random-weight model's automatic masks are none).
    status, answer = tools.post("/label-studio/predict", predict_request([]))
    assert status == 200 and [prediction["result"] for prediction in answer["results"]] == [[]]
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(5, 5)], "<View><Text/></View>"))
    assert status == 400 and "BrushLabels" in answer["message"]
    evil = '<!DOCTYPE x [<!ENTITY a "aaaa">]><View>&a;</View>'
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(5, 5)], evil))
    assert status == 400 and "DOCTYPE" in answer["message"]
    # A task image elsewhere on this side of the network is not fetched (server-side request forgery).
    status, answer = tools.post(
        "/label-studio/predict", predict_request([keypoint(5, 5)], image="http://127.0.0.1:9/secret.png")
    )
    assert status == 400 and answer["details"][0]["reason"] == "IMAGE_URL_FORBIDDEN"
    assert "image_url" in answer["message"]
    # A data: URI needs no fetch at all.
    inline = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(60, 45)], image=inline))
    assert status == 200 and answer["results"][0]["result"][0]["type"] == "brushlabels"


def test_cvat_gets_its_embedding_answer_through_the_nuclio_function(tools: Tools, tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "cvat" / "nuclio" / "main.py"
    spec = importlib.util.spec_from_file_location("cvat_samsvc_function", path)
    assert spec is not None and spec.loader is not None
    function = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(function)
    warnings: list[str] = []
    logger = SimpleNamespace(warn=warnings.append, error=warnings.append)
    context = SimpleNamespace(user_data=SimpleNamespace(), Response=lambda **kw: SimpleNamespace(**kw), logger=logger)
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n")  # a mounted secret, never the command line
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMSVC_URL", tools.base)
        patch.setenv("SAMSVC_API_KEY", KEY)  # ignored: a key in the environment shows in `docker inspect`
        patch.setenv("SAMSVC_API_KEY_FILE", str(tmp_path / "absent"))
        function.init_context(context)
        assert context.user_data.key == "" and warnings
        patch.setenv("SAMSVC_API_KEY_FILE", str(key_file))
        function.init_context(context)
    event = SimpleNamespace(body={"image": base64.b64encode(IMAGE).decode()})  # what CVAT's lambda manager sends
    response = function.handler(context, event)
    assert response.status_code == 200
    blob = base64.b64decode(json.loads(response.body)["blob"])
    request = ipb.GetImageEmbeddingRequest(image=IMAGE)
    expected = tools.server.stub.GetImageEmbedding(request, metadata=[("x-api-key", KEY)])
    assert blob == expected.tensors[0].data and len(blob) == 4 * 256 * 64 * 64
    context.user_data.key = "sk_wrong"
    assert function.handler(context, event).status_code == 401
