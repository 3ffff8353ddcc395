"""The answer CVAT's Segment Anything plugin expects from its serverless function, served by
samsvc: `POST /cvat/sam` (or `/cvat/m/<model>/sam`) with `{"image": "<base64>"}` returns
`{"blob": "<base64 of the float32 1x256x64x64 embedding>"}`. CVAT's browser plugin then decodes
clicks with its decoder.onnx, which must come from the same checkpoint:
`GET /api/v1/models/<model>/decoder.onnx`. `deploy/cvat/` holds the Nuclio function that
forwards CVAT's calls here. The embedding comes from the public gRPC API (GetImageEmbedding),
with the caller's credentials."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from samsvc.errors import InvalidArgument
from samsvc.v1 import interactive_pb2
from samsvc.v1.segmentation_service_pb2_grpc import SegmentationServiceStub

_PATH = re.compile(r"^/cvat(?:/m/(?P<model>[A-Za-z0-9_.-]{1,64}))?/sam/?$")


def route(path: str) -> str | None:
    """The model a CVAT path names ("" for the default), or None for another path."""
    match = _PATH.match(path)
    return None if match is None else match.group("model") or ""


def embedding_answer(
    stub: SegmentationServiceStub, body: dict[str, Any], model: str, metadata: list[tuple[str, str]], timeout_s: float
) -> dict[str, Any]:
    encoded = body.get("image")
    if not isinstance(encoded, str) or not encoded:
        raise InvalidArgument.for_field("image", "must be the image as base64", reason="IMAGE_MISSING")
    try:
        image = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise InvalidArgument.for_field("image", "is not base64", reason="IMAGE_CORRUPT") from None
    embedding = stub.GetImageEmbedding(
        interactive_pb2.GetImageEmbeddingRequest(image=image, model_type=model), timeout=timeout_s, metadata=metadata
    )
    return {"blob": base64.b64encode(embedding.tensors[0].data).decode("ascii")}
