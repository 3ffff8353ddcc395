"""Label Studio's ML backend protocol, served by samsvc for interactive (smart) labeling.

Point a Label Studio project's model at `http://samsvc:8000/label-studio` (or
`/label-studio/m/<model>` for another model than the default), with basic authentication whose
password is a samsvc API key. Label Studio then calls:
- `GET /health` (and `/`): `{"status": "UP"}`;
- `POST /setup` with the project's label config: the model version;
- `POST /predict` with the task and, once the annotator clicks, `params.context.result`: the
  keypoints (`keypointlabels`, `is_positive`) and rectangles (`rectanglelabels`) placed so far,
  in percent of `original_width` x `original_height`.

A prediction opens an image session for the task's image (its embedding is computed once, then
reused from the embedding cache by every later click), asks SegmentPrompts for three masks of
the clicks and keeps the best, and answers it for the project's BrushLabels tag (brush RLE) or
PolygonLabels tag (its outline in percent). Everything goes through the public gRPC API with
the caller's credentials; this module only translates.

Task images are never fetched here: a relative path such as `/data/upload/...` becomes an
address on `LABEL_STUDIO_URL`, and that or a task's http(s) address goes to CreateImageSession
as `image_url`, so the server fetches it only after it has authenticated the caller, charged
its rate limits and allowed its model, and lends Label Studio's token only to Label Studio's
media paths (samsvc.validation.image_url). A `data:` URI is decoded and sent as the image.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from xml.etree.ElementTree import ParseError

import numpy as np
from defusedxml import DefusedXmlException, ElementTree
from PIL import Image

from samsvc import __version__
from samsvc.encoding.brush_rle import encode_brush_rle
from samsvc.errors import InvalidArgument
from samsvc.v1 import interactive_pb2, mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1.segmentation_service_pb2_grpc import SegmentationServiceStub

PREFIX = "/label-studio"
#: `/label-studio[/m/<model>]/<endpoint>`
_PATH = re.compile(r"^/label-studio(?:/m/(?P<model>[A-Za-z0-9_.-]{1,64}))?(?P<endpoint>/[a-z_]*)?/?$")
#: Output tags, in order of preference, and the result type each answers with.
OUTPUT_TAGS = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels"}


def route(path: str) -> tuple[str, str] | None:
    """(model or "", endpoint) of a Label Studio path, or None."""
    match = _PATH.match(path)
    if match is None:
        return None
    return match.group("model") or "", (match.group("endpoint") or "/").rstrip("/") or "/"


def _bad(field: str, description: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, description, reason="INVALID_LABEL_STUDIO_REQUEST")


@dataclass(frozen=True)
class LabelConfig:
    """What a project's label config says samsvc answers to: its image (the task data key) and
    the output tag (BrushLabels or PolygonLabels) with the image it labels."""

    from_name: str
    to_name: str
    result_type: str
    data_key: str

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        if not xml:
            raise _bad("label_config", "is empty")
        try:
            root = ElementTree.fromstring(xml, forbid_dtd=True)
        except DefusedXmlException:
            raise _bad("label_config", "must not declare a DOCTYPE or entities") from None
        except ParseError as exc:
            raise _bad("label_config", f"is not XML ({exc})") from None
        images = {tag.get("name", ""): tag.get("value", "") for tag in root.iter("Image")}
        for tag_name, result_type in OUTPUT_TAGS.items():
            for tag in root.iter(tag_name):
                to_name = tag.get("toName", "")
                value = images.get(to_name, "")
                if value.startswith("$"):
                    return cls(tag.get("name", ""), to_name, result_type, value[1:])
        raise _bad("label_config", 'needs a BrushLabels or PolygonLabels tag on an Image with value="$..."')


@dataclass(frozen=True)
class Clicks:
    """The annotator's context in pixels: points (x, y, positive) and at most one box."""

    points: list[tuple[float, float, bool]]
    box: tuple[float, float, float, float] | None
    label: str
    width: int
    height: int


def clicks_from_context(context: dict[str, Any]) -> Clicks | None:
    """The keypoints and rectangle of `params.context.result` in pixels; None without any."""
    results = context.get("result") or []
    if not isinstance(results, list) or not results:
        return None
    points: list[tuple[float, float, bool]] = []
    box = None
    label = ""
    width = height = 0
    for i, item in enumerate(results):
        where = f"context.result[{i}]"
        try:
            if not isinstance(item, dict) or not isinstance(item["value"], dict):
                raise TypeError("not an object with a value object")
            width, height = int(item["original_width"]), int(item["original_height"])
            kind = str(item["type"])
            value = item["value"]
            x, y = float(value["x"]) * width / 100, float(value["y"]) * height / 100
            labels = value.get(kind) or []
            if not isinstance(labels, list):
                raise TypeError(f"{kind} is not a list")
        except (KeyError, TypeError, ValueError) as exc:
            raise _bad(where, f"is not a Label Studio result ({exc.__class__.__name__}: {exc})") from None
        label = str(labels[0]) if labels else label
        if kind == "keypointlabels":
            points.append((x, y, bool(item.get("is_positive", True))))
        elif kind == "rectanglelabels":
            try:
                w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
            except (KeyError, TypeError, ValueError) as exc:
                raise _bad(where, f"is a rectangle without a size ({exc})") from None
            box = (x, y, x + w, y + h)
    if not points and box is None:
        return None
    return Clicks(points, box, label, width, height)


