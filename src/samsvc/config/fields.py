"""What several sections' fields share: lists given as one comma-separated variable.

Each section's validator calling it needs a name of its own (`_split_<section>_lists`): pydantic
keeps one validator per name across the sections Settings inherits, so a shared name would
leave all but one section's lists unsplit."""

from __future__ import annotations

from typing import Any


def split_commas(value: Any) -> Any:
    """`a, b,,c` -> ["a", "b", "c"]; lists (from code or a flag) pass through."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value
