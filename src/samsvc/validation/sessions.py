"""Image session ids: `img_`, 32 hex digits of the image's SHA-256, `_`, the model's name
(samsvc.sessions.store.image_id makes them)."""

from __future__ import annotations

import re

from samsvc.errors import InvalidArgument

IMAGE_ID = re.compile(r"^img_([0-9a-f]{32})_([A-Za-z0-9_.-]{1,64})$")


def check_image_id(value: str, field: str = "image_id") -> str:
    """The image id's model name; INVALID_ARGUMENT (INVALID_IMAGE_ID) for anything else."""
    match = IMAGE_ID.match(value)
    if match is None:
        raise InvalidArgument.for_field(
            field, "must be an image id from CreateImageSession (img_<32 hex>_<model>)", reason="INVALID_IMAGE_ID"
        )
    return match.group(2)
