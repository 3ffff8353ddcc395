"""CVAT's SAM interactor end to end, the way CVAT runs it, against samsvc behind Envoy:

- the Nuclio function (deploy/cvat/nuclio) called with the body CVAT's lambda manager sends,
  frames above samsvc's limits included;
- CVAT's browser plugin (a port of its worker and of index.tsx's input building and mask
  handling, tests/gateway/cvat_plugin) running samsvc's CVAT decoder (`decoder.onnx`, fetched
  with the CVAT page's curl) in headless Chromium with onnxruntime-web from npm (pinned);
- clicks, negative clicks, a box, box then click, mask chaining through `low_res_masks`, on
  non-square frames; each mask compared with the same decoder run by onnxruntime in Python and
  with samsvc's own SegmentPrompts answer for the same prompt.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest

from samsvc.config import Settings
from samsvc.encoding.masks import decode_png
from samsvc.engine.checkpoints import models_file_entry
from samsvc.engine.sam.disc_checkpoint import build_disc_checkpoint
from samsvc.gateway.launcher import Gateway, start_gateway
from samsvc.server.auth import digest, new_key
from samsvc.v1 import segmentation_service_pb2 as pb
from tests.gateway.chromium import CHROMIUM, chromium
from tests.gateway.conftest import call
from tests.support import ServerThread, encode, scene
from tests.support.starts import starts

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "tests" / "gateway" / "cvat_plugin"
ORT_DIST = PLUGIN / "node_modules" / "onnxruntime-web" / "dist"
pytestmark = pytest.mark.skipif(
    CHROMIUM is None or not ORT_DIST.is_dir(),
    reason="needs chromium and `npm ci` in tests/gateway/cvat_plugin (.ci/run does both)",
)
KEY = new_key()


@dataclass
class Cvat:
    server: ServerThread
    gateway: Gateway
    assets: Path
    static_url: str
    function: Any

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.gateway.rest_port}"

    def lambda_call(self, frame: bytes, **clicks: Any) -> Any:
        """The function called as CVAT's lambda manager calls an interactor."""
        body = {
            "image": base64.b64encode(frame).decode(),
            "pos_points": clicks.get("pos", []),
            "neg_points": clicks.get("neg", []),
            "obj_bbox": clicks.get("box"),
        }
        return self.function.handler(self.function.context, SimpleNamespace(body=body))


