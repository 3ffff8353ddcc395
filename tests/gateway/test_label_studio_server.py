"""samsvc as the ML backend of a real Label Studio 1.23 server (PyPI `label-studio`, its own
virtual environment, tests/gateway/label_studio), set up as docs/integrations/label-studio.md says: the backend
connected with basic authentication (the password a samsvc API key), interactive clicks and
boxes through Label Studio's own `interactive-annotating` endpoint, images uploaded to Label
Studio and read back with its legacy token and with a personal access token, brush and polygon
projects, prelabelling with "Retrieve predictions", and every failure showing its reason where
Label Studio shows it."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from samsvc.config import Settings
from samsvc.encoding.brush_rle import decode_brush_rle
from samsvc.encoding.masks import decode_png
from samsvc.engine.checkpoints import models_file_entry
from samsvc.engine.sam.disc_checkpoint import build_disc_checkpoint
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.auth import digest, new_key
from samsvc.v1 import interactive_pb2 as ipb
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.gateway.conftest import call
from tests.gateway.label_studio.server import LEGACY_TOKEN, LabelStudio
from tests.support import ServerThread, encode, scene
from tests.support.starts import starts

KEY = new_key()
WIDTH, HEIGHT = 200, 150
BRUSH = """<View>
  <Image name="image" value="$image"/>
  <BrushLabels name="tag" toName="image"><Label value="Thing"/></BrushLabels>
  <KeyPointLabels name="point" toName="image" smart="true"><Label value="Thing"/></KeyPointLabels>
  <RectangleLabels name="box" toName="image" smart="true"><Label value="Thing"/></RectangleLabels>
</View>"""
POLYGON = BRUSH.replace("BrushLabels", "PolygonLabels")


@dataclass
class Samsvc:
    server: ServerThread
    gateway: Gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.rest_port}"

    def stop(self) -> None:
        self.gateway.stop()
        self.server.stop()


@starts("processes", scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudio]:
    running = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    yield running
    running.stop()


@starts("envoy", scope="module")
def start_samsvc(
    base_settings: Settings, studio: LabelStudio, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Samsvc]]:
    """samsvc with Label Studio's address and the given token (the disc model: real masks)."""
    root = tmp_path_factory.mktemp("samsvc")
    checkpoint = root / "disc.pth"
    models = root / "models.toml"
    models.write_text(models_file_entry("disc", checkpoint, build_disc_checkpoint(checkpoint)), encoding="utf-8")
    started: list[Samsvc] = []

    def start(token: str) -> Samsvc:
        settings = base_settings.model_copy(
            update={
                "models_file": models, "default_model": "disc", "api_keys": [f"labelstudio:{digest(KEY)}"],
                "data_dir": str(root / f"data{len(started)}"), "envoy_admin_port": 0,
                "label_studio_url": studio.url, "label_studio_api_key": SecretStr(token),
                "label_studio_prelabel_max_regions": 5, "label_studio_prelabel_points_per_side": 4,
            }
        )  # fmt: skip
        server = ServerThread(settings)
        started.append(Samsvc(server, start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)))
        return started[-1]

    yield start
    for each in started:
        each.stop()


@pytest.fixture(scope="module")
def samsvc(start_samsvc: Callable[[str], Samsvc]) -> Samsvc:
    return start_samsvc(LEGACY_TOKEN)


def project(studio: LabelStudio, samsvc: Samsvc, config: str = BRUSH, path: str = "/label-studio",
            password: str = KEY) -> tuple[int, int, int, bytes]:  # fmt: skip
    """A project with one uploaded image and samsvc connected: (project, task, backend, image)."""
    created = studio.api(
        "POST", "/api/projects", json={"title": f"samsvc {time.monotonic_ns()}", "label_config": config}
    )
    image = encode(scene(WIDTH, HEIGHT, seed=created["id"]))
    studio.api("POST", f"/api/projects/{created['id']}/import", files={"file": ("photo.png", image, "image/png")})
    task = studio.api("GET", f"/api/tasks?project={created['id']}")["tasks"][0]
    assert task["data"]["image"].startswith("/data/upload/")
    backend = studio.api(
        "POST", "/api/ml",
        json={"url": samsvc.url + path, "project": created["id"], "title": "samsvc", "is_interactive": True,
              "auth_method": "BASIC_AUTH", "basic_auth_user": "labelstudio", "basic_auth_pass": password},
    )  # fmt: skip
    return created["id"], task["id"], backend["id"], image


