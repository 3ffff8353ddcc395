"""Label Studio's ML backend protocol, served by samsvc for interactive (smart) labeling.

Point a Label Studio project's model at `http://samsvc:8000/label-studio` (or
`/label-studio/m/<model>` for another model than the default), with basic authentication whose
password is a samsvc API key. Label Studio then calls:
- `GET /health` (and `/`): `{"status": "UP"}`;
- `POST /setup` when the project connects: the label config is checked and the model must be
  one the key may use (ListModels with the caller's credentials), so a wrong key or an unknown
  model shows as an error in *Settings > Model* instead of "Connected";
- `POST /predict` with the tasks and, once the annotator clicks, `params.context.result`: the
  keypoints (`keypointlabels`, `is_positive`) and rectangles (`rectanglelabels`) placed so far,
  in percent of `original_width` x `original_height`.

A click opens an image session for the task's image (its embedding is computed once, then
reused from the embedding cache by every later click), asks SegmentPrompts for three masks of
the clicks and keeps the best, and answers it for the project's BrushLabels tag (brush RLE) or
PolygonLabels tag (its outline in percent). Without clicks ("Retrieve predictions", or a task
opened with preannotations on) each task gets automatic masks as preannotations: Segment at
`prelabel_points_per_side`, the `prelabel_max_regions` best by predicted IoU, each a region with
the tag's first label. Everything goes through the public gRPC API with the caller's
credentials; this module only translates.

Task images are never fetched here: a relative path such as `/data/upload/...` becomes an
address on `LABEL_STUDIO_URL`, and that or a task's http(s) address goes to CreateImageSession
as `image_url`, so the server fetches it only after it has authenticated the caller, charged
its rate limits and allowed its model, and lends Label Studio's token only to Label Studio's
media paths (samsvc.validation.image_url). A `data:` URI is decoded and sent as the image.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import urlsplit

from samsvc import __version__
from samsvc.errors import InvalidArgument
from samsvc.gateway.label_studio_format import Clicks, LabelConfig, bad_request, clicks_from_context, result_for
from samsvc.gateway.options import DEFAULT_PRELABEL_MAX_REGIONS, DEFAULT_PRELABEL_POINTS_PER_SIDE
from samsvc.v1 import interactive_pb2, mask_pb2
from samsvc.v1 import segmentation_service_pb2 as pb
from samsvc.v1.segmentation_service_pb2_grpc import SegmentationServiceStub

#: Tasks one /predict call may carry (Label Studio sends a page of them for "Retrieve predictions").
MAX_TASKS_PER_CALL = 50

PREFIX = "/label-studio"
#: `/label-studio[/m/<model>]/<endpoint>`
_PATH = re.compile(r"^/label-studio(?:/m/(?P<model>[A-Za-z0-9_.-]{1,64}))?(?P<endpoint>/[a-z_]*)?/?$")


def route(path: str) -> tuple[str, str] | None:
    """(model or "", endpoint) of a Label Studio path, or None."""
    match = _PATH.match(path)
    if match is None:
        return None
    return match.group("model") or "", (match.group("endpoint") or "/").rstrip("/") or "/"


class LabelStudioBackend:
    """The protocol's endpoints over the public gRPC API (blocking; the sidecar's threads)."""

    def __init__(
        self,
        stub: SegmentationServiceStub,
        timeout_s: float,
        max_image_bytes: int,
        label_studio_url: str = "",
        *,
        prelabel_max_regions: int = DEFAULT_PRELABEL_MAX_REGIONS,
        prelabel_points_per_side: int = DEFAULT_PRELABEL_POINTS_PER_SIDE,
    ) -> None:
        self.stub = stub
        self.timeout_s = timeout_s
        self.max_image_bytes = max_image_bytes
        self.base_url = label_studio_url.rstrip("/")
        self.prelabel_max_regions = prelabel_max_regions
        self.prelabel_points_per_side = prelabel_points_per_side

    @staticmethod
    def health() -> dict[str, Any]:
        return {"status": "UP", "model_class": "samsvc"}

    @staticmethod
    def model_version(model: str) -> str:
        return f"samsvc-{__version__}-{model or 'default'}"

    def setup(self, body: dict[str, Any], model: str, metadata: list[tuple[str, str]]) -> dict[str, Any]:
        """Check the label config, the key and the model: Label Studio shows a failed setup as the
        backend's error instead of "Connected"."""
        schema = body.get("schema") or body.get("label_config") or ""
        if schema:
            LabelConfig.parse(str(schema))
        names: list[str] = []
        token = ""
        while True:
            page = pb.ListModelsRequest(page_size=100, page_token=token)
            listed = self.stub.ListModels(page, timeout=self.timeout_s, metadata=metadata)
            names += [m.name for m in listed.models]
            token = listed.next_page_token
            if not token:
                break
        if model and model not in names:
            raise InvalidArgument.for_field(
                "model", f"samsvc serves no model {model!r} to this key; choose one of {', '.join(names) or 'none'} "
                "(/label-studio/m/<model>)", reason="UNKNOWN_MODEL",
            )  # fmt: skip
        return {"model_version": self.model_version(model)}

    def image_source(self, url: str) -> tuple[bytes, str]:
        """A task's image: (its bytes, "") for a data: URI, else (b"", its address for the
        server to fetch; a Label Studio path made absolute on LABEL_STUDIO_URL, as given)."""
        if url.startswith("data:"):
            _, _, payload = url.partition(",")
            if len(payload) > self.max_image_bytes * 4 // 3 + 4:
                raise InvalidArgument.for_field(
                    "task.data", f"is larger than {self.max_image_bytes} bytes", reason="IMAGE_TOO_LARGE"
                )
            try:
                return base64.b64decode(payload, validate=True), ""
            except binascii.Error:
                raise bad_request("task.data", "is a data: URI without base64 content") from None
        if url.startswith("/"):
            if not self.base_url:
                raise bad_request("task.data", "is a Label Studio path: set LABEL_STUDIO_URL so samsvc can read it")
            url = self.base_url + url  # as given: the server judges the path, `..` and all
        if urlsplit(url).scheme not in {"http", "https"}:
            raise bad_request("task.data", "must be an http(s) address, a Label Studio path or a data: URI")
        return b"", url

    def predict(self, body: dict[str, Any], model: str, metadata: list[tuple[str, str]]) -> dict[str, Any]:
        tasks = body.get("tasks")
        params = body.get("params") or {}
        if not isinstance(params, dict):
            raise bad_request("params", "must be an object")
        context = params.get("context") or body.get("context") or {}
        if not isinstance(tasks, list) or not tasks or not all(isinstance(task, dict) for task in tasks):
            raise bad_request("tasks", "must be a list holding the tasks to predict (objects)")
        if len(tasks) > MAX_TASKS_PER_CALL:
            raise bad_request("tasks", f"holds {len(tasks)} tasks; at most {MAX_TASKS_PER_CALL} per call")
        if not isinstance(context, dict):
            raise bad_request("params.context", "must be an object")
        config = LabelConfig.parse(str(body.get("label_config") or ""))
        clicks = clicks_from_context(context)
        call = {"timeout": self.timeout_s, "metadata": metadata}
        if clicks is None:
            results = [self._prelabel(task, config, model, call) for task in tasks]
        else:
            results = [self._click(tasks[0], config, clicks, model, call)]
        return {"results": results}

    def _task_image(self, task: dict[str, Any], config: LabelConfig) -> tuple[bytes, str]:
        data = task.get("data")
        url = data.get(config.data_key) if isinstance(data, dict) else None
        if not isinstance(url, str) or not url:
            raise bad_request("task.data", f"has no image under {config.data_key!r}")
        return self.image_source(url)

    def _prediction(self, regions: list[dict[str, Any]], model: str) -> dict[str, Any]:
        score = max((region["score"] for region in regions), default=0.0)
        return {"result": regions, "score": score, "model_version": self.model_version(model)}

    def _click(
        self, task: dict[str, Any], config: LabelConfig, clicks: Clicks, model: str, call: dict[str, Any]
    ) -> dict[str, Any]:
        image, url = self._task_image(task, config)
        request = interactive_pb2.CreateImageSessionRequest(model_type=model)
        if url:
            request.image_url = url
        else:
            request.image = image
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
        label = clicks.label or (config.labels[0] if config.labels else "")
        region = result_for(best, config, label, session.image_width, session.image_height)
        return self._prediction([region], model)

    def _prelabel(self, task: dict[str, Any], config: LabelConfig, model: str, call: dict[str, Any]) -> dict[str, Any]:
        """Automatic masks of the task's image as preannotations (the best first)."""
        if self.prelabel_max_regions <= 0:
            return self._prediction([], model)
        image, url = self._task_image(task, config)
        fmt = mask_pb2.MASK_FORMAT_PNG if config.result_type == "brushlabels" else mask_pb2.MASK_FORMAT_POLYGONS
        answer = self.stub.Segment(
            pb.SegmentRequest(
                image=image, image_url=url, model_type=model, points_per_side=self.prelabel_points_per_side,
                mask_format=fmt,
            ),
            **call,
        )  # fmt: skip
        best = sorted(answer.masks, key=lambda m: m.predicted_iou, reverse=True)[: self.prelabel_max_regions]
        label = config.labels[0] if config.labels else ""
        regions = [result_for(mask, config, label, answer.image_width, answer.image_height) for mask in best]
        return self._prediction(regions, model)