def static_server(assets: Path) -> http.server.ThreadingHTTPServer:
    """What the cvat_ui image serves: the plugin's page and worker, onnxruntime-web's files and
    decoder.onnx under /assets/."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        extensions_map: ClassVar[dict[str, str]] = {
            ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
            ".html": "text/html", ".onnx": "application/octet-stream",
        }  # fmt: skip

        def translate_path(self, path: str) -> str:
            name = path.split("?", 1)[0]
            if name.startswith("/assets/"):
                local = assets / name[len("/assets/") :]
                return str(local if local.exists() else ORT_DIST / name[len("/assets/") :])
            return str(PLUGIN / name.lstrip("/"))

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def load_function(base: str, key_file: Path) -> Any:
    spec = importlib.util.spec_from_file_location(
        "samsvc_cvat_function", ROOT / "deploy" / "cvat" / "nuclio" / "main.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    logs: list[str] = []
    logger = SimpleNamespace(warn=logs.append, error=logs.append, info=logs.append)
    module.context = SimpleNamespace(
        user_data=SimpleNamespace(), Response=lambda **kw: SimpleNamespace(**kw), logger=logger, logs=logs
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SAMSVC_URL", base)
        patch.setenv("SAMSVC_API_KEY_FILE", str(key_file))
        module.init_context(module.context)
    return module


@starts("envoy", scope="module")
def cvat(base_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cvat]:
    root = tmp_path_factory.mktemp("cvat")
    checkpoint = root / "disc.pth"
    models = root / "models.toml"
    models.write_text(models_file_entry("disc", checkpoint, build_disc_checkpoint(checkpoint)), encoding="utf-8")
    settings = base_settings.model_copy(
        update={
            "models_file": models,
            "default_model": "disc",
            "api_keys": [f"cvat:{digest(KEY)}"],
            "data_dir": str(root / "data"),
            "decoder_dir": root / "onnx",
            "envoy_admin_port": 0,
        }
    )
    server = ServerThread(settings)
    gateway = start_gateway(settings.gateway_options(), "127.0.0.1", server.running.port)
    base = f"http://127.0.0.1:{gateway.rest_port}"
    # The CVAT page's step: the decoder, with the key, to replace /assets/decoder.onnx of cvat_ui.
    status, _, decoder = call(
        f"{base}/api/v1/models/disc/decoder.onnx?graph=DECODER_GRAPH_CVAT", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert status == 200 and len(decoder) > 1_000_000
    assets = root / "assets"
    assets.mkdir()
    (assets / "decoder.onnx").write_bytes(decoder)
    statics = static_server(assets)
    key_file = root / "api_key"
    key_file.write_text(KEY + "\n")
    function = load_function(base, key_file)
    yield Cvat(server, gateway, assets, f"http://127.0.0.1:{statics.server_address[1]}", function)
    statics.shutdown()
    gateway.stop()
    server.stop()


@starts("browser", scope="module")
def page(cvat: Cvat) -> Iterator[Any]:
    with chromium() as browser:
        opened = browser.new_page()
        errors: list[str] = []
        opened.on("pageerror", lambda error: errors.append(str(error)))
        opened.goto(f"{cvat.static_url}/index.html")
        opened.wait_for_function("() => window.pluginReady === true", timeout=30_000)
        opened.evaluate("async () => window.plugin.init('/assets/decoder.onnx')")
        yield opened
        assert errors == [], errors


def plugin_leave(page: Any, key: str, result: Any, width: int, height: int, **clicks: Any) -> dict[str, Any]:
    args = {"pos_points": clicks.get("pos", []), "neg_points": clicks.get("neg", []), "obj_bbox": clicks.get("box", [])}
    answer: dict[str, Any] = page.evaluate(
        "async ([key, result, args, frame]) => window.plugin.leave(key, result, args, frame)",
        [key, result, args, {"width": width, "height": height}],
    )
    return answer


def on_frame(answer: dict[str, Any], width: int, height: int) -> np.ndarray:
    """The plugin's mask placed on the frame at its bounds, as CVAT draws it."""
    xtl, ytl, xbr, ybr = answer["bounds"]
    mask = np.asarray(answer["mask"], dtype=np.uint8) > 0
    assert mask.shape == (ybr - ytl + 1, xbr - xtl + 1)
    full = np.zeros((height, width), bool)
    full[ytl : ybr + 1, xtl : xbr + 1] = mask
    return full


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


