"""Label Studio's formats, as its ML backend protocol carries them: the project's label config
(which image, which output tag and its labels), the annotator's clicks (`params.context.result`,
in percent of the image) and the results samsvc answers (BrushLabels as Label Studio's brush
RLE, PolygonLabels as an outline in percent)."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import ParseError

import numpy as np
from defusedxml import DefusedXmlException, ElementTree
from PIL import Image

from samsvc.encoding.brush_rle import encode_brush_rle
from samsvc.errors import InvalidArgument
from samsvc.v1 import mask_pb2

#: Output tags, in order of preference, and the result type each answers with.
OUTPUT_TAGS = {"BrushLabels": "brushlabels", "PolygonLabels": "polygonlabels"}


def bad_request(field: str, description: str) -> InvalidArgument:
    return InvalidArgument.for_field(field, description, reason="INVALID_LABEL_STUDIO_REQUEST")


@dataclass(frozen=True)
class LabelConfig:
    """What a project's label config says samsvc answers to: its image (the task data key) and
    the output tag (BrushLabels or PolygonLabels) with the image it labels."""

    from_name: str
    to_name: str
    result_type: str
    data_key: str
    #: The output tag's label values, in order (preannotations take the first).
    labels: tuple[str, ...] = ()

    @classmethod
    def parse(cls, xml: str) -> LabelConfig:
        if not xml:
            raise bad_request("label_config", "is empty")
        try:
            root = ElementTree.fromstring(xml, forbid_dtd=True)
        except DefusedXmlException:
            raise bad_request("label_config", "must not declare a DOCTYPE or entities") from None
        except ParseError as exc:
            raise bad_request("label_config", f"is not XML ({exc})") from None
        images = {tag.get("name", ""): tag.get("value", "") for tag in root.iter("Image")}
        for tag_name, result_type in OUTPUT_TAGS.items():
            for tag in root.iter(tag_name):
                to_name = tag.get("toName", "")
                value = images.get(to_name, "")
                if value.startswith("$"):
                    labels = tuple(label.get("value", "") for label in tag.iter("Label"))
                    return cls(tag.get("name", ""), to_name, result_type, value[1:], labels)
        raise bad_request("label_config", 'needs a BrushLabels or PolygonLabels tag on an Image with value="$..."')


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
            raise bad_request(where, f"is not a Label Studio result ({exc.__class__.__name__}: {exc})") from None
        label = str(labels[0]) if labels else label
        if kind == "keypointlabels":
            points.append((x, y, bool(item.get("is_positive", True))))
        elif kind == "rectanglelabels":
            try:
                w, h = float(value["width"]) * width / 100, float(value["height"]) * height / 100
            except (KeyError, TypeError, ValueError) as exc:
                raise bad_request(where, f"is a rectangle without a size ({exc})") from None
            box = (x, y, x + w, y + h)
    if not points and box is None:
        return None
    return Clicks(points, box, label, width, height)


def _percent_polygon(flat: list[float], width: int, height: int) -> list[list[float]]:
    return [[100.0 * flat[i] / width, 100.0 * flat[i + 1] / height] for i in range(0, len(flat), 2)]


def result_for(mask: mask_pb2.Mask, config: LabelConfig, label: str, width: int, height: int) -> dict[str, Any]:
    """One Label Studio result (BrushLabels as brush RLE, PolygonLabels as percent points)."""
    value: dict[str, Any]
    if config.result_type == "brushlabels":
        with Image.open(io.BytesIO(mask.segmentation)) as png:
            pixels = np.asarray(png.convert("L")) > 0
        value = {"format": "rle", "rle": encode_brush_rle(pixels), "brushlabels": [label]}
    else:
        outline = list(mask.polygons.polygons[0].points) if mask.polygons.polygons else []
        value = {"points": _percent_polygon(outline, width, height), "polygonlabels": [label], "closed": True}
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
