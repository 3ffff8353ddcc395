"""What several sections' fields share: lists given as one comma-separated variable."""

from __future__ import annotations

from typing import Any


def split_commas(value: Any) -> Any:
    """`a, b,,c` -> ["a", "b", "c"]; lists (from code or a flag) pass through."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value
