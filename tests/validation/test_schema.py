"""The OpenAPI document states the limits validation enforces: a fuzzer or a generated client
that keeps to the document is accepted, and one value past a stated bound is refused (before,
the document gave no bounds and generated requests were mostly refused)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from samsvc.errors import InvalidArgument
from samsvc.validation.amg_options import RANGES, check_amg_options
from samsvc.validation.batch import check_request_id
from samsvc.validation.paging import page_size
from samsvc.validation.prompts import check_prompts
from samsvc.validation.sessions import check_image_id

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "generated" / "samsvc" / "v1" / "openapi.json").read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]


def field(message: str, name: str) -> dict[str, Any]:
    schema: dict[str, Any] = SCHEMAS[message]["properties"][name]
    return schema


@pytest.mark.parametrize("message", ["samsvc.v1.SegmentOptions", "samsvc.v1.SegmentRequest"])
@pytest.mark.parametrize("name", sorted(n for n, r in RANGES.items() if not r.boolean))
def test_each_option_bound_in_the_document_is_the_validators(message: str, name: str) -> None:
    schema = field(message, name)
    low, high = schema["minimum"], schema["maximum"]
    step = 1 if schema["type"] == "integer" else 1e-6
    check_amg_options({name: low})
    if not schema.get("exclusiveMaximum"):
        check_amg_options({name: high})
    for outside in (low - step, high + step):
        with pytest.raises(InvalidArgument):
            check_amg_options({name: outside})


def parameter(method: str, name: str) -> dict[str, Any]:
    """The schema of parameter `name` of the first route of RPC `method`."""
    for operations in DOCUMENT["paths"].values():
        for operation in operations.values():
            if operation["summary"] == method:
                for given in operation.get("parameters", []):
                    if given["name"] == name:
                        schema: dict[str, Any] = given["schema"]
                        return schema
    raise KeyError((method, name))


def test_page_sizes_request_ids_and_image_ids_are_stated() -> None:
    for method in ("ListModels", "GetJobResults", "ListJobs"):
        most = parameter(method, "page_size")["maximum"]
        assert page_size(most, 1, most) == most
        with pytest.raises(InvalidArgument):
            page_size(most + 1, 1, most)
    longest = field("samsvc.v1.SubmitBatchRequest", "request_id")["maxLength"]
    check_request_id("r" * longest)
    with pytest.raises(InvalidArgument):
        check_request_id("r" * (longest + 1))
    pattern = parameter("GetImageSession", "image_id")["pattern"]
    good = "img_" + "0" * 32 + "_tiny"
    assert re.search(pattern, good) and check_image_id(good) == "tiny"
    assert not re.search(pattern, "img_nope")


def test_prompt_counts_and_coordinates_are_stated() -> None:
    from samsvc.v1 import segmentation_service_pb2 as pb

    most_prompts = field("samsvc.v1.SegmentPromptsRequest", "prompts")["maxItems"]
    most_points = field("samsvc.v1.Prompt", "points")["maxItems"]
    point = pb.Prompt(points=[pb.PointPrompt(x=1, y=1)])
    assert len(check_prompts([point] * most_prompts, 8, 8)) == most_prompts
    with pytest.raises(InvalidArgument):
        check_prompts([point] * (most_prompts + 1), 8, 8)
    many = pb.Prompt(points=[pb.PointPrompt(x=1, y=1)] * most_points)
    check_prompts([many], 8, 8)
    with pytest.raises(InvalidArgument):
        check_prompts([pb.Prompt(points=[pb.PointPrompt(x=1, y=1)] * (most_points + 1))], 8, 8)
    assert field("samsvc.v1.PointPrompt", "x")["minimum"] == 0
    with pytest.raises(InvalidArgument):
        check_prompts([pb.Prompt(points=[pb.PointPrompt(x=-0.5, y=1)])], 8, 8)
    needs = {choice["required"][0] for choice in SCHEMAS["samsvc.v1.Prompt"]["anyOf"]}
    assert needs == {"points", "box", "mask_logits", "refine_previous"}
    with pytest.raises(InvalidArgument, match="needs points, a box, mask_logits or refine_previous"):
        check_prompts([pb.Prompt()], 8, 8)
