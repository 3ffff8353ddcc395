"""Judging a job event cursor (WatchJob's `cursor`) before it reaches the store."""

from __future__ import annotations

import re

from samsvc.errors import InvalidArgument

#: What the stores hand out: "12" (memory) or "1733000000000-0" (a Redis stream id, < 2**64).
_CURSOR = re.compile(r"\d{1,19}(-\d{1,19})?")


def check_cursor(cursor: str, field: str = "cursor") -> str:
    """The cursor if it is empty or has the shape of one this service gave; INVALID_CURSOR else."""
    if cursor and _CURSOR.fullmatch(cursor) is None:
        raise InvalidArgument.for_field(
            field, "is not a cursor from this job's events (digits, or digits-digits)", reason="INVALID_CURSOR"
        )
    return cursor
