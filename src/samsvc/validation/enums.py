"""Enum values a request carries: a number the contract does not define is refused by name, not
taken for the default (protobuf lets any integer through as an open enum)."""

from __future__ import annotations

from typing import Any

from samsvc.errors import InvalidArgument


def known_value(table: dict[int, Any], value: int, field: str) -> Any:
    """`table[value]`; INVALID_ARGUMENT naming `field` for a value outside it."""
    if value not in table:
        raise InvalidArgument.for_field(field, f"unknown value {value}", reason="INVALID_PARAMETER")
    return table[value]
