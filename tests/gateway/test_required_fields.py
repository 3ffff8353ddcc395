"""The OpenAPI document's required fields and required choices of source are the server's: for
every JSON operation whose body schema has `required` or `oneOf`, a request that is whole except
for one required field, or that gives none or two of the sources, is refused with 400 and a
google.rpc.BadRequest naming the field (before, the document said nothing was required and a
generated client learned it only from the server's refusals)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.gateway.conftest import IMAGE, Stack, call

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "generated" / "samsvc" / "v1" / "openapi.json").read_text())
SCHEMAS = DOCUMENT["components"]["schemas"]
INVALID_ARGUMENT = 3
PNG = base64.b64encode(IMAGE).decode()
#: A value for each field a required rule names, whole enough that only the missing field or the
#: doubled source is wrong (image_id and job_image name nothing that exists: the source rule is
#: judged before the lookup).
VALUES: dict[str, Any] = {
    "image": PNG,
    "image_url": "https://images.example/photo.png",
    "image_id": "img_" + "0" * 32 + "_tiny",
    "job_image": {"job_id": "job_0", "index": 0},
    "images": [PNG],
    "prompts": [{"points": [{"x": 10, "y": 10}]}],
}


def body_operations() -> list[tuple[str, str, str]]:
    """(path, message, summary) of each POST whose JSON body is a message with a required rule,
    on the /api/v1 routes (the design document's aliases share the same messages)."""
    found = []
    for path, operations in DOCUMENT["paths"].items():
        post = operations.get("post", {})
        schema = post.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        ref = schema.get("$ref", "")
        message = ref.rsplit("/", 1)[-1]
        if path.startswith("/api/v1/") and message and ("required" in SCHEMAS[message] or "oneOf" in SCHEMAS[message]):
            found.append((path, message, post["summary"]))
    return sorted(found)


OPERATIONS = body_operations()
WITH_SOURCES = [o for o in OPERATIONS if "oneOf" in SCHEMAS[o[1]]]


def test_the_document_states_what_is_required() -> None:
    summaries = {summary for _, _, summary in OPERATIONS}
    assert {"Segment", "SegmentPrompts", "SubmitBatch", "SubmitEmbeddingBatch", "CreateImageSession"} <= summaries
    assert {"GetImageEmbedding"} <= summaries
    assert SCHEMAS["samsvc.v1.SubmitBatchRequest"]["properties"]["images"]["minItems"] == 1


def whole(message: str) -> dict[str, Any]:
    schema = SCHEMAS[message]
    body = {name: VALUES[name] for name in schema.get("required", [])}
    choices = schema.get("oneOf", [])
    if choices:
        first = choices[0]["required"][0]
        body[first] = VALUES[first]
    return body


def post(stack: Stack, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and the answer; a streaming route answers 200 and the error as its one
    line (gRPC's status comes after the headers), which is shown here as its HTTP status."""
    status, _, raw = call(stack.base + path, "POST", json.dumps(body).encode(), {"Content-Type": "application/json"})
    answer = json.loads(raw)
    if path.endswith(":stream") and status == 200 and answer.get("code") == INVALID_ARGUMENT:
        status = 400
    return status, answer


def violations(answer: dict[str, Any]) -> list[str]:
    return [
        v["field"]
        for detail in answer.get("details", [])
        if detail.get("@type", "").endswith("google.rpc.BadRequest")
        for v in detail.get("field_violations", [])
    ]


@pytest.mark.parametrize(("path", "message", "summary"), OPERATIONS, ids=[o[2] for o in OPERATIONS])
def test_each_required_field_missing_is_refused_naming_it(stack: Stack, path: str, message: str, summary: str) -> None:
    for name in SCHEMAS[message].get("required", []):
        body = whole(message)
        del body[name]
        status, answer = post(stack, path, body)
        assert status == 400, (summary, name, answer)
        assert any(v.split("[")[0].split(".")[0] == name for v in violations(answer)), (summary, name, answer)


def reasons(answer: dict[str, Any]) -> list[str]:
    return [d["reason"] for d in answer.get("details", []) if d.get("@type", "").endswith("google.rpc.ErrorInfo")]


@pytest.mark.parametrize(("path", "message", "summary"), WITH_SOURCES, ids=[o[2] for o in WITH_SOURCES])
def test_none_or_two_sources_are_refused(stack: Stack, path: str, message: str, summary: str) -> None:
    """Two members of a proto oneof are refused by Envoy's transcoder before the server sees
    them: its answer is the API's error too (it was plain text), with one ErrorInfo."""
    sources = [choice["required"][0] for choice in SCHEMAS[message]["oneOf"]]
    body = {k: v for k, v in whole(message).items() if k not in sources}
    status, answer = post(stack, path, body)
    assert status == 400, (summary, answer)
    assert set(violations(answer)) & set(sources), (summary, answer)
    status, answer = post(stack, path, {**body, sources[0]: VALUES[sources[0]], sources[1]: VALUES[sources[1]]})
    assert status == 400, (summary, sources, answer)
    assert answer["code"] == INVALID_ARGUMENT and len(reasons(answer)) == 1, answer
    assert sources[1] in answer["message"] or sources[1] in violations(answer), answer


def test_a_body_that_is_not_json_is_the_apis_error(stack: Stack) -> None:
    status, headers, raw = call(
        stack.base + "/api/v1/segment", "POST", b'{"image": 5', {"Content-Type": "application/json"}
    )
    answer = json.loads(raw)
    assert status == 400 and headers["content-type"] == "application/json", raw
    assert answer["code"] == INVALID_ARGUMENT and reasons(answer) == ["MALFORMED_REQUEST"], answer
