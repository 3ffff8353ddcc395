"""What validation enforces, said as JSON Schema for the API's OpenAPI document: the ranges of the
mask-generation options, page sizes, request ids and image ids, taken from the same constants the
checks use, so generated clients, fuzzers and the docs know the limits the server applies.
Limits that are settings (MAX_BATCH_IMAGES, MAX_IMAGE_BYTES, ...) vary by deployment and are not
in the document; CheckHealth reports a server's.

Required fields are the protos' own `(google.api.field_behavior) = REQUIRED` (AIP-203); the
choices of an image's source, where exactly one must be given, are REQUIRED_ONE_OF below.
tests/validation/test_required.py holds both to the server: each request missing one of them,
or giving two sources, is refused with INVALID_ARGUMENT naming the field."""

from __future__ import annotations

from typing import Any

from samsvc.validation.amg_options import RANGES
from samsvc.validation.batch import MAX_REQUEST_ID_LENGTH
from samsvc.validation.paging import MAX_JOBS_PAGE_SIZE, MAX_PAGE_SIZE, MAX_RESULTS_PAGE_SIZE
from samsvc.validation.prompts import MAX_POINTS_PER_PROMPT, MAX_PROMPTS
from samsvc.validation.sessions import IMAGE_ID

#: Messages whose fields carry mask-generation options by name (SegmentRequest's are the design
#: document's flat fields; SegmentOptions the batch's).
AMG_MESSAGES = frozenset({"samsvc.v1.SegmentRequest", "samsvc.v1.SegmentUploadRequest", "samsvc.v1.SegmentOptions"})
#: Requests that take their image from exactly one of several fields (a proto `oneof`, or
#: SegmentRequest's `image` and `image_url`, which predate it): giving none, or two, is refused.
REQUIRED_ONE_OF: dict[str, tuple[str, ...]] = {
    "samsvc.v1.SegmentRequest": ("image", "image_url"),
    "samsvc.v1.SegmentPromptsRequest": ("image", "image_id"),
    "samsvc.v1.CreateImageSessionRequest": ("image", "job_image", "image_url"),
    "samsvc.v1.GetImageEmbeddingRequest": ("image", "image_id", "job_image"),
}
#: Messages of which at least one of these fields must be given (a prompt needs something to
#: prompt with).
REQUIRED_ANY_OF: dict[str, tuple[str, ...]] = {
    "samsvc.v1.Prompt": ("points", "box", "mask_logits", "refine_previous"),
}
#: The most items a repeated field takes, by (message, field).
MAX_ITEMS = {
    ("samsvc.v1.SegmentPromptsRequest", "prompts"): MAX_PROMPTS,
    ("samsvc.v1.Prompt", "points"): MAX_POINTS_PER_PROMPT,
}
#: Coordinates in image pixels: not below 0 (the upper bound is the image's own side).
PIXEL_COORDINATES = {"samsvc.v1.PointPrompt": ("x", "y"), "samsvc.v1.BoxPrompt": ("x0", "y0", "x1", "y1")}
#: The largest page each listing takes.
PAGE_SIZES = {
    "samsvc.v1.ListModelsRequest": MAX_PAGE_SIZE,
    "samsvc.v1.GetJobResultsRequest": MAX_RESULTS_PAGE_SIZE,
    "samsvc.v1.ListJobsRequest": MAX_JOBS_PAGE_SIZE,
    "samsvc.v1.ListAllJobsRequest": MAX_JOBS_PAGE_SIZE,
}


def required_constraints(kind: str) -> dict[str, Any]:
    """What a REQUIRED field of JSON type `kind` must hold beyond being present: proto3 reads an
    empty string or list as unset, and the server refuses it as missing."""
    if kind == "array":
        return {"minItems": 1}
    if kind == "string":
        return {"minLength": 1}
    return {}


def one_of(message: str) -> list[dict[str, Any]]:
    """The `oneOf` alternatives of `message`'s required choice of source (empty when it has none)."""
    return [{"required": [name]} for name in REQUIRED_ONE_OF.get(message, ())]


def any_of(message: str) -> list[dict[str, Any]]:
    """The `anyOf` alternatives of the fields of which `message` needs one (empty when none)."""
    return [{"required": [name]} for name in REQUIRED_ANY_OF.get(message, ())]


def array_constraints(message: str, field: str) -> dict[str, Any]:
    """JSON Schema keywords for the list itself of repeated `field` of `message`."""
    most = MAX_ITEMS.get((message, field))
    return {} if most is None else {"maxItems": most}


def field_constraints(message: str, field: str) -> dict[str, Any]:
    """JSON Schema keywords for `field` of `message` (a full name without the leading dot)."""
    if message in AMG_MESSAGES and field in RANGES:
        bounds = RANGES[field]
        if bounds.boolean:
            return {}
        low, high = (int(bounds.low), int(bounds.high)) if bounds.integer else (bounds.low, bounds.high)
        constraints: dict[str, Any] = {"minimum": low, "maximum": high}
        if bounds.high_open:
            constraints["exclusiveMaximum"] = True
        return constraints
    if field in PIXEL_COORDINATES.get(message, ()):
        return {"minimum": 0}
    if field == "page_size" and message in PAGE_SIZES:
        return {"minimum": 0, "maximum": PAGE_SIZES[message]}
    if field == "request_id" and message.endswith("Request"):
        return {"maxLength": MAX_REQUEST_ID_LENGTH}
    if field == "image_id" and message.endswith("Request"):
        return {"pattern": IMAGE_ID.pattern}
    return {}
