"""Where a request's image comes from: one source (the bytes, an address, an image session or an
embedding job's image), and a model that agrees with the one that source was encoded with."""

from __future__ import annotations

from samsvc.errors import InvalidArgument


def check_one_source(image: bytes, image_url: str) -> None:
    """The image or its address, not both."""
    if image and image_url:
        raise InvalidArgument.for_field(
            "image_url", "send the image or its address, not both", reason="INVALID_PARAMETER"
        )


def missing_source(field: str = "image") -> InvalidArgument:
    """A request that names no image at all."""
    return InvalidArgument.for_field(field, "send the image, an image_id or a job_image", reason="IMAGE_MISSING")


def check_same_model(requested: str, actual: str, whose: str, field: str = "model_type") -> str:
    """`actual`, the model a stored embedding was made with, unless the caller asked for another."""
    if requested and requested != actual:
        raise InvalidArgument.for_field(
            field, f"must be empty or {actual!r}, the model of {whose}", reason="INVALID_PARAMETER"
        )
    return actual


def check_job_image(job_id: str, index: int, total_images: int, *, embedding_job: bool, field: str) -> None:
    """An image of an embedding job: `field`.job_id names one, `field`.index is within it."""
    if not embedding_job:
        raise InvalidArgument.for_field(
            f"{field}.job_id", f"job {job_id!r} is not an embedding job", reason="NOT_AN_EMBEDDING_JOB"
        )
    if not 0 <= index < total_images:
        raise InvalidArgument.for_field(
            f"{field}.index", f"must be in [0, {total_images - 1}]", reason="INVALID_PARAMETER"
        )
