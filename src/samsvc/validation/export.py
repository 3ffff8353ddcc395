"""A batch's export_url: empty, s3://bucket/prefix, or a folder inside one of EXPORT_DIRS
(so a caller cannot make the server write anywhere else on its disks)."""

from __future__ import annotations

from pathlib import Path

from samsvc.errors import ConfigurationError, InvalidArgument
from samsvc.object_storage import parse_location

#: Longest export_url accepted.
MAX_EXPORT_URL_CHARS = 1024


def check_export_url(value: str, allowed_dirs: list[Path], field: str = "export_url") -> str:
    """The export location as given; INVALID_ARGUMENT naming `field` otherwise."""
    if not value:
        return ""
    if len(value) > MAX_EXPORT_URL_CHARS:
        raise InvalidArgument.for_field(
            field, f"is longer than {MAX_EXPORT_URL_CHARS} characters", reason="BAD_EXPORT_URL"
        )
    try:
        location = parse_location(value, field)
    except ConfigurationError as exc:
        raise InvalidArgument.for_field(field, exc.message, reason="BAD_EXPORT_URL") from None
    if location.path is None:
        return value
    if not location.path.is_absolute():
        raise InvalidArgument.for_field(field, "a folder must be an absolute path", reason="BAD_EXPORT_URL")
    resolved = location.path.resolve()
    if not any(resolved == root.resolve() or resolved.is_relative_to(root.resolve()) for root in allowed_dirs):
        allowed = "none are allowed (EXPORT_DIRS is empty)" if not allowed_dirs else "it is outside EXPORT_DIRS"
        raise InvalidArgument.for_field(
            field, f"exports to a folder need a folder the server allows; {allowed}", reason="EXPORT_DIR_FORBIDDEN"
        )
    return value