@functools.cache
def python_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def python_decode(cvat: Cvat, blob: str, width: int, height: int, clicks: list[tuple[float, float, int]],
                  low_res: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The same decoder, fed the same way, in onnxruntime for Python: (mask on the frame, low-res)."""
    scale = 1024 / max(width, height)
    feeds = {
        "image_embeddings": np.frombuffer(base64.b64decode(blob), "<f4").reshape(1, 256, 64, 64),
        "point_coords": np.array([[(x * scale, y * scale) for x, y, _ in clicks]], np.float32),
        "point_labels": np.array([[label for *_, label in clicks]], np.float32),
        "mask_input": low_res if low_res is not None else np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.array([0.0 if low_res is None else 1.0], np.float32),
        "orig_im_size": np.array([height, width], np.float32),
    }
    masks, _, low, xtl, ytl, xbr, ybr = python_session(cvat.assets / "decoder.onnx").run(None, feeds)
    full = np.zeros((height, width), bool)
    full[int(ytl[0]) : int(ybr[0]) + 1, int(xtl[0]) : int(xbr[0]) + 1] = masks[0, 0] > 0
    return full, low


def segment_prompts(cvat: Cvat, frame: bytes, prompt: pb.Prompt) -> np.ndarray:
    """samsvc's own answer: its best of three masks."""
    request = pb.SegmentPromptsRequest(image=frame, prompts=[prompt], multimask_output=True)
    answer = cvat.server.stub.SegmentPrompts(request, metadata=[("x-api-key", KEY)])
    return decode_png(max(answer.results[0].masks, key=lambda m: m.predicted_iou).segmentation) > 0


@pytest.mark.parametrize(("width", "height"), [(320, 200), (150, 260)])
def test_clicks_negative_clicks_a_box_and_chaining_decode_in_the_browser(
    cvat: Cvat, page: Any, width: int, height: int
) -> None:
    frame = encode(scene(width, height, seed=width))
    result = cvat.lambda_call(frame, pos=[[width * 0.3, height * 0.4]])
    assert result.status_code == 200, result.body
    blob = json.loads(result.body)["blob"]
    assert len(base64.b64decode(blob)) == 4 * 256 * 64 * 64
    key = f"task_{width}"
    px, py = width * 0.3, height * 0.4

    # A click: the embedding comes with the call; the mask from the plugin's decoder.
    first = plugin_leave(page, key, json.loads(result.body), width, height, pos=[[px, py]])
    shown = on_frame(first, width, height)
    expected, low_res = python_decode(cvat, blob, width, height, [(px, py, 1)])
    assert shown.any() and iou(shown, expected) > 0.99
    assert iou(shown, segment_prompts(cvat, frame, pb.Prompt(points=[pb.PointPrompt(x=px, y=py)]))) > 0.9
    assert not first["chained"]

    # Another click extends the last: the previous low-resolution mask goes with it.
    nx, ny = width * 0.8, height * 0.2
    second = plugin_leave(page, key, None, width, height, pos=[[px, py]], neg=[[nx, ny]])
    assert second["chained"]
    expected, _ = python_decode(cvat, blob, width, height, [(px, py, 1), (nx, ny, 0)], low_res)
    assert iou(on_frame(second, width, height), expected) > 0.99

    # A box, then a click inside it (labels 2 and 3 first, as the plugin orders them).
    box = [[width * 0.1, height * 0.15], [width * 0.6, height * 0.7]]
    boxed = plugin_leave(page, key, None, width, height, box=box)
    corners = [(box[0][0], box[0][1], 2), (box[1][0], box[1][1], 3)]
    expected, low_res = python_decode(cvat, blob, width, height, corners)
    shown = on_frame(boxed, width, height)
    assert iou(shown, expected) > 0.99
    samsvc_box = pb.Prompt(box=pb.BoxPrompt(x0=box[0][0], y0=box[0][1], x1=box[1][0], y1=box[1][1]))
    assert iou(shown, segment_prompts(cvat, frame, samsvc_box)) > 0.9
    clicked = plugin_leave(page, key, None, width, height, box=box, pos=[[width * 0.3, height * 0.3]])
    assert clicked["chained"]
    expected, _ = python_decode(cvat, blob, width, height, [*corners, (width * 0.3, height * 0.3, 1)], low_res)
    assert iou(on_frame(clicked, width, height), expected) > 0.99


def test_an_empty_mask_draws_nothing(cvat: Cvat, page: Any) -> None:
    width, height = 240, 180
    result = json.loads(cvat.lambda_call(encode(scene(width, height, seed=9))).body)
    answer = plugin_leave(page, "empty", result, width, height, pos=[[-4000, -4000]])
    assert answer["bounds"] == [0, 0, 0, 0] and answer["mask"] == [[0]]


def test_a_frame_above_samsvcs_limits_is_scaled_down_and_still_lines_up(cvat: Cvat, page: Any) -> None:
    """CVAT's own function takes any frame; samsvc refuses a side over MAX_IMAGE_SIDE (1024 in
    these tests). The function scales such a frame down (aspect ratio kept), so the plugin,
    which scales clicks by the frame's own size, still lands them on the object."""
    width, height = 1800, 1200
    frame = encode(scene(width, height, seed=3), "JPEG", quality=90)
    refused, _, _ = call(
        f"{cvat.base}/cvat/sam", "POST", json.dumps({"image": base64.b64encode(frame).decode()}).encode(),
        {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )  # fmt: skip
    assert refused == 400, "samsvc itself refuses the frame"
    result = cvat.lambda_call(frame, pos=[[900, 600]])
    assert result.status_code == 200, result.body
    answer = plugin_leave(page, "large", json.loads(result.body), width, height, pos=[[900, 600]])
    shown = on_frame(answer, width, height)
    assert shown[600, 900], "the disc is drawn around the click"
    xtl, ytl, xbr, ybr = answer["bounds"]
    assert abs((xtl + xbr) / 2 - 900) < 30 and abs((ytl + ybr) / 2 - 600) < 30


def test_the_function_says_what_failed(cvat: Cvat, tmp_path: Path) -> None:
    frame = encode(scene(64, 48))
    unreachable = load_function("http://127.0.0.1:9", tmp_path / "none")
    answer = unreachable.handler(unreachable.context, SimpleNamespace(body={"image": base64.b64encode(frame).decode()}))
    assert answer.status_code == 502 and "unreachable" in answer.body
    assert any("unreachable" in line for line in unreachable.context.logs)
    wrong = tmp_path / "wrong"
    wrong.write_text("sk_wrong")
    refused = load_function(cvat.base, wrong)
    answer = refused.handler(refused.context, SimpleNamespace(body={"image": base64.b64encode(frame).decode()}))
    assert answer.status_code == 401
    answer = cvat.function.handler(cvat.function.context, SimpleNamespace(body={"image": "bm90IGFuIGltYWdl"}))
    assert answer.status_code == 400


def test_cvat_reads_the_functions_metadata_as_a_box_first_interactor() -> None:
    """What CVAT's lambda manager reads of function.yaml (LambdaFunction in
    cvat/apps/lambda_manager/views.py): an interactor taking a box first or clicks."""
    import yaml

    spec = yaml.safe_load((ROOT / "deploy" / "cvat" / "nuclio" / "function.yaml").read_text())
    annotations = spec["metadata"]["annotations"]
    assert spec["metadata"]["name"] == "pth-facebookresearch-sam-vit-h"
    assert annotations["type"] == "interactor"
    assert int(annotations.get("min_pos_points", 1)) == 0
    assert int(annotations.get("min_neg_points", -1)) == 0
    assert bool(annotations.get("startswith_box_optional", False)) is True
    assert json.loads(annotations.get("spec") or "[]") == []


def test_samsvcs_other_decoders_fail_in_cvats_plugin(cvat: Cvat, page: Any) -> None:
    """What CVAT users met before: the folded (or segment-anything's) decoder has no xtl..ybr,
    and the plugin fails at the first click."""
    status, _, folded = call(f"{cvat.base}/api/v1/models/disc/decoder.onnx", headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200
    (cvat.assets / "folded.onnx").write_bytes(folded)
    other = page.context.browser.new_page()
    other.goto(f"{cvat.static_url}/index.html")
    other.wait_for_function("() => window.pluginReady === true", timeout=30_000)
    other.evaluate("async () => window.plugin.init('/assets/folded.onnx')")
    width, height = 120, 90
    result = json.loads(cvat.lambda_call(encode(scene(width, height))).body)
    with pytest.raises(Exception, match="getData"):
        plugin_leave(other, "folded", result, width, height, pos=[[60, 45]])
    other.close()
