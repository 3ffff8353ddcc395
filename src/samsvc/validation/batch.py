"""Judging a batch request's own fields: how many images it holds (against the batch limit and
the caller's images per minute), and its request_id."""

from __future__ import annotations

from samsvc.errors import FieldViolation, InvalidArgument
from samsvc.validation.amg_options import invalid_parameters

MAX_REQUEST_ID_LENGTH = 128


def check_batch_count(count: int, most: int) -> None:
    """At least one image and at most MAX_BATCH_IMAGES (TOO_MANY_IMAGES)."""
    if count == 0:
        raise InvalidArgument.for_field("images", "must hold at least one image", reason="INVALID_PARAMETER")
    if count > most:
        raise InvalidArgument.for_field(
            "images", f"holds {count} images; the limit is {most}", reason="TOO_MANY_IMAGES"
        )


def check_request_id(request_id: str) -> str:
    if len(request_id) > MAX_REQUEST_ID_LENGTH or not request_id.isprintable():
        raise invalid_parameters(
            [FieldViolation("request_id", f"must be at most {MAX_REQUEST_ID_LENGTH} printable characters")]
        )
    return request_id


def check_rate_cost(images: int, images_per_minute: int) -> None:
    """A request holding more images than its caller may send in a minute (0: no limit)."""
    if images_per_minute and images > images_per_minute:
        raise InvalidArgument.for_field(
            "images",
            f"holds {images} images; this caller may send at most {images_per_minute} per minute",
            reason="EXCEEDS_RATE_LIMIT",
        )