def keypoint(x: float, y: float, positive: bool = True) -> dict[str, Any]:
    return {
        "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "id": f"k{x}{y}",
        "value": {"x": 100 * x / WIDTH, "y": 100 * y / HEIGHT, "width": 0.5, "keypointlabels": ["Thing"]},
        "is_positive": positive, "from_name": "point", "to_name": "image", "type": "keypointlabels", "origin": "manual",
    }  # fmt: skip


def rectangle(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    return {
        "original_width": WIDTH, "original_height": HEIGHT, "image_rotation": 0, "id": "r1",
        "value": {"x": 100 * x0 / WIDTH, "y": 100 * y0 / HEIGHT, "width": 100 * (x1 - x0) / WIDTH,
                  "height": 100 * (y1 - y0) / HEIGHT, "rotation": 0, "rectanglelabels": ["Thing"]},
        "from_name": "box", "to_name": "image", "type": "rectanglelabels", "origin": "manual",
    }  # fmt: skip


def interact(studio: LabelStudio, backend: int, task: int, results: list[dict[str, Any]]) -> dict[str, Any]:
    """What Label Studio's frontend calls on each smart click."""
    answer: dict[str, Any] = studio.api(
        "POST", f"/api/ml/{backend}/interactive-annotating", json={"task": task, "context": {"result": results}}
    )
    return answer


def best_mask(samsvc: Samsvc, image: bytes, prompt: pb.Prompt) -> np.ndarray:
    """SegmentPrompts' best of three masks for the same clicks."""
    metadata = [("x-api-key", KEY)]
    session = samsvc.server.stub.CreateImageSession(ipb.CreateImageSessionRequest(image=image), metadata=metadata)
    request = pb.SegmentPromptsRequest(image_id=session.image_id, prompts=[prompt], multimask_output=True)
    answer = samsvc.server.stub.SegmentPrompts(request, metadata=metadata)
    return decode_png(max(answer.results[0].masks, key=lambda m: m.predicted_iou).segmentation) > 0


def test_clicks_and_boxes_through_label_studio(studio: LabelStudio, samsvc: Samsvc) -> None:
    _, task, backend, image = project(studio, samsvc)
    assert studio.api("GET", f"/api/ml/{backend}")["readable_state"] == "Connected"
    cases = [
        ([keypoint(60, 50)], pb.Prompt(points=[pb.PointPrompt(x=60, y=50)])),
        ([keypoint(60, 50), keypoint(150, 100, positive=False)],
         pb.Prompt(points=[pb.PointPrompt(x=60, y=50), pb.PointPrompt(x=150, y=100, background=True)])),
        ([rectangle(20, 20, 120, 110)], pb.Prompt(box=pb.BoxPrompt(x0=20, y0=20, x1=120, y1=110))),
        ([keypoint(40, 40), keypoint(90, 60), rectangle(20, 20, 120, 110)],
         pb.Prompt(points=[pb.PointPrompt(x=40, y=40), pb.PointPrompt(x=90, y=60)],
                   box=pb.BoxPrompt(x0=20, y0=20, x1=120, y1=110))),
    ]  # fmt: skip
    for results, prompt in cases:
        answer = interact(studio, backend, task, results)
        assert "errors" not in answer, answer
        (region,) = answer["data"]["result"]
        assert region["type"] == "brushlabels" and region["value"]["brushlabels"] == ["Thing"]
        mask = decode_brush_rle(region["value"]["rle"], HEIGHT, WIDTH)
        expected = best_mask(samsvc, image, prompt)
        assert mask.any() and np.array_equal(mask, expected), results

    _, task, backend, _ = project(studio, samsvc, POLYGON)
    answer = interact(studio, backend, task, [keypoint(60, 50)])
    (region,) = answer["data"]["result"]
    assert region["type"] == "polygonlabels" and len(region["value"]["points"]) >= 3


def test_an_image_read_with_a_personal_access_token(studio: LabelStudio, start_samsvc: Callable[[str], Samsvc]) -> None:
    """Label Studio 1.23's Account page makes personal access tokens (JWT refresh tokens): sent as
    `Token <key>` they got 401 from /data/upload. samsvc trades them for access tokens."""
    with_pat = start_samsvc(studio.personal_access_token())
    _, task, backend, _ = project(studio, with_pat)
    answer = interact(studio, backend, task, [keypoint(100, 70)])
    assert "errors" not in answer, answer
    assert decode_brush_rle(answer["data"]["result"][0]["value"]["rle"], HEIGHT, WIDTH).any()


def test_retrieve_predictions_prelabels_the_tasks(studio: LabelStudio, samsvc: Samsvc) -> None:
    """ "Retrieve predictions" used to get `{"results": []}` (Label Studio: "ML backend returns an
    incorrect response"). Each task now gets automatic masks with the project's label."""
    project_id, task, _, _ = project(studio, samsvc)
    studio.api(
        "POST", f"/api/dm/actions?id=retrieve_tasks_predictions&project={project_id}",
        json={"selectedItems": {"all": True, "excluded": []}, "project": project_id},
    )  # fmt: skip
    predictions = studio.api("GET", f"/api/predictions?task={task}")
    assert len(predictions) == 1
    regions = predictions[0]["result"]
    assert 1 <= len(regions) <= 5 and all(r["value"]["brushlabels"] == ["Thing"] for r in regions)
    assert predictions[0]["model_version"].startswith("samsvc-")


def test_failures_show_their_reason_in_label_studio(
    studio: LabelStudio, samsvc: Samsvc, start_samsvc: Callable[[str], Samsvc]
) -> None:
    """Label Studio shows a failed call's status line only: it read "400 Client Error: Bad Request"
    (or 503 for an image Label Studio would not give), and an unknown model connected as
    "Connected". Now the status line carries samsvc's reason, and source failures their own status."""
    # An unknown model, or a wrong key: Label Studio refuses to add the backend, saying why.
    created = studio.api("POST", "/api/projects", json={"title": "refusals", "label_config": BRUSH})
    for path, password, expected in [
        ("/label-studio/m/nonesuch", KEY, "400 Client Error: model: samsvc serves no model 'nonesuch'"),
        ("/label-studio", "sk_wrong", "authentication parameters were either not provided or are incorrect"),
    ]:
        refused = studio.session.post(
            f"{studio.url}/api/ml",
            json={"url": samsvc.url + path, "project": created["id"], "title": "samsvc", "is_interactive": True,
                  "auth_method": "BASIC_AUTH", "basic_auth_user": "labelstudio", "basic_auth_pass": password},
            timeout=60,
        )  # fmt: skip
        assert refused.status_code == 400 and expected in refused.text, refused.text
    # Label Studio refuses samsvc's token: the annotator reads who refused, with its status.
    wrong_token = start_samsvc("not-a-label-studio-token")
    _, task, backend, _ = project(studio, wrong_token)
    answer = interact(studio, backend, task, [keypoint(60, 50)])
    (error,) = answer["errors"]
    assert error.startswith("401") and "answered HTTP 401" in error, error
    # A task image Label Studio fails to serve (1.23 answers a missing upload with 500): 502,
    # naming the source and its status, not 503 ("samsvc is down").
    _, task, backend, _ = project(studio, samsvc)
    studio.api("PATCH", f"/api/tasks/{task}", json={"data": {"image": "/data/upload/1/no-such-file.png"}})
    (error,) = interact(studio, backend, task, [keypoint(60, 50)])["errors"]
    assert error.startswith("502") and "127.0.0.1 answered HTTP 500" in error, error


def test_label_studios_webhook_is_accepted_unread(studio: LabelStudio, samsvc: Samsvc) -> None:
    """Label Studio makes a webhook to the backend's /webhook and posts every event there with no
    credentials: each was a 401 and a warning in samsvc's log. Envoy now answers it itself."""
    project_id, _, _, _ = project(studio, samsvc)
    hooks = studio.api("GET", f"/api/webhooks?project={project_id}")
    assert any(hook["url"] == samsvc.url + "/label-studio/webhook" for hook in hooks)
    status, _, body = call(samsvc.url + "/label-studio/webhook", "POST", b'{"action": "ANNOTATION_CREATED"}',
                           {"Content-Type": "application/json"})  # fmt: skip
    assert status == 200 and body == b'{"status":"ok"}'
    image = io.BytesIO(encode(scene(8, 8))).getvalue()
    status, _, _ = call(samsvc.url + "/label-studio/m/disc/webhook", "POST", image, {"Content-Type": "image/png"})
    assert status == 200


@pytest.mark.processes
def test_label_studio_refuses_samsvc_on_loopback_without_the_readme_settings(tmp_path: Path, samsvc: Samsvc) -> None:
    """Why the Label Studio page gives ML_BLOCK_LOCAL_IP=false: with Label Studio's defaults a backend on a
    loopback or private address is refused when it is added."""
    strict = LabelStudio(tmp_path, ML_BLOCK_LOCAL_IP="true", SSRF_PROTECTION_ENABLED="true")
    try:
        created = strict.api("POST", "/api/projects", json={"title": "strict", "label_config": BRUSH})
        answer = strict.session.post(
            f"{strict.url}/api/ml",
            json={"url": samsvc.url + "/label-studio", "project": created["id"], "title": "samsvc"},
            timeout=60,
        )
        assert answer.status_code in {400, 403}, answer.text
    finally:
        strict.stop()
