"""Paging, the same everywhere (AIP-158): a page size within a method's bounds, and opaque page
tokens this server issues (an offset for models, a position in the newest-first job listing)."""

from __future__ import annotations

import base64
import binascii

from samsvc.errors import InvalidArgument
from samsvc.jobs.store import ListCursor

#: ListModels page size when the request gives none, and the most it may ask for.
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: GetJobResults and ListJobs page sizes.
DEFAULT_RESULTS_PAGE_SIZE = 10
MAX_RESULTS_PAGE_SIZE = 50
DEFAULT_JOBS_PAGE_SIZE = 20
MAX_JOBS_PAGE_SIZE = 100


def page_size(value: int, default: int, most: int, field: str = "page_size") -> int:
    if value < 0 or value > most:
        raise InvalidArgument.for_field(field, f"must be between 0 and {most}", reason="INVALID_PARAMETER")
    return value or default


def encode_page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode("ascii")


def decode_page_token(token: str, field: str = "page_token") -> int:
    """The offset a page token stands for; InvalidArgument for tokens we did not issue."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii")
        if not text.startswith("o:"):
            raise ValueError(text)
        offset = int(text[2:])
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidArgument.for_field(
            field, "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        ) from None
    if offset < 0:
        raise InvalidArgument.for_field(field, "is not a token this server issued", reason="INVALID_PAGE_TOKEN")
    return offset


def encode_list_token(cursor: ListCursor) -> str:
    return base64.urlsafe_b64encode(f"j:{cursor.created_at_ms}:{cursor.job_id}".encode()).decode("ascii")


def decode_list_token(token: str, field: str = "page_token") -> ListCursor | None:
    if not token:
        return None
    try:
        kind, created, job_id = base64.urlsafe_b64decode(token.encode("ascii")).decode("ascii").split(":", 2)
        if kind != "j":
            raise ValueError(kind)
        return ListCursor(int(created), job_id)
    except (ValueError, UnicodeError, binascii.Error):
        raise InvalidArgument.for_field(
            field, "is not a token this server issued", reason="INVALID_PAGE_TOKEN"
        ) from None
