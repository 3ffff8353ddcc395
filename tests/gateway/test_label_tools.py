"""Label Studio's ML backend protocol and CVAT's SAM function answered by samsvc through Envoy,
called as those tools call them: Label Studio with basic authentication (the password is an API
key) and its own request shapes, task images read from a Label Studio file server on loopback
with its token; CVAT through the Nuclio function in deploy/cvat."""

from __future__ import annotations

import base64
import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from samsvc.config import Settings
from samsvc.encoding.brush_rle import decode_brush_rle
from samsvc.encoding.masks import decode_png
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.auth import digest, new_key
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.gateway.test_rest import call
from tests.support import ServerThread, encode, scene

TOKEN = "ls-access-token"
KEY = new_key()
WIDTH, HEIGHT = 160, 120
IMAGE = encode(scene(WIDTH, HEIGHT, seed=71))
BRUSH_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <BrushLabels name="tag" toName="image"><Label value="Banana" background="#FF0000"/></BrushLabels>
  <KeyPointLabels name="tag2" toName="image" smart="true"><Label value="Banana" showInline="true"/></KeyPointLabels>
  <RectangleLabels name="tag3" toName="image" smart="true"><Label value="Banana" showInline="true"/></RectangleLabels>
</View>"""
POLYGON_CONFIG = BRUSH_CONFIG.replace("BrushLabels", "PolygonLabels")


class FileServer:
    """What Label Studio serves task images from: /data/upload/... with its token required."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        seen = self.authorizations

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.headers.get("Authorization", ""))
                ok = self.path == "/data/upload/1/photo.png" and self.headers.get("Authorization") == f"Token {TOKEN}"
                body = IMAGE if ok else b"no"
                self.send_response(200 if ok else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Tools:
    server: ServerThread
    gateway: Gateway
    files: FileServer

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.rest_port}"

    def post(self, path: str, body: dict[str, Any], auth: str | None = None) -> tuple[int, Any]:
        basic = base64.b64encode(f"labelstudio:{KEY if auth is None else auth}".encode()).decode()
        status, _, data = call(
            self.base + path,
            "POST",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Authorization": f"Basic {basic}"},
        )
        return status, json.loads(data) if data else None


@pytest.fixture(scope="module")
def tools(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tools]:
    files = FileServer()
    settings = base_settings.model_copy(
        update={
            "api_keys": [f"labelstudio:{digest(KEY)}"],
            "label_studio_url": files.url,
            "label_studio_api_key": TOKEN,
            "data_dir": str(tmp_path_factory.mktemp("data")),
            "envoy_admin_port": 0,
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings, "127.0.0.1", server.running.port)
    yield Tools(server, gateway, files)
    gateway.stop()
    server.stop()
    files.close()


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
    tools.files.authorizations.clear()
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(60, 45), keypoint(130, 20, False)]))
    assert status == 200
    (prediction,) = answer["results"]
    (result,) = prediction["result"]
    assert (result["type"], result["from_name"], result["to_name"]) == ("brushlabels", "tag", "image")
    assert (result["original_width"], result["original_height"]) == (WIDTH, HEIGHT)
    assert result["value"]["format"] == "rle" and result["value"]["brushlabels"] == ["Banana"]
    mask = decode_brush_rle(result["value"]["rle"], HEIGHT, WIDTH)
    assert np.array_equal(mask, session_mask(tools, [(60, 45, True), (130, 20, False)]))
    assert tools.files.authorizations == [f"Token {TOKEN}"]  # the image came from Label Studio, with its token


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
    assert tools.post("/label-studio/predict", predict_request([])) == (200, {"results": []})
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
    assert "task.data" in answer["message"]
    # A data: URI needs no fetch at all.
    inline = "data:image/png;base64," + base64.b64encode(IMAGE).decode()
    status, answer = tools.post("/label-studio/predict", predict_request([keypoint(60, 45)], image=inline))
    assert status == 200 and answer["results"][0]["result"][0]["type"] == "brushlabels"


def test_cvat_gets_its_embedding_answer_through_the_nuclio_function(tools: Tools) -> None:
    path = Path(__file__).resolve().parents[2] / "deploy" / "cvat" / "nuclio" / "main.py"
    spec = importlib.util.spec_from_file_location("cvat_samsvc_function", path)
    assert spec is not None and spec.loader is not None
    function = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(function)
    context = SimpleNamespace(user_data=SimpleNamespace(), Response=lambda **kw: SimpleNamespace(**kw))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMSVC_URL", tools.base)
        patch.setenv("SAMSVC_API_KEY", KEY)
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
