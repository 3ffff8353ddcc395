"""What validation enforces, said as JSON Schema for the API's OpenAPI document: the ranges of the
mask-generation options, page sizes, request ids and image ids, taken from the same constants the
checks use, so generated clients, fuzzers and the docs know the limits the server applies.
Limits that are settings (MAX_BATCH_IMAGES, MAX_IMAGE_BYTES, ...) vary by deployment and are not
in the document; CheckHealth reports a server's."""

from __future__ import annotations

from typing import Any

from samsvc.validation.amg_options import RANGES
from samsvc.validation.batch import MAX_REQUEST_ID_LENGTH
from samsvc.validation.paging import MAX_JOBS_PAGE_SIZE, MAX_PAGE_SIZE, MAX_RESULTS_PAGE_SIZE
from samsvc.validation.sessions import IMAGE_ID

#: Messages whose fields carry mask-generation options by name (SegmentRequest's are the design
#: document's flat fields; SegmentOptions the batch's).
AMG_MESSAGES = frozenset({"samsvc.v1.SegmentRequest", "samsvc.v1.SegmentUploadRequest", "samsvc.v1.SegmentOptions"})
#: The largest page each listing takes.
PAGE_SIZES = {
    "samsvc.v1.ListModelsRequest": MAX_PAGE_SIZE,
    "samsvc.v1.GetJobResultsRequest": MAX_RESULTS_PAGE_SIZE,
    "samsvc.v1.ListJobsRequest": MAX_JOBS_PAGE_SIZE,
    "samsvc.v1.ListAllJobsRequest": MAX_JOBS_PAGE_SIZE,
}


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
    if field == "page_size" and message in PAGE_SIZES:
        return {"minimum": 0, "maximum": PAGE_SIZES[message]}
    if field == "request_id" and message.endswith("Request"):
        return {"maxLength": MAX_REQUEST_ID_LENGTH}
    if field == "image_id" and message.endswith("Request"):
        return {"pattern": IMAGE_ID.pattern}
    return {}