def _percent_polygon(flat: list[float], width: int, height: int) -> list[list[float]]:
    return [[100.0 * flat[i] / width, 100.0 * flat[i + 1] / height] for i in range(0, len(flat), 2)]


def result_for(mask: mask_pb2.Mask, config: LabelConfig, clicks: Clicks, width: int, height: int) -> dict[str, Any]:
    """One Label Studio result (BrushLabels as brush RLE, PolygonLabels as percent points)."""
    value: dict[str, Any]
    if config.result_type == "brushlabels":
        with Image.open(io.BytesIO(mask.segmentation)) as png:
            pixels = np.asarray(png.convert("L")) > 0
        value = {"format": "rle", "rle": encode_brush_rle(pixels), "brushlabels": [clicks.label]}
    else:
        outline = list(mask.polygons.polygons[0].points) if mask.polygons.polygons else []
        value = {"points": _percent_polygon(outline, width, height), "polygonlabels": [clicks.label], "closed": True}
    return {
        "id": uuid.uuid4().hex[:10],
        "from_name": config.from_name,
        "to_name": config.to_name,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": value,
        "score": float(mask.predicted_iou),
        "type": config.result_type,
        "readonly": False,
    }


class LabelStudioBackend:
    """The protocol's endpoints over the public gRPC API (blocking; the adapter's threads)."""

    def __init__(
        self, stub: SegmentationServiceStub, timeout_s: float, max_image_bytes: int, label_studio_url: str = ""
    ) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.max_image_bytes = max_image_bytes
        self.base_url = label_studio_url.rstrip("/")

    @staticmethod
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "samsvc"}

    @staticmethod
    def model_version(model: str) -> str:
        return f"samsvc-{__version__}-{model or 'default'}"

    def setup(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        schema = body.get("schema") or body.get("label_config") or ""
        if schema:
            LabelConfig.parse(str(schema))
        return {"model_version": self.model_version(model)}

    def image_source(self, url: str) -> interactive_pb2.CreateImageSessionRequest:
        """The session request for a task's image: a data: URI's bytes, or an address for the
        server to fetch (a Label Studio path made absolute on LABEL_STUDIO_URL)."""
        if url.startswith("data:"):
            _, _, payload = url.partition(",")
            if len(payload) > self.max_image_bytes * 4 // 3 + 4:
                raise InvalidArgument.for_field(
                    "task.data", f"is larger than {self.max_image_bytes} bytes", reason="IMAGE_TOO_LARGE"
                )
            try:
                return interactive_pb2.CreateImageSessionRequest(image=base64.b64decode(payload, validate=True))
            except binascii.Error:
                raise _bad("task.data", "is a data: URI without base64 content") from None
        if url.startswith("/"):
            if not self.base_url:
                raise _bad("task.data", "is a Label Studio path: set LABEL_STUDIO_URL so samsvc can read it")
            url = self.base_url + url  # as given: the server judges the path, `..` and all
        if urlsplit(url).scheme not in {"http", "https"}:
            raise _bad("task.data", "must be an http(s) address, a Label Studio path or a data: URI")
        return interactive_pb2.CreateImageSessionRequest(image_url=url)

    def predict(self, body: dict[str, Any], model: str, metadata: list[tuple[str, str]]) -> dict[str, Any]:
        tasks = body.get("tasks")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise _bad("params", "must be an object")
        context = params.get("context") or body.get("context") or {}
        if not isinstance(tasks, list) or not tasks or not isinstance(tasks[0], dict):
            raise _bad("tasks", "must be a list holding the task to predict (an object)")
        if not isinstance(context, dict):
            raise _bad("params.context", "must be an object")
        clicks = clicks_from_context(context)
        if clicks is None:
            return {"results": []}  # no interaction yet: nothing to segment
        config = LabelConfig.parse(str(body.get("label_config") or ""))
        data = tasks[0].get("data")
        url = data.get(config.data_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise _bad("task.data", f"has no image under {config.data_key!r}")
        request = self.image_source(url)
        request.model_type = model
        call = {"timeout": self.timeout_s, "metadata": metadata}
        session = self.stub.CreateImageSession(request, **call)
        fmt = mask_pb2.MASK_FORMAT_PNG if config.result_type == "brushlabels" else mask_pb2.MASK_FORMAT_POLYGONS
        prompt = pb.Prompt(
            points=[pb.PointPrompt(x=x, y=y, background=not positive) for x, y, positive in clicks.points]
        )
        if clicks.box is not None:
            x0, y0, x1, y1 = clicks.box
            prompt.box.CopyFrom(pb.BoxPrompt(x0=x0, y0=y0, x1=x1, y1=y1))
        answer = self.stub.SegmentPrompts(
            pb.SegmentPromptsRequest(
                image_id=session.image_id, prompts=[prompt], multimask_output=True, mask_format=fmt
            ),
            **call,
        )
        best = max(answer.results[0].masks, key=lambda m: m.predicted_iou)
        result = result_for(best, config, clicks, session.image_width, session.image_height)
        return {"results": [{"result": [result], "score": result["score"], "model_version": self.model_version(model)}]}
